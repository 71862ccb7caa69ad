using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Domain;
using Puzzle.Gguf;
using Puzzle.IO;
using Puzzle.Model;

namespace Puzzle.Stages.Report;

/// <summary>
/// Stage 10: the final HF DeciLM directory (design.md 4.2) with a README model card, and/or the same child as one
/// GGUF file for llama.cpp (<c>OUT/model.gguf</c>, unpadded widths).
/// </summary>
public static class ExportStage
{
    public static readonly string[] Formats = ["hf", "gguf"];
    public const string GgufFileName = "model.gguf";

    public static string Run(string childDir, string outDir, string dtype = "bfloat16", string? reportPath = null, bool padFfn = true,
        Action<string>? log = null, IReadOnlyList<string>? formats = null)
    {
        log ??= Log.Info;
        formats ??= ["hf"];
        foreach (string f in formats)
            if (!Formats.Contains(f))
                throw new PuzzleException($"export.formats: '{f}' is not a format (expected {string.Join(" or ", Formats)})");
        if (formats.Count == 0) throw new PuzzleException("export.formats is empty (expected hf, gguf or both)");
        // Held in the export dtype and saved tensor by tensor (q8_0 is GGUF's alone: quantised from float32).
        using var loaded = Checkpoint.Load(childDir, dtype: dtype.Equals("q8_0", StringComparison.OrdinalIgnoreCase) ? TorchSharp.torch.ScalarType.Float32 : Checkpoint.ParseDtype(dtype));
        if (formats.Contains("gguf"))
            GgufExporter.Export(loaded, childDir, Path.Combine(outDir, GgufFileName), GgufExporter.ParseType(dtype),
                Path.GetFileName(Path.GetFullPath(childDir).TrimEnd('/')), log);
        var padded = padFfn && formats.Contains("hf") ? PadFfnToPortableWidths(loaded) : null;
        var child = padded ?? loaded;
        try
        {
            if (formats.Contains("hf")) Checkpoint.SaveDeciLm(child, outDir, Checkpoint.ParseDtype(dtype), childDir);
        }
        finally
        {
            padded?.Dispose();
        }
        if (padded is not null)
            log($"export: FFN widths padded with zero channels to sizes engines rebuild from ffn_mult " +
                $"({string.Join(", ", loaded.Config.Blocks.Zip(child.Config.Blocks).Where(p => p.First.Ffn != p.Second.Ffn).Select(p => $"{p.First.Ffn.IntermediateSize}->{p.Second.Ffn.IntermediateSize}").Distinct())}); the function is unchanged");
        string solutionPath = Path.Combine(childDir, "puzzle_solution.json");
        JsonNode? solution = File.Exists(solutionPath) ? JsonFile.Read(solutionPath).Node : null;
        if (solution is not null) AtomicFile.Copy(solutionPath, Path.Combine(outDir, "puzzle_solution.json"));
        var report = reportPath is not null && File.Exists(reportPath) ? ReportFile.Read(reportPath) : null;
        var c = loaded.Config;
        var card = new StringBuilder();
        card.AppendLine("---");
        card.AppendLine("library_name: transformers");
        card.AppendLine("tags: [puzzle, nas, distillation, nemotron-nas, decilm]");
        card.AppendLine("---");
        card.AppendLine();
        card.AppendLine($"# {Path.GetFileName(Path.GetFullPath(outDir))}");
        card.AppendLine();
        card.AppendLine("A heterogeneous child model made by [Puzzle for .NET](https://arxiv.org/abs/2411.19146) (distillation-based NAS): " +
                        "each layer keeps its own attention variant (KV heads, linear or none) and FFN width.");
        if (report is not null)
        {
            card.AppendLine();
            card.AppendLine($"- Parent: `{report.ParentDir}`");
            var s = report.Scenario;
            card.AppendLine($"- Scenario: batch {s.Batch}, prompt {s.PromptLength}, generation {s.GenerationLength}, weights {s.WeightDtype}, KV {s.KvDtype}");
            card.AppendLine($"- Constraints: {string.Join(", ", report.Constraints.Where(kv => kv.Value is not null).Select(kv => $"{kv.Key} = {kv.Value}"))}");
            card.AppendLine($"- Measured throughput: **{report.MeasuredThroughputRatio:F2}x** the parent (`puzzle bench`, same engine and scenario)");
            var retention = report.AccuracyRetention;
            card.AppendLine($"- Accuracy retention: **{retention.Percent}** {(retention.Defined ? Evaluation.EvalStage.FormatInterval(retention.Ci95, percent: true) : "")} " +
                            $"on held-out test documents (`puzzle eval`; 95% bootstrap interval). {retention.Definition}");
        }
        else if (solution is not null)
        {
            card.AppendLine();
            card.AppendLine($"- Parent throughput estimate: {solution["verified"]!["throughput_ratio"]!.GetValue<double>():F2}x (search estimate; no measured report given)");
        }
        card.AppendLine();
        card.AppendLine($"{c.TotalParameters:N0} parameters, hidden {c.HiddenSize}, {c.NumAttentionHeads} attention heads × {c.HeadDim}, vocabulary {c.VocabSize}, {c.NumLayers} layers:");
        card.AppendLine();
        card.AppendLine("| layer | attention | FFN |");
        card.AppendLine("|---:|---|---|");
        for (int i = 0; i < c.NumLayers; i++)
        {
            var b = c.Blocks[i];
            card.AppendLine($"| {i} | {VariantLabel.Of(b.Attention)} | {VariantLabel.Of(b.Ffn)} |");
        }
        card.AppendLine();
        if (padded is not null)
        {
            card.AppendLine("Engines rebuild FFN widths from `ffn_mult` as multiples of 256, so FFNs narrower than that are stored padded with " +
                            "zero channels (exactly the same function; `intermediate_size` in `block_configs` gives the padded width). " +
                            "The measured speed above uses the unpadded widths.");
            card.AppendLine();
        }
        if (formats.Contains("gguf"))
        {
            card.AppendLine($"`{GgufFileName}` holds the same child for llama.cpp (GGUF, architecture `{(c.IsHomogeneousLlama ? "llama" : "deci")}`, " +
                            "per-layer head counts and FFN widths, tokenizer embedded), e.g. `llama-cli -m " + GgufFileName + "`.");
            card.AppendLine();
        }
        card.AppendLine("## Loading");
        card.AppendLine();
        card.AppendLine("The checkpoint is in the DeciLM format (`model_type: nemotron-nas`, `block_configs` per layer), which vLLM, " +
                        "TensorRT-LLM and SGLang load natively. Hugging Face `transformers` loads it with `trust_remote_code=True` once " +
                        "`configuration_decilm.py` and `modeling_decilm.py` from an NVIDIA Nemotron-NAS repository sit next to the weights.");
        AtomicFile.WriteAllText(Path.Combine(outDir, "README.md"), card.ToString());
        log($"export: {childDir} -> {outDir} ({dtype}, {string.Join(" + ", formats.Select(f => f == "hf" ? "DeciLM" : "GGUF"))}, model card README.md)");
        return outDir;
    }

    /// <summary>
    /// A copy whose SwiGLU widths are padded with zero channels up to what engines rebuild from ffn_mult (multiples of
    /// 256): zero gate/up rows give silu(0)·0 = 0 and zero down columns add nothing. Null when all widths are portable.
    /// </summary>
    public static CausalLm? PadFfnToPortableWidths(CausalLm model)
    {
        var c = model.Config;
        int Portable(int width) => HfConfig.FfnMultToIntermediateSize(HfConfig.IntermediateSizeToFfnMult(width, c.HiddenSize), c.HiddenSize);
        if (c.Blocks.All(b => !b.Ffn.IsSwiGlu || Portable(b.Ffn.IntermediateSize!.Value) == b.Ffn.IntermediateSize)) return null;
        var config = c.WithBlocks(c.Blocks.Select(b => b.Ffn.IsSwiGlu ? b with { Ffn = FfnConfig.SwiGlu(Portable(b.Ffn.IntermediateSize!.Value)) } : b));
        var padded = new CausalLm(config, model.Device, model.DType);
        using var noGrad = TorchSharp.torch.no_grad();
        var source = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, target) in padded.named_parameters())
        {
            var from = source[name];
            target.zero_();
            if (target.shape.SequenceEqual(from.shape)) { target.copy_(from); continue; }
            using var slot = name.EndsWith("down_proj.weight", StringComparison.Ordinal)
                ? target.narrow(1, 0, from.shape[1])
                : target.narrow(0, 0, from.shape[0]);
            slot.copy_(from);
        }
        padded.eval();
        return padded;
    }
}
