using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Baselines;

/// <summary>
/// ShortGPT's block influence (Men et al., 2024): BI_i = 1 − mean over tokens of cos(x_i, x_{i+1}), the cosine
/// between layer i's input and output hidden states (the residual stream) of the parent on validation windows.
/// A layer that barely turns the hidden state is the first to remove.
/// </summary>
public static class BlockInfluence
{
    public const string FileName = "influence.json";

    /// <summary>Per-layer block influence of <paramref name="parent"/> on token windows [N, T] (float64 accumulation).</summary>
    public static double[] Compute(CausalLm parent, Tensor windows, int batch)
    {
        using var noGrad = no_grad();
        int layers = parent.Config.NumLayers;
        long rows = windows.shape[0], t = windows.shape[1];
        var sums = new double[layers];
        long count = 0;
        for (long start = 0; start < rows; start += batch)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(batch, rows - start);
            var inputs = parent.PrefillInputs(t, 0, parent.DType);
            var h = parent.Model.EmbedTokens.call(windows.narrow(0, start, n));
            for (int i = 0; i < layers; i++)
            {
                var next = parent.Layer(i).Forward(h, inputs with { Layer = i });
                sums[i] += nn.functional.cosine_similarity(h.to(ScalarType.Float64), next.to(ScalarType.Float64), dim: -1).sum().item<double>();
                h = next;
            }
            count += n * t;
        }
        return sums.Select(s => 1 - s / count).ToArray();
    }

    /// <summary>
    /// The parent's block influence on the run's validation windows (scoring.validation_tokens of them, as the scorer
    /// reads), cached in <paramref name="path"/> by parent, data and token count.
    /// </summary>
    public static double[] ForRun(RunDirectory run, string path, Action<string> log)
    {
        var manifest = DataManifest.Read(run.DataDir);
        var s = run.Config.Scoring;
        string key = IO.Fingerprint.Of("influence-v2", IO.Fingerprint.OfModel(run.ParentDir), manifest.TokenizerSha256, run.DataDir, s.ValidationTokens);
        if (File.Exists(path) && JsonNode.Parse(File.ReadAllText(path)) is { } stored && stored["key"]?.GetValue<string>() == key)
            return stored["influence"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        using var parent = Checkpoint.Load(run.ParentDir, Runtime.Devices.Parse(s.Device));
        using var validation = new TokenDataset(run.DataDir, manifest.Splits.TryGetValue("validation", out var vs) && vs.Tokens > manifest.SeqLen * 2 ? "validation" : "train");
        var loader = new TokenBatchLoader(validation, manifest.SeqLen, 0, shuffle: false);
        int rows = (int)Math.Clamp(s.ValidationTokens / manifest.SeqLen, 1, loader.Windows);
        using var windows = tensor(loader.Next(rows), [rows, manifest.SeqLen + 1], device: parent.Device);
        using var ids = windows.narrow(1, 0, manifest.SeqLen);
        var influence = Compute(parent, ids, s.Batch);
        AtomicFile.WriteJson(path, new JsonObject
        {
            ["format_version"] = 1, ["key"] = key, ["split"] = validation.Split, ["tokens"] = (long)rows * manifest.SeqLen,
            ["definition"] = "1 - mean over tokens of cos(input hidden state, output hidden state) of each parent layer (ShortGPT block influence)",
            ["influence"] = new JsonArray(influence.Select(v => (JsonNode)v).ToArray()),
        });
        log($"baselines: block influence of the parent's layers on {(long)rows * manifest.SeqLen:N0} {validation.Split} tokens: " +
            string.Join(", ", influence.Select((v, i) => $"L{i} {v:F4}")));
        return influence;
    }
}
