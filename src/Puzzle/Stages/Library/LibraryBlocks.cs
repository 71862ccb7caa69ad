using Puzzle.Checkpoints;
using Puzzle.Domain;
using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

/// <summary>Builds blocks from library variants: each sublayer from its trained weights, or the parent's own, or nothing.</summary>
public static class LibraryBlocks
{
    /// <summary>
    /// The records of <paramref name="variants"/>, trusted only when the library is whole and of one training:
    /// library.json present and complete, its fingerprint the one the run's BLD settings give now, and every record
    /// trained under that fingerprint. Otherwise an error naming the file, the record and the fingerprints.
    /// </summary>
    public static Dictionary<string, VariantRecord> Records(RunDirectory run, IEnumerable<SubblockVariant> variants)
    {
        string folder = run.Library, indexPath = run.LibraryIndex;
        var records = new Dictionary<string, VariantRecord>();
        var missing = new List<string>();
        foreach (var v in variants)
        {
            if (BlockLibrary.TryRead(run.Path, v.Id) is { } r)
                records[v.Id] = r.Holds(v) ? r : throw new PuzzleException(
                    $"{BlockLibrary.RecordPath(run.Path, v.Id)}: record {v.Id} holds {(object?)r.Attention ?? r.Ffn} but the run's search space makes it {(object?)v.Attention ?? v.Ffn}; rerun `puzzle library --run {run.Path}`");
            else missing.Add(v.Id);
        }
        if (missing.Count > 0)
            throw new PuzzleException(
                $"{folder}: the library lacks {missing.Count} variants ({string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", …" : "")}); run `puzzle library --run {run.Path}` first");
        var index = LibraryIndex.Read(indexPath)
            ?? throw new PuzzleException($"{indexPath}: not found (the library was never finished); run `puzzle library --run {run.Path}` (every shard)");
        if (!index.Complete)
            throw new PuzzleException($"{indexPath}: complete is false ({index.VariantsDone} of {index.VariantsTotal} variants trained under fingerprint {index.Fingerprint}); finish `puzzle library --run {run.Path}` (every shard)");
        if (ExpectedFingerprint(run) is { } expected && expected != index.Fingerprint)
            throw new PuzzleException($"{indexPath}: fingerprint {index.Fingerprint} is not {expected}, the one the run's bld settings, parent and data give now; rerun `puzzle library --run {run.Path}`");
        foreach (var (id, r) in records)
            if (r.Fingerprint != index.Fingerprint)
                throw new PuzzleException($"{BlockLibrary.RecordPath(run.Path, id)}: record {id} has fingerprint {r.Fingerprint} but {indexPath} has {index.Fingerprint} (trained with other bld settings); rerun `puzzle library --run {run.Path}`");
        return records;
    }

    /// <summary>The library fingerprint the run's settings give on this machine; null where bld.device is not available here.</summary>
    static string? ExpectedFingerprint(RunDirectory run)
    {
        Device device;
        try { device = Runtime.Devices.Parse(run.Config.Bld.Device); }
        catch (PuzzleException) { return null; }
        var compute = Training.Precision.Resolve(run.Config.Bld.Precision, device);
        var parentDtype = BlockLibraryBuilder.ParentDtype(Checkpoints.HfConfig.Read(run.ParentDir), compute);
        return ArtifactKeys.Library(run, Data.DataManifest.Read(run.DataDir), BlockLibraryBuilder.KeyDtype(compute, parentDtype));
    }

    public static DecoderLayer Compose(CausalLm parent, string runDir, int layer, SubblockVariant attention, SubblockVariant ffn,
        Device? device = null, ScalarType? dtype = null)
    {
        var block = new DecoderLayer(parent.Config, new BlockConfig(attention.Attention!, ffn.Ffn!), device ?? parent.Device, dtype ?? parent.DType);
        using var noGrad = no_grad();
        var targets = block.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var parentLayer = parent.Layer(layer).named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var variant in new[] { attention, ffn })
        {
            var names = targets.Keys.Where(n => BlockLibraryBuilder.OwnsParameter(variant, n)).ToList();
            if (names.Count == 0) continue;                                                      // no-op
            if (variant.IsParent)
            {
                foreach (string n in names) targets[n].copy_(parentLayer[n]);
                continue;
            }
            string path = BlockLibrary.WeightsPath(runDir, variant.Id);
            using var file = SafeTensorsFile.Open(path);
            foreach (string n in names)
            {
                if (!file.Tensors.TryGetValue(n, out var info))
                    throw new PuzzleException($"{path}: tensor '{n}' is missing");
                if (!info.Shape.SequenceEqual(targets[n].shape))
                    throw new PuzzleException($"{path}: tensor '{n}' has shape [{string.Join(", ", info.Shape)}] but the variant needs [{string.Join(", ", targets[n].shape)}]");
                using var value = file.Read(n);
                Checkpoint.RequireFinite(value, path, n);
                targets[n].copy_(value);
            }
        }
        block.eval();
        return block;
    }
}
