using System.Diagnostics;
using Puzzle.Checkpoints;
using Puzzle.Config;
using Puzzle.Data;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

public sealed record LibraryResult(int Variants, int Trained, int Skipped, int Done, double Seconds, IReadOnlyList<VariantRecord> Records);

/// <summary>
/// Stage 3: blockwise local distillation (design.md 5). Every variant is a work unit: initialised from the parent,
/// trained alone to reproduce the parent layer's output from the parent's own input to that layer, with the other
/// sublayer the parent's (frozen), loss MSE(o_child, o_parent) / MSE(0, o_parent), its own AdamW. Variants of one
/// layer train on the same batches; the parent's activations come from a bf16 disk cache built with one parent
/// forward per batch (within a disk budget; or recomputed per batch with bld.activations=recompute).
/// </summary>
public static class BlockLibraryBuilder
{
    public static LibraryResult Run(RunDirectory run, IProgressReporter? progress = null, Action<string>? log = null)
    {
        var shard = run.Shard;
        progress ??= Progress.Current;
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        var bld = run.Config.Bld;
        var device = Runtime.Devices.Parse(bld.Device);
        var compute = Training.Precision.Resolve(bld.Precision, device);
        // The parent's layers only produce activations (the cache, validation targets, channel scores) and the weights
        // the units start from: a bf16-stored parent is held in bf16 when the units compute in bf16 (nothing of its
        // weights is lost, 2 bytes a parameter instead of 4, bf16 matmuls); otherwise in fp32.
        var parentDtype = ParentDtype(HfConfig.Read(run.ParentDir), compute);
        using var parent = Checkpoint.Load(run.ParentDir, device, parentDtype);
        parent.eval();
        foreach (var p in parent.parameters()) p.requires_grad = false;
        var config = parent.Config;
        var variants = run.Variants.All;
        var manifest = DataManifest.Read(run.DataDir);
        int seqLen = manifest.SeqLen;
        string fingerprint = ArtifactKeys.Library(run, manifest, KeyDtype(compute, parentDtype));
        Directory.CreateDirectory(run.Library);

        // Canonical order -> shard ownership; finished units (same fingerprint) are skipped.
        var mine = variants.Where((v, i) => shard.Owns(i)).ToList();
        string legacy = ArtifactKeys.LegacyLibrary(run, manifest, compute.ToString());
        foreach (var v in mine)
            if (BlockLibrary.TryRead(run.Path, v.Id) is { } old && old.Fingerprint == legacy && old.Holds(v))
                IO.AtomicFile.WriteJson(run.LibraryRecord(v.Id), (old with { Fingerprint = fingerprint }).ToJson());   // an older run's record: current
        var pending = mine.Where(v => BlockLibrary.TryRead(run.Path, v.Id) is not { } r || r.Fingerprint != fingerprint || !r.Holds(v)).ToList();
        log($"library: {variants.Count} variants over {config.NumLayers} layers; shard {shard} owns {mine.Count}, {mine.Count - pending.Count} already done, " +
            $"{pending.Count(v => v.NeedsTraining)} to train ({bld.TokensPerVariant:N0} tokens each, {compute} compute, parent held in {parentDtype})");

        using var train = new TokenDataset(run.DataDir, "train");
        using var validation = new TokenDataset(run.DataDir, "validation");
        var validationIds = FixedWindows(validation, seqLen, bld.ValidationTokens, device, "block library validation (bld.validation_tokens)");
        var calibrationIds = FixedWindows(train, seqLen, bld.CalibrationTokens, device, "channel calibration (bld.calibration_tokens)");
        int steps = (int)Math.Max(1, bld.TokensPerVariant / ((long)bld.Batch * seqLen));
        var schedule = new LearningRateSchedule(bld.Lr, Math.Max(1, (int)(steps * bld.WarmupFraction)), steps);
        var settings = new AdamWSettings(bld.Beta1, bld.Beta2, bld.WeightDecay, 1e-8, bld.Clip);

        int trained = 0, layersDone = 0;
        var layers = pending.Select(v => v.Layer).Distinct().Order().ToList();
        // Every layer trains on the same batch sequence, so one parent forward per batch serves them all.
        var trainingLayers = pending.Where(v => v.NeedsTraining).Select(v => v.Layer).Distinct().ToList();
        var boundaries = trainingLayers.SelectMany(l => new[] { l, l + 1 }).Distinct().ToList();
        long cacheBytes = ActivationCache.Bytes(steps, bld.Batch, seqLen, config.HiddenSize, boundaries.Count);
        var disk = ActivationCache.DiskRoom(run.Library, bld.DiskBudgetGib);
        bool fits = trainingLayers.Count == 0 || ActivationCache.Reusable(run.Path, fingerprint, steps, boundaries) || cacheBytes <= disk.Bytes;
        bool useCache = bld.Activations switch
        {
            "cache" when !fits => throw new PuzzleException(
                $"bld: the parent's activations need {Gib(cacheBytes)} GiB of disk ({steps} steps × batch {bld.Batch} × {seqLen} tokens × hidden {config.HiddenSize} × " +
                $"{boundaries.Count} layer boundaries × 2 bytes) but {disk.What} allows {Gib(disk.Bytes)} GiB; free disk, raise bld.disk_budget_gib, " +
                "lower bld.tokens_per_variant, split the layers with --shard, or set bld.activations=recompute (about L/2 times the parent compute)"),
            "cache" => true,
            "recompute" => false,
            "auto" => fits,
            _ => throw new PuzzleException($"bld.activations '{bld.Activations}' is not cache, recompute or auto"),
        };
        using var cache = useCache && trainingLayers.Count > 0
            ? ActivationCache.Build(run.Path, parent, new TokenBatchLoader(train, seqLen, bld.Seed), steps, bld.Batch, seqLen, boundaries, fingerprint, log)
            : null;
        Trace("after the cache");
        if (!useCache && trainingLayers.Count > 0)
            log($"library: recomputing the parent's activations per batch (a cache would need {Gib(cacheBytes)} GiB, {disk.What} allows {Gib(disk.Bytes)} GiB)");
        foreach (int layer in layers)
        {
            var units = pending.Where(v => v.Layer == layer).ToList();
            var parentLayer = parent.Layer(layer);
            Tensor? scores = units.Any(v => v.Ffn is { IsSwiGlu: true } f && f.IntermediateSize != config.Blocks[layer].Ffn.IntermediateSize)
                ? ChannelScores(parent, layer, calibrationIds) : null;
            var (valInputs, valTargets) = LayerIo(parent, layer, validationIds);

            Trace($"layer {layer}: scores and validation io");
            var workUnits = units.Select(v => new Unit(v, config, parentLayer, scores, device, compute, settings)).ToList();
            Trace($"layer {layer}: units built");
            try
            {
                foreach (var u in workUnits) u.NmseInit = Nmse(u.Master, parent, layer, valInputs, valTargets);
                Trace($"layer {layer}: nmse init");
                var training = workUnits.Where(u => u.Variant.NeedsTraining).ToList();
                if (training.Count > 0)
                {
                    var loader = new TokenBatchLoader(train, seqLen, bld.Seed);
                    var tasks = training.ToDictionary(u => u, u => progress.Start($"{u.Variant.Id}", steps));
                    var layerClock = Stopwatch.StartNew();
                    var inputs = parent.PrefillInputs(seqLen, layer, compute);
                    for (int step = 0; step < steps; step++)
                    {
                        using var scope = NewDisposeScope();
                        Tensor input, target;
                        if (cache is not null)
                        {
                            input = cache.Read(layer, step).to(device);
                            target = cache.Read(layer + 1, step).to(device).to(ScalarType.Float32);
                        }
                        else
                        {
                            var ids = tensor(loader.Next(bld.Batch), [bld.Batch, seqLen + 1], device: device).narrow(1, 0, seqLen);
                            using (no_grad())
                            {
                                input = parent.LayerInput(ids, layer);
                                target = parentLayer.Forward(input, parent.PrefillInputs(seqLen, layer, parent.DType)).to(ScalarType.Float32);
                            }
                        }
                        var inputCompute = input.to(compute);
                        double denominator = target.pow(2).mean().item<float>();
                        double lr = schedule.At(step);
                        foreach (var u in training)
                        {
                            using var unitScope = NewDisposeScope();
                            var output = u.Work.Forward(inputCompute, inputs).to(ScalarType.Float32);
                            var loss = (output - target).pow(2).mean() / denominator;
                            loss.backward();
                            u.LastLoss = loss.item<float>();
                            u.Optimizer!.Step(lr);
                            Trace($"layer {layer} step {step}: {u.Variant.Id}");
                        }
                        double tokensPerSecond = (step + 1) * (double)bld.Batch * seqLen / layerClock.Elapsed.TotalSeconds;
                        foreach (var u in training) tasks[u].Report(step + 1, $"nmse {u.LastLoss:F4} | {tokensPerSecond:N0} tok/s");
                    }
                    foreach (var task in tasks.Values) task.Dispose();
                }
                foreach (var u in workUnits)
                {
                    u.NmseFinal = u.Variant.NeedsTraining ? Nmse(u.Master, parent, layer, valInputs, valTargets) : u.NmseInit;
                    Save(run, u, fingerprint, u.Variant.NeedsTraining ? steps : 0, (long)steps * bld.Batch * seqLen, clock);
                    if (u.Variant.NeedsTraining) trained++;
                }
            }
            finally
            {
                foreach (var u in workUnits) u.Dispose();
                scores?.Dispose();
                valInputs.Dispose();
                valTargets.Dispose();
            }
            Trace($"layer {layer}: done");
            layersDone++;
            double eta = clock.Elapsed.TotalSeconds / layersDone * (layers.Count - layersDone);
            log($"library: layer {layer} done ({layersDone}/{layers.Count} layers), {clock.Elapsed.TotalSeconds:F0} s elapsed, ETA {TimeSpan.FromSeconds(eta):mm\\:ss}");
        }
        var index = BlockLibrary.WriteIndex(run.Path, variants, fingerprint);
        var records = index.Variants;
        log($"library: {records.Count}/{variants.Count} variants in {run.Library} ({trained} trained now, {mine.Count - pending.Count} reused) in {clock.Elapsed.TotalSeconds:F1} s");
        return new LibraryResult(variants.Count, trained, mine.Count - pending.Count, records.Count, clock.Elapsed.TotalSeconds, records);
    }

    /// <summary>The dtype BLD holds the parent in: bf16 where it is stored in bf16 and the units compute in bf16, else fp32.</summary>
    public static ScalarType ParentDtype(ModelConfig parent, ScalarType compute) =>
        compute == ScalarType.BFloat16 && parent.TorchDtype is "bfloat16" or "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>The dtype part of the library key: the compute dtype, and the parent's where it is not fp32 (fp32 keeps older keys).</summary>
    public static string KeyDtype(ScalarType compute, ScalarType parentDtype) =>
        parentDtype == ScalarType.Float32 ? compute.ToString() : $"{compute}|parent {parentDtype}";

    /// <summary>PUZZLE_TRACE_HEAP=1: the process's resident set and the C heap at a point of the stage (a diagnosis aid).</summary>
    static void Trace(string where)
    {
        if (Runtime.NativeHeap.Tracing) Log.Info($"library: heap {where}: {Runtime.NativeHeap.Describe()}");
    }

    static string Gib(long bytes) => (bytes / (double)(1L << 30)).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A variant being built: fp32 master block, compute-dtype working copy, optimizer.</summary>
    sealed class Unit : IDisposable
    {
        public SubblockVariant Variant { get; }
        public DecoderLayer Master { get; }
        public DecoderLayer Work { get; }
        public MixedPrecisionOptimizer? Optimizer { get; }
        public double NmseInit, NmseFinal, LastLoss;

        public Unit(SubblockVariant v, ModelConfig config, DecoderLayer parentLayer, Tensor? scores, Device device, ScalarType compute, AdamWSettings settings)
        {
            Variant = v;
            Master = VariantInitializer.BuildBlock(config, parentLayer, v, scores, device, ScalarType.Float32);
            Work = compute == ScalarType.Float32 ? Master : VariantInitializer.BuildBlock(config, parentLayer, v, scores, device, compute);
            foreach (var block in new[] { Master, Work })
                foreach (var (name, p) in block.named_parameters())
                    p.requires_grad = v.NeedsTraining && OwnsParameter(v, name);
            if (v.NeedsTraining) Optimizer = new MixedPrecisionOptimizer(Master, Work == Master ? null : Work, settings);
            Master.eval();
            Work.train();
        }

        public void Dispose()
        {
            Optimizer?.Dispose();
            if (Work != Master) Work.Dispose();
            Master.Dispose();
        }
    }

    /// <summary>Whether a block parameter belongs to the variant's sublayer (attention: input norm + self_attn).</summary>
    public static bool OwnsParameter(SubblockVariant v, string name) => v.Kind == SubblockKind.Attention
        ? name.StartsWith("input_layernorm.", StringComparison.Ordinal) || name.StartsWith("self_attn.", StringComparison.Ordinal)
        : name.StartsWith("post_attention_layernorm.", StringComparison.Ordinal) || name.StartsWith("mlp.", StringComparison.Ordinal);

    static void Save(RunDirectory run, Unit u, string fingerprint, int steps, long tokens, Stopwatch clock)
    {
        var v = u.Variant;
        string? file = null;
        long parameters = u.Master.named_parameters().Where(p => OwnsParameter(v, p.name)).Sum(p => p.parameter.NumberOfElements);
        if (v.NeedsTraining)
        {
            file = Path.GetFileName(BlockLibrary.WeightsPath(run.Path, v.Id));
            var tensors = u.Master.named_parameters().Where(p => OwnsParameter(v, p.name)).Select(p => (p.name, (Tensor)p.parameter)).ToList();
            SafeTensorsWriter.Write(BlockLibrary.WeightsPath(run.Path, v.Id), tensors, new Dictionary<string, string> { ["variant"] = v.Id });
        }
        var record = new VariantRecord(v.Id, v.Layer, v.Kind, v.Attention, v.Ffn, v.IsParent, v.NeedsTraining, file, parameters,
            steps, v.NeedsTraining ? tokens : 0, u.NmseInit, u.NmseFinal, clock.Elapsed.TotalSeconds, fingerprint);
        IO.AtomicFile.WriteJson(BlockLibrary.RecordPath(run.Path, v.Id), record.ToJson());
    }

    /// <summary>The first windows of a split, in order: [N, T]; an error naming the split when it is too small.</summary>
    static Tensor FixedWindows(TokenDataset data, int seqLen, long tokens, Device device, string purpose)
    {
        var loader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        int rows = data.Manifest.RequireWindows(data.Split, tokens, purpose);
        return tensor(loader.Next(rows), [rows, seqLen + 1], device: device).narrow(1, 0, seqLen);
    }

    /// <summary>Parent inputs to and outputs of one layer on fixed windows, in chunks: ([N, T, H], [N, T, H]).</summary>
    static (Tensor Inputs, Tensor Targets) LayerIo(CausalLm parent, int layer, Tensor ids)
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

    /// <summary>Channel contributions of layer <paramref name="layer"/>'s FFN on the calibration windows.</summary>
    static Tensor ChannelScores(CausalLm parent, int layer, Tensor ids)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var parentLayer = parent.Layer(layer);
        var ffn = parentLayer.Mlp as SwiGluFfn ?? throw new PuzzleException($"layer {layer}: narrowing needs a SwiGLU parent FFN");
        var attention = parent.PrefillInputs(ids.shape[1], layer, parent.DType);
        Tensor? sum = null;
        for (long start = 0; start < ids.shape[0]; start += 16)
        {
            var chunk = ids.narrow(0, start, Math.Min(16, ids.shape[0] - start));
            var afterAttention = parentLayer.ForwardAttention(parent.LayerInput(chunk, layer), attention);
            var normalised = parentLayer.PostAttentionLayernorm!.call(afterAttention);
            var c = VariantInitializer.ChannelContribution(ffn, normalised) * chunk.shape[0];
            sum = sum is null ? c : sum + c;
        }
        return (sum! / ids.shape[0]).MoveToOuterDisposeScope();
    }
}
