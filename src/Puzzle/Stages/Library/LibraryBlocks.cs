using Puzzle.Checkpoints;
using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Library;

/// <summary>Builds blocks from library variants: each sublayer from its trained weights, or the parent's own, or nothing.</summary>
public static class LibraryBlocks
{
    /// <summary>Finished records for the variants, or an error naming what is missing.</summary>
    public static Dictionary<string, VariantRecord> Records(string runDir, IEnumerable<SubblockVariant> variants)
    {
        var records = new Dictionary<string, VariantRecord>();
        var missing = new List<string>();
        foreach (var v in variants)
        {
            if (BlockLibrary.TryRead(runDir, v.Id) is { } r) records[v.Id] = r;
            else missing.Add(v.Id);
        }
        if (missing.Count > 0)
            throw new PuzzleException(
                $"{Path.Combine(runDir, BlockLibrary.Folder)}: the library lacks {missing.Count} variants ({string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", …" : "")}); run `puzzle library --run {runDir}` first");
        return records;
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
