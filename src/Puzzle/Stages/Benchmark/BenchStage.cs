using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Costs;
using static TorchSharp.torch;

namespace Puzzle.Stages.Benchmark;

public sealed record BenchOptions
{
    public required IReadOnlyList<string> Models { get; init; }
    public int Batch { get; init; } = Config.RunConfig.Defaults.Scenario.Batch;
    public int PromptLength { get; init; } = Config.RunConfig.Defaults.Scenario.PromptLength;
    public int GenerationLength { get; init; } = Config.RunConfig.Defaults.Scenario.GenerationLength;
    public int Repeats { get; init; } = Config.RunConfig.Defaults.Evaluation.BenchRepeats;
    public int Warmup { get; init; } = 1;
    public string Dtype { get; init; } = Config.RunConfig.Defaults.Scenario.MeasureDtype;
    public string Device { get; init; } = Config.RunConfig.Defaults.Scenario.Device;
    public long Seed { get; init; }
    /// <summary>
    /// <see cref="BenchEngine.Puzzle"/> (this engine), <see cref="BenchEngine.LlamaCpp"/> (llama.cpp only) or
    /// <see cref="BenchEngine.Both"/> (ours, with llama.cpp's figures and ratios beside: same scenario and rounds).
    /// </summary>
    public string Engine { get; init; } = BenchEngine.Puzzle;
    /// <summary>Where llama.cpp's GGUF exports are kept and reused, one per model and dtype; null: a temporary folder, deleted after.</summary>
    public string? GgufDir { get; init; }
    /// <summary>llama.cpp's threads; null: ours (TorchSharp's intra-op threads).</summary>
    public int? LlamaCppThreads { get; init; }

    /// <summary>The engine arguments of `puzzle bench` that reproduce these options in another process.</summary>
    public IEnumerable<string> EngineArguments() =>
        ["--engine", Engine, .. GgufDir is null ? Array.Empty<string>() : ["--gguf-dir", GgufDir],
         .. LlamaCppThreads is { } t ? ["--threads", $"{t}"] : Array.Empty<string>()];
}

/// <summary>
/// Side-by-side generation benchmark: every model in this process, the same engine, prompts and scenario, runs in
/// ABBA order (the order reverses every round, so no model always runs second; <see cref="EngineTimer"/>) after
/// warm-up; medians of prefill and
/// decode tokens/s, end-to-end throughput (batch × generated / request time, the engine's prefill + decode steps as
/// in <see cref="ScenarioCost"/>) and time to first token, ratios to the first model, and the spread of the ratio
/// over rounds (min and max of the per-round ratio). Memory: weights and KV cache of the scenario in the run dtype.
/// </summary>
public static class BenchStage
{
    public static JsonObject Run(BenchOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        BenchEngine.Check(o.Engine, "bench: --engine");
        if (o.Engine == BenchEngine.LlamaCpp) return LlamaCppBench.Run(o, log);
        if (o.Models.Count == 0) throw new PuzzleException("bench: give at least one model");
        if (o.Batch <= 0 || o.PromptLength <= 0 || o.GenerationLength <= 0 || o.Repeats <= 0)
            throw new PuzzleException($"bench: batch ({o.Batch}), prompt length ({o.PromptLength}), generation length ({o.GenerationLength}) and repeats ({o.Repeats}) must be positive");
        var device = Devices.Parse(o.Device);
        var dtype = Checkpoint.ParseDtype(o.Dtype);
        int elementBytes = ScenarioCost.DtypeBytes(o.Dtype, "bench dtype");
        // Weights and KV cache in the dtype the models ran in.
        var scenario = ScenarioCost.Create(o.Batch, o.PromptLength, o.GenerationLength, elementBytes, elementBytes, "bench");
        var bench = Ours(o, device, dtype, elementBytes, scenario, log);
        if (o.Engine == BenchEngine.Both)
        {
            // Our models are disposed by now (and the heap's free pages handed back): llama.cpp's side, with its GGUF
            // exports, runs in what the process holds without them (docs/memory.md, 9 eval + bench).
            NativeHeap.Trim();
            AddLlamaCpp(bench, o, device, log);
        }
        return bench;
    }

    /// <summary>Our engine's side: the models loaded, timed in ABBA rounds, their rows; the models disposed before it returns.</summary>
    static JsonObject Ours(BenchOptions o, Device device, ScalarType dtype, int elementBytes, ScenarioCost scenario, Action<string> log)
    {
        var models = new List<CausalLm>();
        try
        {
            foreach (string dir in o.Models) models.Add(Checkpoint.Load(dir, device, dtype));
            int vocab = models.Min(m => m.Config.VocabSize);
            var random = new Random((int)o.Seed);
            int[][] prompts = Enumerable.Range(0, o.Batch).Select(_ => Enumerable.Range(0, o.PromptLength).Select(_ => random.Next(vocab)).ToArray()).ToArray();
            var options = new GenerationOptions { MaxNewTokens = o.GenerationLength, StopAtEos = false };
            log($"bench: {models.Count} models, batch {o.Batch}, prompt {o.PromptLength}, generation {o.GenerationLength}, {dtype} on {Devices.Describe(device)}; " +
                $"{o.Warmup} warm-up + {o.Repeats} rounds in {EngineTimer.OrderDescription} order");
            var samples = CpuContention.Measure("bench", () => EngineTimer.Interleaved(models, prompts, options, o.Warmup, o.Repeats), out var conditions)
                .Select(list => list.Select(x => new BenchSample(x.PrefillSeconds, x.DecodeSeconds)).ToList()).ToArray();
            long peak = Process.GetCurrentProcess().PeakWorkingSet64;
            var rows = new JsonArray();
            BenchRow? first = null;
            long firstMemory = 0;
            for (int m = 0; m < models.Count; m++)
            {
                var figures = BenchRow.FromSamples(o, samples[m]);
                var c = models[m].Config;
                long weights = c.TotalParameters * elementBytes, kv = (long)scenario.KvCacheBytes(c.KvBytesPerToken(elementBytes));
                var row = new JsonObject { ["model"] = Path.GetFullPath(o.Models[m]), ["parameters"] = c.TotalParameters };
                foreach (var (key, value) in figures.ToJson()) row[key] = value?.DeepClone();
                row["weights_bytes"] = weights;
                row["kv_cache_bytes"] = kv;
                row["memory_bytes"] = weights + kv;
                if (m == 0) firstMemory = weights + kv;
                first ??= figures;
                figures.AddRatios(row, first);
                BenchRow.AddRoundRatios(row, samples[m], samples[0]);
                row["memory_ratio"] = (double)(weights + kv) / firstMemory;
                rows.Add(row);
                log($"bench: {o.Models[m]}: end-to-end {row["end_to_end_tokens_per_s"]!.GetValue<double>():N0} tokens/s " +
                    $"({row["end_to_end_ratio"]!.GetValue<double>():F2}x), prefill {row["prefill_tokens_per_s"]!.GetValue<double>():N0} tokens/s, " +
                    $"decode {row["decode_tokens_per_s"]!.GetValue<double>():N0} tokens/s, TTFT {figures.TimeToFirstTokenMs:F1} ms, memory {(weights + kv) / (1 << 20):F1} MiB");
            }
            var bench = new JsonObject
            {
                ["format_version"] = 1,
                ["scenario"] = new JsonObject
                {
                    ["batch"] = o.Batch, ["prompt_length"] = o.PromptLength, ["generation_length"] = o.GenerationLength,
                    ["dtype"] = o.Dtype, ["device"] = Devices.Describe(device, conditions.Threads), ["repeats"] = o.Repeats, ["warmup"] = o.Warmup, ["order"] = EngineTimer.OrderDescription,
                },
                ["process_peak_working_set_bytes"] = peak,
                // The share of the machine's cores other processes used during the rounds, and of the cores the rounds'
                // threads had: a timing on a busy machine runs on the cores others leave free (Runtime.CpuContention; null off Linux).
                ["other_cpu_share"] = conditions.OthersShare,
                ["other_cpu_share_of_timing_cores"] = conditions.OnTimingCores,
                ["threads"] = conditions.Threads,
                ["models"] = rows,
            };
            return bench;
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>
    /// The same models, scenario and rounds in llama.cpp (GGUF in the bench dtype, threads = ours unless set): its
    /// JSON under <c>llama_cpp</c>, and on each of our rows <c>llama_cpp_end_to_end_ratio</c> (with its rounds' min and
    /// max), the ratio llama.cpp measured, beside ours (<c>end_to_end_ratio</c>).
    /// </summary>
    static void AddLlamaCpp(JsonObject result, BenchOptions o, Device device, Action<string> log)
    {
        if (device.type != TorchSharp.DeviceType.CPU) throw new PuzzleException($"bench: llama.cpp is timed on the CPU here, but the bench device is {o.Device}");
        JsonObject llama;
        try { llama = LlamaCppBench.Run(o, log); }
        catch (PuzzleException e)
        {
            // Ours stands: llama.cpp's side is a second opinion, so a model it cannot run is said, not fatal.
            Log.Warning($"bench: llama.cpp's side left out: {e.Message}");
            result["llama_cpp_error"] = e.Message;
            return;
        }
        var rows = result["models"]!.AsArray();
        var theirs = llama["models"]!.AsArray();
        for (int m = 0; m < rows.Count; m++)
        {
            rows[m]!["llama_cpp_end_to_end_ratio"] = theirs[m]!["end_to_end_ratio"]!.GetValue<double>();
            rows[m]!["llama_cpp_end_to_end_ratio_min"] = theirs[m]!["end_to_end_ratio_min"]!.GetValue<double>();
            rows[m]!["llama_cpp_end_to_end_ratio_max"] = theirs[m]!["end_to_end_ratio_max"]!.GetValue<double>();
        }
        result["llama_cpp"] = llama;
    }

    /// <summary>Model order of a round: forward in even rounds, reversed in odd ones (A B, B A, A B, … = ABBA).</summary>
    public static int[] RoundOrder(int round, int models) =>
        round % 2 == 0 ? [.. Enumerable.Range(0, models)] : [.. Enumerable.Range(0, models).Reverse()];
}
