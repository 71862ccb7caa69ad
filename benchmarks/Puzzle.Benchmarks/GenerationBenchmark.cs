using BenchmarkDotNet.Attributes;
using Puzzle.Model;
using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// End-to-end batched generation on the reference engine scenario of the roadmap: an 8-layer Llama, hidden 384,
/// 6 heads, 2 KV heads, FFN 1024, vocab 4096 (random weights), batch 16, prompt 128, generation 128.
/// tokens/s = batch × generated / time = 2048 / the reported mean time.
/// </summary>
[MemoryDiagnoser(false)]
public class GenerationBenchmark
{
    CausalLm _model = null!;
    int[][] _prompts = null!;

    [Params(16)] public int Batch { get; set; }
    [Params(128)] public int PromptLength { get; set; }
    [Params(128)] public int GenerationLength { get; set; }
    [Params("bfloat16", "float32")] public string Dtype { get; set; } = "bfloat16";

    [GlobalSetup]
    public void Setup()
    {
        var config = new ModelConfig
        {
            VocabSize = 4096, HiddenSize = 384, NumAttentionHeads = 6, HeadDim = 64,
            Blocks = Enumerable.Repeat(BlockConfig.Llama(2, 1024), 8).ToArray(), MaxPositionEmbeddings = 512,
        };
        _model = new CausalLm(config, CPU, Puzzle.Checkpoints.Checkpoint.ParseDtype(Dtype)).InitializeRandom(0);
        _model.eval();
        var random = new Random(0);
        _prompts = Enumerable.Range(0, Batch).Select(_ => Enumerable.Range(0, PromptLength).Select(_ => random.Next(4096)).ToArray()).ToArray();
    }

    [Benchmark]
    public int Generate()
    {
        var result = TextGenerator.Generate(_model, _prompts,
            new GenerationOptions { MaxNewTokens = GenerationLength, StopAtEos = false }, []);
        return result.GeneratedTokens;
    }

    [GlobalCleanup]
    public void Cleanup() => _model.Dispose();
}
