using TorchSharp;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>SwiGLU FFN of any width: down(silu(gate(x)) * up(x)).</summary>
public sealed class SwiGluFfn : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")] readonly Projection _gateProj;
    [ComponentName(Name = "up_proj")] readonly Projection _upProj;
    [ComponentName(Name = "down_proj")] readonly Projection _downProj;

    public SwiGluFfn(int hidden, int intermediate, Device device, ScalarType dtype) : base(nameof(SwiGluFfn))
    {
        _gateProj = new Projection(hidden, intermediate, device, dtype);
        _upProj = new Projection(hidden, intermediate, device, dtype);
        _downProj = new Projection(intermediate, hidden, device, dtype);
        RegisterComponents();
    }

    public Projection GateProj => _gateProj;
    public Projection UpProj => _upProj;
    public Projection DownProj => _downProj;
    Tensor? _fusedGateUp;                                                                   // inference only: [gate; up] rows

    /// <summary>One gate+up matmul instead of two (a copy of the weights; call again after they change).</summary>
    public void Fuse()
    {
        Unfuse();
        using var noGrad = no_grad();
        _fusedGateUp = cat([_gateProj.Weight, _upProj.Weight], 0).detach();
    }

    public void Unfuse()
    {
        _fusedGateUp?.Dispose();
        _fusedGateUp = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Unfuse();
        base.Dispose(disposing);
    }

    public override Tensor forward(Tensor x)                                            // [B, T, H] -> [B, T, H]
    {
        if (_fusedGateUp is not null)
        {
            using var scope = NewDisposeScope();
            long width = _fusedGateUp.shape[0] / 2;
            var gateUp = nn.functional.linear(x, _fusedGateUp);                               // [B, T, 2I]
            var activated = nn.functional.silu(gateUp.narrow(-1, 0, width)).mul_(gateUp.narrow(-1, width, width));
            return _downProj.call(activated).MoveToOuterDisposeScope();
        }
        using var gate = nn.functional.silu(_gateProj.call(x));
        using var up = _upProj.call(x);
        using var product = gate.mul_(up);
        return _downProj.call(product);
    }
}

/// <summary>FFN replaced by one H×H map (HF name linear_mlp).</summary>
public sealed class LinearFfn : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "linear_mlp")] readonly Projection _linear;

    public LinearFfn(int hidden, Device device, ScalarType dtype) : base(nameof(LinearFfn))
    {
        _linear = new Projection(hidden, hidden, device, dtype);
        RegisterComponents();
    }

    public Projection Linear => _linear;

    public override Tensor forward(Tensor x) => _linear.call(x);
}
