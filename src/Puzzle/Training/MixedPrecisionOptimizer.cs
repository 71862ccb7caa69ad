using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Puzzle.Training;

public sealed record AdamWSettings(double Beta1 = 0.9, double Beta2 = 0.95, double WeightDecay = 0.1, double Eps = 1e-8, double ClipNorm = 1.0);

/// <summary>
/// AdamW over fp32 master weights for a module that computes in fp32 or in bf16. With bf16 compute a bf16 working
/// copy of the module runs forward and backward; each step moves its gradients to the fp32 masters, clips, steps,
/// and copies the masters back. Weight decay applies to matrices, not to norms.
/// </summary>
public sealed class MixedPrecisionOptimizer : IDisposable
{
    readonly (string Name, Parameter Work, Parameter Master)[] _parameters;
    readonly AdamW _adamW;
    readonly AdamWSettings _settings;

    public bool Mixed { get; }
    public IReadOnlyList<(string Name, Parameter Master)> Masters => _parameters.Select(p => (p.Name, p.Master)).ToArray();

    /// <param name="master">fp32 module whose parameters the optimizer owns.</param>
    /// <param name="work">the same architecture in the compute dtype (e.g. bf16), or null to compute on the master.</param>
    public MixedPrecisionOptimizer(nn.Module master, nn.Module? work, AdamWSettings settings)
    {
        _settings = settings;
        var named = master.named_parameters().Where(p => p.parameter.requires_grad).ToArray();
        if (named.Any(p => p.parameter.dtype != ScalarType.Float32))
            throw new ArgumentException("master parameters must be float32");
        Mixed = work is not null;
        if (work is not null)
        {
            var byName = work.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            _parameters = named.Select(p => (p.name, byName.TryGetValue(p.name, out var w) ? w
                : throw new ArgumentException($"working copy has no parameter {p.name}"), p.parameter)).ToArray();
            using var noGrad = no_grad();
            foreach (var (_, w, m) in _parameters) w.copy_(m);
        }
        else _parameters = named.Select(p => (p.name, p.parameter, p.parameter)).ToArray();

        var decay = _parameters.Where(p => p.Master.dim() >= 2).Select(p => p.Master).ToArray();
        var noDecay = _parameters.Where(p => p.Master.dim() < 2).Select(p => p.Master).ToArray();
        var groups = new List<AdamW.ParamGroup>();
        if (decay.Length > 0) groups.Add(new AdamW.ParamGroup(decay, 1e-3, settings.Beta1, settings.Beta2, settings.Eps, settings.WeightDecay));
        if (noDecay.Length > 0) groups.Add(new AdamW.ParamGroup(noDecay, 1e-3, settings.Beta1, settings.Beta2, settings.Eps, 0.0));
        _adamW = optim.AdamW(groups, 1e-3, settings.Beta1, settings.Beta2, settings.Eps, settings.WeightDecay);
    }

    /// <summary>Applies the gradients accumulated on the module; returns the gradient norm before clipping.</summary>
    public double Step(double learningRate)
    {
        using var noGrad = no_grad();
        double norm;
        // Each read of .grad makes a new handle: scope them so a long run keeps a flat tensor count.
        using (var scope = NewDisposeScope())
        {
            if (Mixed)
                foreach (var (_, work, master) in _parameters)
                {
                    var workGrad = work.grad;
                    if (workGrad is null) continue;
                    var masterGrad = master.grad;
                    if (masterGrad is null) master.grad = workGrad.to(ScalarType.Float32);
                    else masterGrad.copy_(workGrad);
                    workGrad.Dispose();
                    work.grad = null;                                   // freed as it is moved: the step holds fp32 grads, not both
                }
            norm = nn.utils.clip_grad_norm_(_parameters.Select(p => p.Master), _settings.ClipNorm);
        }
        foreach (var group in _adamW.ParamGroups) group.LearningRate = learningRate;
        _adamW.step();
        using (var scope = NewDisposeScope())
        {
            if (Mixed)
                foreach (var (_, work, master) in _parameters)
                {
                    work.copy_(master);
                    work.grad?.zero_();
                    // The fp32 gradients go too (zero_grad would keep them, 4 bytes per trained parameter through the
                    // next forward and backward, beside the compute-dtype ones: 1.3 GB of a Llama-3.2-1B GKD's peak).
                    master.grad?.Dispose();
                    master.grad = null;
                }
            else _adamW.zero_grad();
        }
        return norm;
    }

    public void ZeroGrad()
    {
        using var scope = NewDisposeScope();
        foreach (var (_, work, master) in _parameters)
        {
            work.grad?.zero_();
            master.grad?.zero_();
        }
    }

    /// <summary>Writes the master weights into <paramref name="target"/>'s parameters of the same names.</summary>
    public void CopyMastersTo(nn.Module target)
    {
        using var noGrad = no_grad();
        var byName = target.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, _, master) in _parameters) byName[name].copy_(master);
    }

    /// <summary>Loads master weights (and the working copies) from tensors by name.</summary>
    public void LoadMasters(Func<string, Tensor> read)
    {
        using var noGrad = no_grad();
        foreach (var (name, work, master) in _parameters)
        {
            using var value = read(name);
            master.copy_(value);
            if (Mixed) work.copy_(master);
        }
    }

    public void SaveState(string path)
    {
        string tmp = path + ".tmp";
        _adamW.save_state_dict(tmp);
        File.Move(tmp, path, overwrite: true);
    }

    public void LoadState(string path) => _adamW.load_state_dict(path);

    public void Dispose() => _adamW.Dispose();
}
