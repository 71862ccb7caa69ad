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
///   flock /tmp/puzzle-bench.lock dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- engine-parity [rounds] [batches] [prompt] [gen]
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

    public static void Run(int rounds, int[] batches, int prompt, int generation)
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
                string gguf = Path.Combine(dir, $"model-{type}.gguf");
                GgufExporter.Export(dir, gguf, type, _ => { });
                using var model = Checkpoint.Load(dir, CPU, dtype);
                foreach (int batch in batches)
                {
                    var o = new BenchOptions { Models = [dir], Batch = batch, PromptLength = prompt, GenerationLength = generation };
                    var random = new Random(batch);
                    int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, prompt).Select(_ => random.Next(Config.VocabSize)).ToArray()).ToArray();
                    var options = new GenerationOptions { MaxNewTokens = generation, StopAtEos = false };
                    var ours = new List<LlamaCppSample>();
                    var llama = new List<LlamaCppSample>();
                    for (int round = 0; round <= rounds; round++)
                    {
                        var result = TextGenerator.Generate(model, prompts, options, []);
                        var theirs = LlamaCppBench.Measure(gguf, batch, prompt, generation, threads);
                        if (round == 0) continue;                                               // warm-up
                        ours.Add(new LlamaCppSample(result.PrefillSeconds, result.DecodeSeconds));
                        llama.Add(theirs);
                    }
                    JsonObject a = LlamaCppBench.Row(o, ours), b = LlamaCppBench.Row(o, llama);
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
}
