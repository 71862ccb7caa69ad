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

    public override Tensor forward(Tensor x)                                            // [B, T, H] -> [B, T, H]
    {
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
