using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Gguf;

namespace Puzzle.Stages.Benchmark;

/// <summary>
/// The same scenario benchmark in llama.cpp: each model exported to GGUF and run by llama.cpp's own
/// llama-batched-bench (installed by scripts/install-llama-cpp.sh), models alternating round by round. Counted as
/// BenchStage counts: prefill of batch × prompt tokens (its first token comes from the prefill logits), then
/// generation − 1 decode steps of the whole batch; end-to-end = batch × generation / (prefill + decode).
/// </summary>
public static class LlamaCppBench
{
    public const string InstallHint = "run scripts/install-llama-cpp.sh (npm, git and g++ needed)";

    /// <summary>A tool of .tools/llama.cpp/bin, from $PUZZLE_LLAMA_CPP_BIN or the first project root above the working directory or the binaries.</summary>
    public static string? FindTool(string name)
    {
        if (Environment.GetEnvironmentVariable("PUZZLE_LLAMA_CPP_BIN") is { Length: > 0 } bin)
            return File.Exists(Path.Combine(bin, name)) ? Path.Combine(bin, name) : null;
        foreach (string start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, ".tools", "llama.cpp", "bin", name);
                if (File.Exists(candidate)) return candidate;
            }
        return null;
    }

    public static string RequireTool(string name) =>
        FindTool(name) ?? throw new PuzzleException($"llama.cpp's {name} is not installed (.tools/llama.cpp/bin); {InstallHint}");

    /// <summary>One llama-batched-bench run: batch sequences, each with its own prompt, llama.cpp defaults otherwise.</summary>
    public static BenchSample Measure(string gguf, int batch, int prompt, int generation, int threads)
    {
        string tool = RequireTool("llama-batched-bench");
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        string[] args =
        [
            "-m", gguf, "-t", $"{threads}", "-tb", $"{threads}", "-c", $"{batch * (prompt + generation) + 16}",
            "-npp", $"{prompt}", "-ntg", $"{generation - 1}", "-npl", $"{batch}", "--output-format", "jsonl",
        ];
        foreach (string a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new PuzzleException($"{tool}: could not start");
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        string line = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith("{\"n_kv_max\"", StringComparison.Ordinal))
            ?? throw new PuzzleException($"{tool} on {gguf} (exit {process.ExitCode}) printed no result: {Tail(stderr.Result)}");
        var json = JsonNode.Parse(line)!;
        return new BenchSample(json["t_pp"]!.GetValue<double>(), json["t_tg"]!.GetValue<double>());
    }

    static string Tail(string text) => text.Length > 600 ? text[^600..] : text;

    /// <summary>
    /// <c>puzzle bench --engine llama.cpp</c>: the models of <paramref name="o"/> exported to GGUF (weights in o.Dtype;
    /// kept in o.GgufDir and reused, else in a temporary folder deleted after), then BenchStage's scenario, rounds in
    /// ABBA order and JSON (ratios to the first model, each round's ratio and their min and max), measured in
    /// llama.cpp with o.LlamaCppThreads threads (else TorchSharp's intra-op threads, as ours run).
    /// </summary>
    public static JsonObject Run(BenchOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        if (o.Models.Count == 0) throw new PuzzleException("bench: give at least one model");
        if (o.Batch <= 0 || o.PromptLength <= 0 || o.GenerationLength <= 1 || o.Repeats <= 0)
            throw new PuzzleException($"bench: batch ({o.Batch}), prompt length ({o.PromptLength}), generation length ({o.GenerationLength} > 1) and repeats ({o.Repeats}) must be positive");
        RequireTool("llama-batched-bench");
        foreach (string dir in o.Models)
            if (Checkpoints.HfConfig.Read(dir).KvBytesPerToken(2) == 0)
                throw new PuzzleException($"bench (llama.cpp): {dir} has no layer with a KV cache (every attention is linear or no-op), " +
                                          "and llama.cpp cannot create a context without one");
        int threads = o.LlamaCppThreads ?? TorchSharp.torch.get_num_threads();
        if (threads <= 0) throw new PuzzleException($"bench: llama.cpp threads must be positive, got {threads}");
        var temp = o.GgufDir is null ? Directory.CreateTempSubdirectory("puzzle-bench-llama-") : null;
        try
        {
            var result = Measure(o, temp?.FullName ?? o.GgufDir!, threads, log);
            if (temp is not null) foreach (var row in result["models"]!.AsArray()) row!.AsObject().Remove("gguf");   // a temporary file
            return result;
        }
        finally
        {
            temp?.Delete(recursive: true);
        }
    }

    /// <summary>
    /// The GGUF of a model in <paramref name="type"/> under <paramref name="dir"/>: named by the model's weights, its
    /// tokenizer files and the type, so a model is exported once and its file reused by every later bench.
    /// </summary>
    public static string ExportOnce(string modelDir, string dir, GgmlType type, Action<string> log)
    {
        var tokenizer = new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json" }.Select(f => Path.Combine(modelDir, f))
            .Select(f => File.Exists(f) ? Puzzle.Data.Hashing.Sha256File(f) : "").ToArray();
        string key = Puzzle.IO.Fingerprint.Of("gguf-v1", Puzzle.IO.Fingerprint.OfModel(modelDir), tokenizer, type.ToString());
        string path = Path.Combine(dir, $"{Path.GetFileName(Path.GetFullPath(modelDir).TrimEnd('/'))}-{key}-{type}.gguf");
        if (File.Exists(path))
        {
            log($"bench (llama.cpp): reusing {path}");
            return path;
        }
        Directory.CreateDirectory(dir);
        GgufExporter.Export(modelDir, path, type, _ => { });                                  // written atomically
        log($"bench (llama.cpp): exported {modelDir} -> {path}");
        return path;
    }

    static JsonObject Measure(BenchOptions o, string ggufDir, int threads, Action<string> log)
    {
        var type = GgufExporter.ParseType(o.Dtype);
        var ggufs = o.Models.Select(dir => ExportOnce(dir, ggufDir, type, log)).ToArray();
        log($"bench (llama.cpp): {o.Models.Count} models, batch {o.Batch}, prompt {o.PromptLength}, generation {o.GenerationLength}, {type} weights, " +
            $"{threads} threads; {o.Warmup} warm-up + {o.Repeats} rounds of llama-batched-bench in ABBA order");
        var samples = ggufs.Select(_ => new List<BenchSample>()).ToArray();
        for (int round = 0; round < o.Warmup + o.Repeats; round++)
            foreach (int m in BenchStage.RoundOrder(round, ggufs.Length))
            {
                var s = Measure(ggufs[m], o.Batch, o.PromptLength, o.GenerationLength, threads);
                if (round >= o.Warmup) samples[m].Add(s);
            }
        var rows = new JsonArray();
        BenchRow? first = null;
        for (int m = 0; m < ggufs.Length; m++)
        {
            var figures = BenchRow.FromSamples(o, samples[m]);
            var row = figures.ToJson();
            row["model"] = Path.GetFullPath(o.Models[m]);
            row["gguf"] = ggufs[m];
            first ??= figures;
            figures.AddRatios(row, first);
            BenchRow.AddRoundRatios(row, samples[m], samples[0]);
            rows.Add(row);
            log($"bench (llama.cpp): {o.Models[m]}: end-to-end {row["end_to_end_tokens_per_s"]!.GetValue<double>():N0} tokens/s " +
                $"({row["end_to_end_ratio"]!.GetValue<double>():F2}x), prefill {row["prefill_tokens_per_s"]!.GetValue<double>():N0} tokens/s, " +
                $"decode {row["decode_tokens_per_s"]!.GetValue<double>():N0} tokens/s");
        }
        return new JsonObject
        {
            ["format_version"] = 1,
            ["engine"] = BenchEngine.LlamaCpp,
            ["scenario"] = new JsonObject
            {
                ["batch"] = o.Batch, ["prompt_length"] = o.PromptLength, ["generation_length"] = o.GenerationLength,
                ["dtype"] = type.ToString(), ["threads"] = threads, ["repeats"] = o.Repeats, ["warmup"] = o.Warmup, ["order"] = "ABBA",
            },
            ["models"] = rows,
        };
    }
}
