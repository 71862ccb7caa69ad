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
/// <remarks>
/// The parameters are stepped in chunks of at most <see cref="DefaultChunkElements"/> elements, one TorchSharp AdamW
/// per chunk: its <c>step()</c> keeps <c>exp_avg_sq.sqrt()</c> and its quotient (8 bytes per element) of every
/// parameter it steps alive until it returns, i.e. 8 bytes per trained parameter for a single AdamW (2.5 GiB of a
/// Llama-3.2-1B-shaped GKD). Stepped chunk by chunk, they never exceed 8 bytes × max(chunk, largest parameter).
/// The update is per parameter, so the chunks step exactly as one AdamW would.
/// </remarks>
public sealed class MixedPrecisionOptimizer : IDisposable
{
    /// <summary>Elements per AdamW chunk: 32 Mi, at most 256 MiB of step temporaries (or the largest parameter's 8 B per element).</summary>
    public const long DefaultChunkElements = 32L << 20;

    readonly (string Name, Parameter Work, Parameter Master)[] _parameters;
    readonly (AdamW AdamW, int From, int To)[] _chunks;
    readonly AdamWSettings _settings;

    public bool Mixed { get; }
    public IReadOnlyList<(string Name, Parameter Master)> Masters => _parameters.Select(p => (p.Name, p.Master)).ToArray();

    /// <summary>How many AdamW instances step the parameters (one per chunk).</summary>
    public int Chunks => _chunks.Length;

    /// <summary>Bytes of TorchSharp AdamW's step temporaries at most: 8 per element of the largest chunk.</summary>
    public static long StepTemporaryBytes(IEnumerable<long> parameterSizes, long chunkElements = DefaultChunkElements) =>
        8 * ChunkBounds(parameterSizes.ToArray(), chunkElements).Max(c => c.Elements);

    /// <param name="master">fp32 module whose parameters the optimizer owns.</param>
    /// <param name="work">the same architecture in the compute dtype (e.g. bf16), or null to compute on the master.</param>
    /// <param name="chunkElements">parameters per AdamW step at most (a larger parameter is a chunk of its own).</param>
    public MixedPrecisionOptimizer(nn.Module master, nn.Module? work, AdamWSettings settings, long chunkElements = DefaultChunkElements)
    {
        if (chunkElements < 1) throw new ArgumentOutOfRangeException(nameof(chunkElements), chunkElements, "must be at least 1");
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

        _chunks = ChunkBounds(_parameters.Select(p => p.Master.numel()).ToArray(), chunkElements)
            .Select(c => (NewAdamW(_parameters[c.From..c.To].Select(p => p.Master).ToArray()), c.From, c.To)).ToArray();
    }

    /// <summary>Consecutive runs of parameters of at most <paramref name="chunkElements"/> elements (one larger parameter alone).</summary>
    static List<(int From, int To, long Elements)> ChunkBounds(long[] sizes, long chunkElements)
    {
        var chunks = new List<(int, int, long)>();
        int from = 0;
        long sum = 0;
        for (int i = 0; i < sizes.Length; i++)
        {
            if (i > from && sum + sizes[i] > chunkElements)
            {
                chunks.Add((from, i, sum));
                from = i;
                sum = 0;
            }
            sum += sizes[i];
        }
        if (sizes.Length > from || chunks.Count == 0) chunks.Add((from, sizes.Length, sum));
        return chunks;
    }

    AdamW NewAdamW(Parameter[] masters)
    {
        var s = _settings;
        var decay = masters.Where(p => p.dim() >= 2).ToArray();
        var noDecay = masters.Where(p => p.dim() < 2).ToArray();
        var groups = new List<AdamW.ParamGroup>();
        if (decay.Length > 0) groups.Add(new AdamW.ParamGroup(decay, 1e-3, s.Beta1, s.Beta2, s.Eps, s.WeightDecay));
        if (noDecay.Length > 0) groups.Add(new AdamW.ParamGroup(noDecay, 1e-3, s.Beta1, s.Beta2, s.Eps, 0.0));
        return optim.AdamW(groups, 1e-3, s.Beta1, s.Beta2, s.Eps, s.WeightDecay);
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
        foreach (var (adamW, from, to) in _chunks)
        {
            foreach (var group in adamW.ParamGroups) group.LearningRate = learningRate;
            adamW.step();                                               // its temporaries are freed when it returns
            using var scope = NewDisposeScope();
            if (Mixed)
                for (int i = from; i < to; i++)
                {
                    var (_, work, master) = _parameters[i];
                    work.copy_(master);
                    work.grad?.zero_();
                    // The fp32 gradients go too (zero_grad would keep them, 4 bytes per trained parameter through the
                    // next forward and backward, beside the compute-dtype ones: 1.3 GB of a Llama-3.2-1B GKD's peak).
                    master.grad?.Dispose();
                    master.grad = null;
                }
            else adamW.zero_grad();
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

    /// <summary>The chunks' AdamW states one after another in one file (one chunk: TorchSharp's own format).</summary>
    public void SaveState(string path)
    {
        string tmp = path + ".tmp";
        using (var stream = File.Create(tmp))
        using (var writer = new BinaryWriter(stream))
            foreach (var (adamW, _, _) in _chunks) adamW.save_state_dict(writer);
        File.Move(tmp, path, overwrite: true);
    }

    public void LoadState(string path)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream);
        try
        {
            foreach (var (adamW, _, _) in _chunks) adamW.load_state_dict(reader);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or EndOfStreamException)
        {
            throw new PuzzleException($"{path}: optimizer state does not match these {_parameters.Length} parameters in {_chunks.Length} AdamW chunks ({e.Message}); delete the checkpoint folder to restart training");
        }
        if (stream.Position != stream.Length)
            throw new PuzzleException($"{path}: optimizer state holds more than these {_parameters.Length} parameters in {_chunks.Length} AdamW chunks ({stream.Length - stream.Position} bytes left); delete the checkpoint folder to restart training");
    }

    public void Dispose()
    {
        foreach (var (adamW, _, _) in _chunks) adamW.Dispose();
    }
}
