using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Gguf;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Benchmark;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// Our generation engine against llama.cpp on the same weights (issue 16): an 8-layer / hidden-384 / 6-head / 2-KV /
/// FFN-1024 / vocab-4096 Llama with random weights, saved as HF safetensors and exported to GGUF; for bf16 and f32
/// weights and batch 1, 16 and 64 (prompt 128, generation 128 by default), one warm-up then alternating rounds
/// (ours, llama.cpp, ours, …) of TextGenerator vs llama.cpp's llama-batched-bench (scripts/install-llama-cpp.sh),
/// medians, counted the same way (LlamaCppBench). Run it alone, under the bench lock:
///   flock /tmp/puzzle-bench.lock dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- engine-parity [rounds] [batches] [prompt] [gen] [dtypes=bfloat16,float32]
/// Writes the table to stdout and benchmarks/results/engine-parity.json.
/// </summary>
public static class EngineParity
{
    public static ModelConfig Config => new()
    {
        VocabSize = 4096, HiddenSize = 384, NumAttentionHeads = 6, HeadDim = 64,
        Blocks = Enumerable.Repeat(BlockConfig.Llama(2, 1024), 8).ToArray(),
        MaxPositionEmbeddings = 1024, BosTokenId = 0, EosTokenIds = [1],
    };

    public static void Run(int rounds, int[] batches, int prompt, int generation, string[]? dtypes = null)
    {
        string tool = LlamaCppBench.RequireTool("llama-batched-bench");
        int threads = get_num_threads();
        string dir = Directory.CreateTempSubdirectory("puzzle-engine-parity-").FullName;
        try
        {
            using (var model = new CausalLm(Config, CPU, ScalarType.Float32).InitializeRandom(1))
                Checkpoint.SaveLlama(model, dir);
            Console.WriteLine($"engine parity: {tool}; ours with {threads} torch threads, llama.cpp -t {threads}; prompt {prompt}, generation {generation}, " +
                              $"1 warm-up + {rounds} alternating rounds, medians (tokens/s)");
            Console.WriteLine($"| weights | batch | ours prefill | llama.cpp prefill | ours decode | llama.cpp decode | ours end-to-end | llama.cpp end-to-end | ours / llama.cpp |");
            Console.WriteLine($"|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            var results = new JsonArray();
            foreach (var (dtype, type) in new[] { (ScalarType.BFloat16, GgmlType.BF16), (ScalarType.Float32, GgmlType.F32) })
            {
                if (dtypes is not null && !dtypes.Any(d => GgufExporter.ParseType(d) == type)) continue;
                string gguf = Path.Combine(dir, $"model-{type}.gguf");
                GgufExporter.Export(dir, gguf, type, _ => { });
                using var model = Checkpoint.Load(dir, CPU, dtype);
                foreach (int batch in batches)
                {
                    var o = new BenchOptions { Models = [dir], Batch = batch, PromptLength = prompt, GenerationLength = generation };
                    var random = new Random(batch);
                    int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, prompt).Select(_ => random.Next(Config.VocabSize)).ToArray()).ToArray();
                    var options = new GenerationOptions { MaxNewTokens = generation, StopAtEos = false };
                    var ours = new List<BenchSample>();
                    var llama = new List<BenchSample>();
                    for (int round = 0; round <= rounds; round++)
                    {
                        var result = TextGenerator.Generate(model, prompts, options, []);
                        var theirs = LlamaCppBench.Measure(gguf, batch, prompt, generation, threads);
                        if (round == 0) continue;                                               // warm-up
                        ours.Add(new BenchSample(result.PrefillSeconds, result.DecodeSeconds));
                        llama.Add(theirs);
                    }
                    JsonObject a = BenchRow.FromSamples(o, ours).ToJson(), b = BenchRow.FromSamples(o, llama).ToJson();
                    double V(JsonObject row, string key) => row[key]!.GetValue<double>();
                    double ratio = V(a, "end_to_end_tokens_per_s") / V(b, "end_to_end_tokens_per_s");
                    Console.WriteLine($"| {type} | {batch} | {V(a, "prefill_tokens_per_s"):N0} | {V(b, "prefill_tokens_per_s"):N0} | {V(a, "decode_tokens_per_s"):N0} | " +
                                      $"{V(b, "decode_tokens_per_s"):N0} | {V(a, "end_to_end_tokens_per_s"):N0} | {V(b, "end_to_end_tokens_per_s"):N0} | {ratio:F2}x |");
                    results.Add(new JsonObject { ["weights"] = type.ToString(), ["batch"] = batch, ["ours"] = a, ["llama_cpp"] = b, ["end_to_end_ratio"] = ratio });
                }
            }
            var report = new JsonObject
            {
                ["benchmark"] = "engine-parity", ["model"] = "8 layers, hidden 384, 6 heads, 2 KV heads, FFN 1024, vocab 4096",
                ["prompt_length"] = prompt, ["generation_length"] = generation, ["rounds"] = rounds, ["threads"] = threads,
                ["llama_cpp"] = "node-llama-cpp 3.21.1 prebuilt libllama (llama-batched-bench, defaults: F16 KV cache, flash attention auto)",
                ["results"] = results,
            };
            AtomicFile.WriteJson(Path.Combine("benchmarks", "results", "engine-parity.json"), report);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>A child of <see cref="Config"/> with a Puzzle-like mix of variants (for engine-ratio without a run).</summary>
    public static ModelConfig ChildConfig => Config.WithBlocks(
    [
        BlockConfig.Llama(2, 1024),
        BlockConfig.Llama(1, 512),
        new BlockConfig(AttentionConfig.NoOperation, FfnConfig.SwiGlu(512)),
        new BlockConfig(AttentionConfig.Linear, FfnConfig.SwiGlu(256)),
        new BlockConfig(AttentionConfig.NoOperation, FfnConfig.SwiGlu(768)),
        new BlockConfig(AttentionConfig.Gqa(1), FfnConfig.Linear),
        new BlockConfig(AttentionConfig.NoOperation, FfnConfig.NoOperation),
        BlockConfig.Llama(2, 512),
    ]);

    /// <summary>
    /// Parent vs child throughput ratio in both engines, side by side: per round ours(parent), ours(child),
    /// llama.cpp(parent), llama.cpp(child); medians; the two engines' ratios and their difference.
    ///   flock /tmp/puzzle-bench.lock dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- engine-ratio [PARENT CHILD] [rounds] [batch] [prompt] [gen] [bfloat16|float32]
    /// Without PARENT and CHILD it uses random <see cref="Config"/> and <see cref="ChildConfig"/>.
    /// </summary>
    public static void RunRatio(string? parentDir, string? childDir, int rounds, int batch, int prompt, int generation, string dtypeName)
    {
        LlamaCppBench.RequireTool("llama-batched-bench");
        int threads = get_num_threads();
        string dir = Directory.CreateTempSubdirectory("puzzle-engine-ratio-").FullName;
        try
        {
            if (parentDir is null || childDir is null)
            {
                (parentDir, childDir) = (Path.Combine(dir, "parent"), Path.Combine(dir, "child"));
                using (var parent = new CausalLm(Config, CPU, ScalarType.Float32).InitializeRandom(1)) Checkpoint.SaveLlama(parent, parentDir);
                using (var child = new CausalLm(ChildConfig, CPU, ScalarType.Float32).InitializeRandom(2)) Checkpoint.SaveDeciLm(child, childDir);
            }
            var dtype = Checkpoint.ParseDtype(dtypeName);
            var type = GgufExporter.ParseType(dtypeName);
            string[] dirs = [parentDir, childDir];
            var ggufs = dirs.Select((d, i) => GgufExporter.Export(d, Path.Combine(dir, $"{i}.gguf"), type, _ => { }).Path).ToArray();
            var models = dirs.Select(d => Checkpoint.Load(d, CPU, dtype)).ToArray();
            try
            {
                var o = new BenchOptions { Models = dirs, Batch = batch, PromptLength = prompt, GenerationLength = generation };
                var random = new Random(0);
                int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, prompt).Select(_ => random.Next(models.Min(m => m.Config.VocabSize))).ToArray()).ToArray();
                var options = new GenerationOptions { MaxNewTokens = generation, StopAtEos = false };
                var ours = dirs.Select(_ => new List<BenchSample>()).ToArray();
                var llama = dirs.Select(_ => new List<BenchSample>()).ToArray();
                Console.WriteLine($"engine ratio: {parentDir} vs {childDir}; batch {batch}, prompt {prompt}, generation {generation}, {dtypeName}; " +
                                  $"{threads} threads; 1 warm-up + {rounds} rounds of ours(P), ours(C), llama.cpp(P), llama.cpp(C)");
                for (int round = 0; round <= rounds; round++)
                {
                    for (int m = 0; m < 2; m++)
                    {
                        var r = TextGenerator.Generate(models[m], prompts, options, []);
                        if (round > 0) ours[m].Add(new BenchSample(r.PrefillSeconds, r.DecodeSeconds));
                    }
                    for (int m = 0; m < 2; m++)
                    {
                        var s = LlamaCppBench.Measure(ggufs[m], batch, prompt, generation, threads);
                        if (round > 0) llama[m].Add(s);
                    }
                }
                double E2e(IReadOnlyList<BenchSample> samples) => BenchRow.FromSamples(o, samples).EndToEndTokensPerSecond;
                double oursRatio = E2e(ours[1]) / E2e(ours[0]), llamaRatio = E2e(llama[1]) / E2e(llama[0]);
                Console.WriteLine("| engine | parent end-to-end tokens/s | child end-to-end tokens/s | child / parent |");
                Console.WriteLine("|---|---:|---:|---:|");
                Console.WriteLine($"| ours | {E2e(ours[0]):N0} | {E2e(ours[1]):N0} | {oursRatio:F2}x |");
                Console.WriteLine($"| llama.cpp | {E2e(llama[0]):N0} | {E2e(llama[1]):N0} | {llamaRatio:F2}x |");
                Console.WriteLine($"llama.cpp ratio / our ratio = {llamaRatio / oursRatio:F3}");
            }
            finally
            {
                foreach (var m in models) m.Dispose();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
