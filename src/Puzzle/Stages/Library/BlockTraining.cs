using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

/// <summary>
/// The pieces of blockwise local distillation shared by the library's decoupled units (<see cref="BlockLibraryBuilder"/>)
/// and the assembly's coupled blocks (<see cref="Assembly.CoupledBld"/>): the bld settings as steps, schedule and AdamW,
/// the parent's activations per batch (cached or recomputed), a block's fixed validation inputs and targets, its NMSE.
/// </summary>
public static class BlockTraining
{
    /// <summary>Optimizer steps of <paramref name="tokens"/> training tokens at bld.batch windows of <paramref name="seqLen"/>.</summary>
    public static int Steps(long tokens, BldSection bld, int seqLen) => (int)Math.Max(1, tokens / ((long)bld.Batch * seqLen));

    /// <summary>bld.lr with bld.warmup_fraction of linear warm-up, then cosine.</summary>
    public static LearningRateSchedule Schedule(BldSection bld, int steps) => new(bld.Lr, Math.Max(1, (int)(steps * bld.WarmupFraction)), steps);

    public static AdamWSettings Settings(BldSection bld) => new(bld.Beta1, bld.Beta2, bld.WeightDecay, 1e-8, bld.Clip);

    /// <summary>
    /// The parent's activations at <paramref name="boundaries"/> for <paramref name="steps"/> batches of the bld seed's
    /// order, per bld.activations: a bf16 disk cache in <paramref name="dir"/> (reused when complete with this
    /// fingerprint, else built), or null where the batches are recomputed (<see cref="Batch"/>).
    /// </summary>
    /// <param name="tokensKey">the setting that sets the steps, for the error when the cache does not fit.</param>
    public static ActivationCache? Activations(string dir, BldSection bld, CausalLm parent, TokenDataset train, int steps, int seqLen,
        IReadOnlyList<int> boundaries, string fingerprint, string tokensKey, string stage, Action<string> log)
    {
        int hidden = parent.Config.HiddenSize;
        long cacheBytes = ActivationCache.Bytes(steps, bld.Batch, seqLen, hidden, boundaries.Count);
        var disk = ActivationCache.DiskRoom(Path.GetDirectoryName(dir)!, bld.DiskBudgetGib);
        bool fits = boundaries.Count == 0 || ActivationCache.Reusable(dir, fingerprint, steps, boundaries) || cacheBytes <= disk.Bytes;
        bool useCache = bld.Activations switch
        {
            "cache" when !fits => throw new PuzzleException(
                $"bld: the parent's activations need {ActivationCache.Size(cacheBytes)} of disk ({steps} steps × batch {bld.Batch} × {seqLen} tokens × hidden {hidden} × " +
                $"{boundaries.Count} layer boundaries × 2 bytes) but {disk.What} allows {ActivationCache.Size(disk.Bytes)}; free disk, raise bld.disk_budget_gib, " +
                $"lower {tokensKey}, split the layers with --shard, or set bld.activations=recompute (about L/2 times the parent compute)"),
            "cache" => true,
            "recompute" => false,
            "auto" => fits,
            _ => throw new PuzzleException($"bld.activations '{bld.Activations}' is not cache, recompute or auto"),
        };
        if (boundaries.Count == 0) return null;
        if (useCache) return ActivationCache.Build(dir, parent, new TokenBatchLoader(train, seqLen, bld.Seed), steps, bld.Batch, seqLen, boundaries, fingerprint, stage, log);
        log($"{stage}: recomputing the parent's activations per batch (a cache would need {ActivationCache.Size(cacheBytes)}, {disk.What} allows {ActivationCache.Size(disk.Bytes)})");
        return null;
    }

    /// <summary>
    /// Batch <paramref name="step"/> of layer <paramref name="layer"/>: the parent's input to it (the parent's dtype or
    /// bf16 from the cache) and its output in fp32, both [B, T, H]; recomputed from <paramref name="loader"/>'s next
    /// windows where there is no cache. Allocated in the caller's dispose scope.
    /// </summary>
    public static (Tensor Input, Tensor Target) Batch(CausalLm parent, ActivationCache? cache, TokenBatchLoader loader, int batch, int seqLen, int layer, int step)
    {
        if (cache is not null)
            return (cache.Read(layer, step).to(parent.Device), cache.Read(layer + 1, step).to(parent.Device).to(ScalarType.Float32));
        var ids = tensor(loader.Next(batch), [batch, seqLen + 1], device: parent.Device).narrow(1, 0, seqLen);
        using (no_grad())
        {
            var input = parent.LayerInput(ids, layer);
            return (input, parent.Layer(layer).Forward(input, parent.PrefillInputs(seqLen, layer, parent.DType)).to(ScalarType.Float32));
        }
    }

    /// <summary>
    /// Trains <paramref name="blocks"/> (the units of one layer: the library's variants, or a coupled block) on the
    /// same <paramref name="steps"/> batches of the bld seed's order: per step the parent's input and output of layer
    /// <paramref name="layer"/> (<see cref="Batch"/>), each block's NMSE step at the schedule's learning rate, then
    /// <paramref name="onStep"/> with the step and each block's loss before it. The RoPE tables and the mask are the
    /// layer's, disposed when it is done; each step's tensors are disposed with its scope.
    /// </summary>
    public static void TrainLayer(CausalLm parent, ActivationCache? cache, TokenDataset train, BldSection bld, int seqLen, int layer, int steps,
        ScalarType compute, IReadOnlyList<TrainedBlock> blocks, Action<int, IReadOnlyList<double>>? onStep = null)
    {
        var schedule = Schedule(bld, steps);
        var loader = new TokenBatchLoader(train, seqLen, bld.Seed);
        var attention = parent.PrefillInputs(seqLen, layer, compute);
        var losses = new double[blocks.Count];
        // The FFN variants of a layer all start from the parent's frozen attention half on the same input: computed
        // once per step (by the first such block's copy: the same weights in the same dtype, so the same tensor).
        var sharesAttention = blocks.FirstOrDefault(b => b.FrozenParentAttention);
        using var threads = Runtime.WorkThreads.Enter($"BLD layer {layer}");            // the stage's, where it holds one
        try
        {
            for (int step = 0; step < steps; step++)
            {
                threads.Step();
                using var scope = NewDisposeScope();
                var (input, target) = Batch(parent, cache, loader, bld.Batch, seqLen, layer, step);
                var inputCompute = input.to(compute);
                double denominator = target.pow(2).mean().item<float>();
                double lr = schedule.At(step);
                Tensor? afterAttention = null;
                if (sharesAttention is not null)
                    using (no_grad()) afterAttention = sharesAttention.Work.ForwardAttention(inputCompute, attention);
                for (int i = 0; i < blocks.Count; i++)
                    losses[i] = blocks[i].FrozenParentAttention
                        ? blocks[i].StepFfn(afterAttention!, target, denominator, lr)
                        : blocks[i].Step(inputCompute, attention, target, denominator, lr);
                onStep?.Invoke(step, losses);
            }
        }
        finally
        {
            attention.Cos.Dispose();
            attention.Sin.Dispose();
            attention.Mask?.Dispose();
        }
    }

    /// <summary>The first windows of a split, in order: [N, T]; an error naming the split when it is too small.</summary>
    public static Tensor FixedWindows(TokenDataset data, int seqLen, long tokens, Device device, string purpose)
    {
        var loader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        int rows = data.Manifest.RequireWindows(data.Split, tokens, purpose);
        return tensor(loader.Next(rows), [rows, seqLen + 1], device: device).narrow(1, 0, seqLen);
    }

    /// <summary>Parent inputs to and outputs of one layer on fixed windows, in chunks: ([N, T, H], [N, T, H]) in fp32.</summary>
    public static (Tensor Inputs, Tensor Targets) LayerIo(CausalLm parent, int layer, Tensor ids)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var inputs = new List<Tensor>();
        var targets = new List<Tensor>();
        var attention = parent.PrefillInputs(ids.shape[1], layer, parent.DType);
        for (long start = 0; start < ids.shape[0]; start += 16)
        {
            var chunk = ids.narrow(0, start, Math.Min(16, ids.shape[0] - start));
            var h = parent.LayerInput(chunk, layer);
            inputs.Add(h.to(ScalarType.Float32));                                               // the units' fp32 masters take fp32
            targets.Add(parent.Layer(layer).Forward(h, attention).to(ScalarType.Float32));
        }
        return (cat(inputs, 0).MoveToOuterDisposeScope(), cat(targets, 0).MoveToOuterDisposeScope());
    }

    /// <summary>MSE(o, o_parent) / MSE(0, o_parent) of a block on the validation inputs.</summary>
    public static double Nmse(DecoderLayer block, CausalLm parent, int layer, Tensor inputs, Tensor targets)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var attention = parent.PrefillInputs(inputs.shape[1], layer, ScalarType.Float32);
        double error = 0, energy = 0;
        for (long start = 0; start < inputs.shape[0]; start += 16)
        {
            long n = Math.Min(16, inputs.shape[0] - start);
            var output = block.Forward(inputs.narrow(0, start, n), attention);
            var target = targets.narrow(0, start, n);
            error += (output - target).pow(2).sum().item<float>();
            energy += target.pow(2).sum().item<float>();
        }
        return error / energy;
    }

}

/// <summary>
/// A block being trained by BLD: an fp32 master, a working copy in the compute dtype (the master itself in fp32) and,
/// where any parameter trains, a <see cref="MixedPrecisionOptimizer"/> over the trained ones.
/// </summary>
public sealed class TrainedBlock : IDisposable
{
    public DecoderLayer Master { get; }
    public DecoderLayer Work { get; }
    public MixedPrecisionOptimizer? Optimizer { get; }

    /// <param name="build">the block in a dtype (called for fp32, and for the compute dtype where it is not fp32).</param>
    /// <param name="trains">whether the parameter of this name trains.</param>
    public TrainedBlock(Func<ScalarType, DecoderLayer> build, Func<string, bool> trains, ScalarType compute, AdamWSettings settings)
    {
        Master = build(ScalarType.Float32);
        Work = compute == ScalarType.Float32 ? Master : build(compute);
        bool any = false;
        foreach (var block in new[] { Master, Work })
            foreach (var (name, p) in block.named_parameters())
                any |= p.requires_grad = trains(name);
        if (any) Optimizer = new MixedPrecisionOptimizer(Master, Work == Master ? null : Work, settings);
        Master.eval();
        Work.train();
    }

    /// <summary>
    /// Whether the block's attention half is the parent layer's, frozen (a library FFN variant): blocks that say so share
    /// one computation of it per step (<see cref="BlockTraining.TrainLayer"/>, <see cref="StepFfn"/>). Only for blocks
    /// whose attention weights are the parent layer's in the compute dtype, the same in every such block of the layer.
    /// </summary>
    public bool FrozenParentAttention { get; init; }

    /// <summary>One step on a batch: NMSE of the working copy's output against <paramref name="target"/>, backward, AdamW at <paramref name="lr"/>.</summary>
    /// <param name="denominator">MSE(0, target) of the batch.</param>
    /// <returns>the batch's loss before the step.</returns>
    public double Step(Tensor input, AttentionInputs attention, Tensor target, double denominator, double lr)
    {
        using var scope = NewDisposeScope();
        return Fit(Work.Forward(input, attention), target, denominator, lr);
    }

    /// <summary><see cref="Step"/> from the attention half's output (the parent's, <see cref="FrozenParentAttention"/>): the FFN half alone.</summary>
    public double StepFfn(Tensor afterAttention, Tensor target, double denominator, double lr)
    {
        using var scope = NewDisposeScope();
        return Fit(Work.ForwardFfn(afterAttention), target, denominator, lr);
    }

    double Fit(Tensor block, Tensor target, double denominator, double lr)
    {
        var output = block.to(ScalarType.Float32);
        var loss = (output - target).pow(2).mean() / denominator;
        loss.backward();
        double value = loss.item<float>();
        Optimizer!.Step(lr);
        return value;
    }

    public void Dispose()
    {
        Optimizer?.Dispose();
        if (Work != Master) Work.Dispose();
        Master.Dispose();
    }
}
