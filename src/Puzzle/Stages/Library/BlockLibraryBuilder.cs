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
        var validationIds = BlockTraining.FixedWindows(validation, seqLen, bld.ValidationTokens, device, "block library validation (bld.validation_tokens)");
        var calibrationIds = BlockTraining.FixedWindows(train, seqLen, bld.CalibrationTokens, device, "channel calibration (bld.calibration_tokens)");
        int steps = BlockTraining.Steps(bld.TokensPerVariant, bld, seqLen);
        var settings = BlockTraining.Settings(bld);

        int trained = 0, layersDone = 0;
        var layers = pending.Select(v => v.Layer).Distinct().Order().ToList();
        // Every layer trains on the same batch sequence, so one parent forward per batch serves them all.
        var trainingLayers = pending.Where(v => v.NeedsTraining).Select(v => v.Layer).Distinct().ToList();
        var boundaries = trainingLayers.SelectMany(l => new[] { l, l + 1 }).Distinct().ToList();
        using var cache = BlockTraining.Activations(ActivationCache.LibraryDir(run.Path), bld, parent, train, steps, seqLen, boundaries, fingerprint,
            "bld.tokens_per_variant", "library", log);
        Trace("after the cache");
        using var threads = Runtime.WorkThreads.Enter("library", log);                     // across the layers' training loops
        foreach (int layer in layers)
        {
            var units = pending.Where(v => v.Layer == layer).ToList();
            var parentLayer = parent.Layer(layer);
            Tensor? scores = units.Any(v => v.Ffn is { IsSwiGlu: true } f && f.IntermediateSize != config.Blocks[layer].Ffn.IntermediateSize)
                ? ChannelScores(parent, layer, calibrationIds) : null;
            var (valInputs, valTargets) = BlockTraining.LayerIo(parent, layer, validationIds);

            Trace($"layer {layer}: scores and validation io");
            var workUnits = units.Select(v => new Unit(v, config, parentLayer, scores, device, compute, settings)).ToList();
            Trace($"layer {layer}: units built");
            try
            {
                foreach (var u in workUnits) u.NmseInit = BlockTraining.Nmse(u.Master, parent, layer, valInputs, valTargets);
                Trace($"layer {layer}: nmse init");
                var training = workUnits.Where(u => u.Variant.NeedsTraining).ToList();
                if (training.Count > 0)
                {
                    var tasks = training.ToDictionary(u => u, u => progress.Start($"{u.Variant.Id}", steps));
                    var layerClock = Stopwatch.StartNew();
                    BlockTraining.TrainLayer(parent, cache, train, bld, seqLen, layer, steps, compute, training.Select(u => u.Block).ToList(), (step, losses) =>
                    {
                        Trace($"layer {layer} step {step}");
                        double tokensPerSecond = (step + 1) * (double)bld.Batch * seqLen / layerClock.Elapsed.TotalSeconds;
                        for (int i = 0; i < training.Count; i++)
                        {
                            training[i].LastLoss = losses[i];
                            tasks[training[i]].Report(step + 1, $"nmse {losses[i]:F4} | {tokensPerSecond:N0} tok/s");
                        }
                    });
                    foreach (var task in tasks.Values) task.Dispose();
                }
                foreach (var u in workUnits)
                {
                    u.NmseFinal = u.Variant.NeedsTraining ? BlockTraining.Nmse(u.Master, parent, layer, valInputs, valTargets) : u.NmseInit;
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

    /// <summary>A variant being built: its block (fp32 master, compute-dtype working copy, optimizer) and NMSE.</summary>
    sealed class Unit(SubblockVariant v, ModelConfig config, DecoderLayer parentLayer, Tensor? scores, Device device, ScalarType compute, AdamWSettings settings) : IDisposable
    {
        public SubblockVariant Variant { get; } = v;
        public TrainedBlock Block { get; } = new(dtype => VariantInitializer.BuildBlock(config, parentLayer, v, scores, device, dtype),
            name => v.NeedsTraining && OwnsParameter(v, name), compute, settings)
        { FrozenParentAttention = v.Kind == SubblockKind.Ffn };
        public DecoderLayer Master => Block.Master;
        public double NmseInit, NmseFinal, LastLoss;

        public void Dispose() => Block.Dispose();
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
