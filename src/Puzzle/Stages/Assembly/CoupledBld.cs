using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Library;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Stages.Assembly;

/// <summary>What coupled BLD did to one layer of the child: its NMSE against the parent layer on the bld validation windows before and after.</summary>
public sealed record CoupledLayerRecord(int Layer, string Attention, string Ffn, long Parameters, int Steps, long Tokens,
    double NmseBefore, double NmseAfter, double Seconds, string Fingerprint)
{
    public const int FormatVersion = 1;

    public JsonObject ToJson() => new()
    {
        ["format_version"] = FormatVersion, ["layer"] = Layer, ["attention"] = Attention, ["ffn"] = Ffn, ["parameters"] = Parameters,
        ["steps"] = Steps, ["tokens"] = Tokens, ["nmse_before"] = NmseBefore, ["nmse_after"] = NmseAfter, ["seconds"] = Seconds,
        ["fingerprint"] = Fingerprint,
    };

    /// <summary>The record at <paramref name="path"/>; null where it is missing or torn (the layer is trained again).</summary>
    public static CoupledLayerRecord? TryRead(string path) =>
        JsonFile.ReadDerived(path, j => j["format_version"].Int() == FormatVersion && j["layer"].Int() >= 0) is { } j
            ? new CoupledLayerRecord(j["layer"].Int(), j["attention"].String(), j["ffn"].String(), j["parameters"].Long(), j["steps"].Int(),
                j["tokens"].Long(), j["nmse_before"].Double(), j["nmse_after"].Double(), j["seconds"].Double(), j["fingerprint"].String())
            : null;
}

/// <summary>The coupled blocks of a child: each trained layer's weights file and record.</summary>
public sealed record CoupledResult(IReadOnlyDictionary<int, string> Weights, IReadOnlyList<CoupledLayerRecord> Records, int Trained, double Seconds);

/// <summary>
/// Coupled BLD (Puzzle, section 4.3): after the search, every layer of the child that differs from the parent's is
/// trained as ONE block (the chosen attention and FFN variants together, initialised from the library's decoupled
/// weights, or the parent's own sublayer where one is kept) to reproduce the parent layer's output from the parent's
/// own input to that layer, with the bld settings (lr, betas, weight decay, warm-up and cosine, clip, batch,
/// precision) for assembly.coupled_bld_tokens tokens. Layers are independent work units: each is saved on its own
/// (RUN/coupled-bld/L{i}.safetensors + L{i}.json, keyed by its variants' library records and the settings), so an
/// interrupted run resumes layer by layer and a rerun trains nothing. The parent's activations are the library's cache
/// where it holds these batches, else a cache of its own (deleted when every layer is done) or recomputed.
/// </summary>
public static class CoupledBld
{
    public const string Folder = "coupled-bld";

    /// <summary>Whether coupled BLD trains a layer: it differs from the parent's and has something to train.</summary>
    public static bool Trains(SubblockVariant attention, SubblockVariant ffn) =>
        !(attention.IsParent && ffn.IsParent) && !(attention.IsNoOp && ffn.IsNoOp);

    public static string WeightsPath(RunDirectory run, int layer) => run.Artifact(Folder, $"L{layer}.safetensors");
    public static string RecordPath(RunDirectory run, int layer) => run.Artifact(Folder, $"L{layer}.json");

    /// <summary>The compute dtype of bld.precision on bld.device, as the library keys it.</summary>
    static (Device Device, ScalarType Compute, ScalarType ParentDtype) Dtypes(RunDirectory run)
    {
        var device = Runtime.Devices.Parse(run.Config.Bld.Device);
        var compute = Precision.Resolve(run.Config.Bld.Precision, device);
        return (device, compute, BlockLibraryBuilder.ParentDtype(HfConfig.Read(run.ParentDir), compute));
    }

    static string LibraryFingerprint(RunDirectory run) => LibraryIndex.Read(run.LibraryIndex)?.Fingerprint
        ?? throw new PuzzleException($"{run.LibraryIndex}: not found (the library was never finished); run `puzzle library --run {run.Path}` (every shard)");

    /// <summary>
    /// What a layer's coupled block depends on: the library (its fingerprint covers the parent, the data and the bld
    /// settings), the records of the layer's two variants, the tokens and the compute dtype.
    /// </summary>
    static string LayerKey(RunDirectory run, string libraryFingerprint, int layer, SubblockVariant attention, SubblockVariant ffn, string dtypes) =>
        Fingerprint.Of("coupled-bld-v1", libraryFingerprint, AssemblyStage.LibraryKey(run, [attention.Id, ffn.Id]), layer, attention.Id, ffn.Id,
            run.Config.Assembly.CoupledBldTokens, dtypes);

    /// <summary>The key of the whole child's assembly with coupled BLD: the library key of its variants and the coupled settings.</summary>
    public static string ChildKey(RunDirectory run, string libraryKey)
    {
        var (_, compute, parentDtype) = Dtypes(run);
        return Fingerprint.Of("coupled-bld-v1", libraryKey, LibraryFingerprint(run), run.Config.Assembly.CoupledBldTokens,
            BlockLibraryBuilder.KeyDtype(compute, parentDtype));
    }

    /// <summary>Trains (or reuses) the coupled block of every layer of <paramref name="choices"/> that <see cref="Trains"/>.</summary>
    public static CoupledResult Run(RunDirectory run, IReadOnlyList<(SubblockVariant Attention, SubblockVariant Ffn)> choices, Action<string>? log = null)
    {
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        var bld = run.Config.Bld;
        long tokens = run.Config.Assembly.CoupledBldTokens;
        if (tokens <= 0) throw new PuzzleException($"assembly.coupled_bld_tokens is {tokens}: coupled BLD is off");
        LibraryBlocks.Records(run, choices.SelectMany(c => new[] { c.Attention, c.Ffn }).Distinct());   // a whole library of this training
        string libraryFingerprint = LibraryFingerprint(run);
        var (device, compute, parentDtype) = Dtypes(run);
        string dtypes = BlockLibraryBuilder.KeyDtype(compute, parentDtype);
        var manifest = DataManifest.Read(run.DataDir);
        int seqLen = manifest.SeqLen;
        int steps = BlockTraining.Steps(tokens, bld, seqLen);
        Directory.CreateDirectory(run.Artifact(Folder));

        var layers = Enumerable.Range(0, choices.Count).Where(l => Trains(choices[l].Attention, choices[l].Ffn)).ToList();
        var keys = layers.ToDictionary(l => l, l => LayerKey(run, libraryFingerprint, l, choices[l].Attention, choices[l].Ffn, dtypes));
        var records = new Dictionary<int, CoupledLayerRecord>();
        foreach (int l in layers)
            if (CoupledLayerRecord.TryRead(RecordPath(run, l)) is { } r && r.Fingerprint == keys[l] && File.Exists(WeightsPath(run, l)))
                records[l] = r;
        var pending = layers.Where(l => !records.ContainsKey(l)).ToList();
        log($"assemble: coupled BLD of {layers.Count} of {choices.Count} layers (the others are the parent's or no-op/no-op), {records.Count} already done, " +
            $"{pending.Count} to train ({tokens:N0} tokens each = {steps} steps of batch {bld.Batch} × {seqLen}, {compute} compute)");
        if (pending.Count > 0) Train(run, choices, pending, keys, steps, seqLen, device, compute, parentDtype, libraryFingerprint, records, log);
        var ordered = layers.Select(l => records[l]).ToList();
        foreach (var r in ordered)
            log($"assemble: coupled BLD layer {r.Layer} ({r.Attention} + {r.Ffn}): validation NMSE {r.NmseBefore:G4} -> {r.NmseAfter:G4}");
        return new CoupledResult(layers.ToDictionary(l => l, l => WeightsPath(run, l)), ordered, pending.Count, clock.Elapsed.TotalSeconds);
    }

    static void Train(RunDirectory run, IReadOnlyList<(SubblockVariant Attention, SubblockVariant Ffn)> choices, List<int> pending,
        Dictionary<int, string> keys, int steps, int seqLen, Device device, ScalarType compute, ScalarType parentDtype, string libraryFingerprint,
        Dictionary<int, CoupledLayerRecord> records, Action<string> log)
    {
        var bld = run.Config.Bld;
        using var parent = Checkpoint.Load(run.ParentDir, device, parentDtype);
        parent.eval();
        foreach (var p in parent.parameters()) p.requires_grad = false;
        using var train = new TokenDataset(run.DataDir, "train");
        using var validation = new TokenDataset(run.DataDir, "validation");
        using var validationIds = BlockTraining.FixedWindows(validation, seqLen, bld.ValidationTokens, device, "block library validation (bld.validation_tokens)");
        var settings = BlockTraining.Settings(bld);

        // The parent's activations: the library's cache where it holds these batches (same fingerprint and steps), else our own.
        var boundaries = pending.SelectMany(l => new[] { l, l + 1 }).Distinct().Order().ToList();
        string libraryCache = ActivationCache.LibraryDir(run.Path), ownCache = run.Artifact(Folder, "activations");
        string cacheDir = ActivationCache.Reusable(libraryCache, libraryFingerprint, steps, boundaries) ? libraryCache : ownCache;
        using (var cache = BlockTraining.Activations(cacheDir, bld, parent, train, steps, seqLen, boundaries, libraryFingerprint,
                   "assembly.coupled_bld_tokens", "assemble", log))
        {
            using var threads = Runtime.WorkThreads.Enter("assemble: coupled BLD", log);   // across the layers' training loops
            foreach (int layer in pending)
            {
                var clock = Stopwatch.StartNew();
                var (attention, ffn) = choices[layer];
                var (valInputs, valTargets) = BlockTraining.LayerIo(parent, layer, validationIds);
                using var block = new TrainedBlock(dtype => LibraryBlocks.Compose(parent, run.Path, layer, attention, ffn, device, dtype), _ => true, compute, settings);
                try
                {
                    double before = BlockTraining.Nmse(block.Master, parent, layer, valInputs, valTargets);
                    double loss = before;
                    BlockTraining.TrainLayer(parent, cache, train, bld, seqLen, layer, steps, compute, [block], (_, losses) => loss = losses[0]);
                    double trainSeconds = clock.Elapsed.TotalSeconds;
                    double after = BlockTraining.Nmse(block.Master, parent, layer, valInputs, valTargets);
                    var tensors = block.Master.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList();
                    SafeTensorsWriter.Write(WeightsPath(run, layer), tensors, new Dictionary<string, string> { ["layer"] = $"{layer}", ["attention"] = attention.Id, ["ffn"] = ffn.Id });
                    long trainedTokens = (long)steps * bld.Batch * seqLen;
                    var record = new CoupledLayerRecord(layer, attention.Id, ffn.Id, tensors.Sum(t => t.Item2.NumberOfElements), steps, trainedTokens,
                        before, after, clock.Elapsed.TotalSeconds, keys[layer]);
                    AtomicFile.WriteJson(RecordPath(run, layer), record.ToJson());                 // the record last: it marks the layer done
                    records[layer] = record;
                    log($"assemble: coupled BLD layer {layer} ({attention.Id} + {ffn.Id}, {record.Parameters:N0} parameters): {steps} steps, " +
                        $"{trainedTokens / trainSeconds:N0} tok/s, last batch NMSE {loss:G4}; validation NMSE {before:G4} -> {after:G4} ({clock.Elapsed.TotalSeconds:F1} s)");
                }
                finally
                {
                    valInputs.Dispose();
                    valTargets.Dispose();
                }
            }
        }
        if (Directory.Exists(ownCache)) Directory.Delete(ownCache, recursive: true);         // every layer is done: its batches are not needed again
    }

    /// <summary>The per-layer table the child carries (RUN/child/puzzle_coupled_bld.json).</summary>
    public static JsonObject Summary(RunDirectory run, CoupledResult result, string key) => new()
    {
        ["format_version"] = 1, ["key"] = key, ["tokens_per_layer"] = run.Config.Assembly.CoupledBldTokens,
        ["trained_now"] = result.Trained, ["seconds"] = result.Seconds,
        ["layers"] = new JsonArray(result.Records.Select(r => (JsonNode)r.ToJson()).ToArray()),
    };
}
