using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Gguf;
using Puzzle.Model;
using Puzzle.Runtime;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Library;
using Puzzle.Stages.Report;
using Puzzle.Tokenization;
using static TorchSharp.torch;

namespace Puzzle.Tests.Gguf;

/// <summary>
/// GGUF export checked by llama.cpp itself (prebuilt from node-llama-cpp by scripts/install-llama-cpp.sh, driven through
/// llama.h by scripts/llama-cpp/puzzle-llama-check.cpp): mean NLL, greedy continuation and tokenisation against ours.
/// </summary>
public sealed class GgufExportTests
{
    const int GreedyTokens = 24;

    /// <summary>.tools/llama.cpp/bin/puzzle-llama-check under the project root, or a skip with how to get it.</summary>
    static string LlamaCheck()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, ".tools", "llama.cpp", "bin", "puzzle-llama-check");
            if (File.Exists(candidate)) return candidate;
        }
        Skip.If(true, "llama.cpp is not installed (.tools/llama.cpp/bin/puzzle-llama-check); run scripts/install-llama-cpp.sh (needs npm, git, g++) to check GGUF export against it");
        return "";
    }

    sealed record LlamaResult(double Nll, int Count, int[] Greedy, int[] Tokens, int Vocab);

    static LlamaResult RunLlama(string gguf, IReadOnlyList<int> ids, string? text)
    {
        string tool = LlamaCheck();
        string dir = TestSupport.TempDir();
        string idsFile = Path.Combine(dir, "ids.txt"), textFile = Path.Combine(dir, "text.txt");
        File.WriteAllText(idsFile, string.Join(' ', ids));
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { gguf, idsFile, GreedyTokens.ToString() }) start.ArgumentList.Add(a);
        if (text is not null)
        {
            File.WriteAllText(textFile, text);
            start.ArgumentList.Add(textFile);
        }
        using var process = Process.Start(start)!;
        string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"puzzle-llama-check exited {process.ExitCode}: {stderr}");
        var json = JsonNode.Parse(stdout)!;
        int[] Ints(string key) => json[key]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        return new LlamaResult(json["nll"]!.GetValue<double>(), json["count"]!.GetValue<int>(), Ints("greedy"), Ints("tokens"), json["n_vocab"]!.GetValue<int>());
    }

    static int[] OurGreedy(CausalLm model, int[] ids) =>
        TextGenerator.Generate(model, [ids], new GenerationOptions { MaxNewTokens = GreedyTokens, Temperature = 0, StopAtEos = false }, []).NewTokens[0];

    static string Passage(string stories) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(stories, "reference_outputs.json")))!["text"]!.GetValue<string>();

    [SkippableFact]
    public void Export_Stories260K_LlamaCppMatchesOurNllGreedyAndTokens()
    {
        string stories = TestSupport.Stories260K();
        string gguf = Path.Combine(TestSupport.TempDir(), "stories.gguf");
        var result = GgufExporter.Export(stories, gguf, GgmlType.F32, _ => { });
        Assert.Equal("llama", result.Architecture);
        var (meta, tensors) = GgufFile.ReadHeader(gguf);
        Assert.Equal("llama", meta["general.architecture"].Value);
        Assert.Equal("llama", meta["tokenizer.ggml.model"].Value);                               // tokenizer.model (SentencePiece)
        Assert.Equal(512, ((Array)meta["tokenizer.ggml.tokens"].Value).Length);
        Assert.Equal(4u, meta["llama.attention.head_count_kv"].Value);
        Assert.DoesNotContain(tensors, t => t.Name == "output.weight");                        // tied: llama.cpp reuses token_embd
        Assert.Equal([8L * 8, 64], tensors.Single(t => t.Name == "blk.0.attn_q.weight").Dims);

        using var model = Checkpoint.Load(stories);
        using var tokenizer = TextTokenizer.Load(stories);
        string text = Passage(stories);
        int[] ids = tokenizer.Encode(text);
        var ours = PerplexityEvaluator.Evaluate(model, ids);
        var llama = RunLlama(gguf, ids, text);
        Assert.Equal(ids, llama.Tokens);
        Assert.Equal(ours.Tokens, llama.Count);
        Assert.True(Math.Abs(llama.Nll - ours.MeanNll) <= 1e-3 * ours.MeanNll, $"llama.cpp NLL {llama.Nll:F6} vs ours {ours.MeanNll:F6}");
        Assert.Equal(OurGreedy(model, ids), llama.Greedy);

        // Q8_0 as ggml lays it out (rows of 32-value blocks; the 172-wide FFN-down rows fall back to F16).
        string q8 = Path.Combine(Path.GetDirectoryName(gguf)!, "stories-q8_0.gguf");
        GgufExporter.Export(stories, q8, GgmlType.Q8_0, _ => { });
        Assert.Equal(GgmlType.Q8_0, GgufFile.ReadHeader(q8).Tensors.Single(t => t.Name == "blk.0.ffn_gate.weight").Type);
        Assert.Equal(GgmlType.F16, GgufFile.ReadHeader(q8).Tensors.Single(t => t.Name == "blk.0.ffn_down.weight").Type);
        var quantized = RunLlama(q8, ids, null);
        Assert.True(Math.Abs(quantized.Nll - ours.MeanNll) <= 1e-2 * ours.MeanNll, $"llama.cpp Q8_0 NLL {quantized.Nll:F6} vs ours (f32) {ours.MeanNll:F6}");
    }

    /// <summary>
    /// stories260K turned into a child with every variant kind: a first layer without attention (llama.cpp then needs a
    /// zero linear attention in layer 0), GQA with 2, 1 and 4 KV heads, linear attention, narrow / linear / no-op FFN,
    /// and a layer with nothing at all. The new sublayers are scaled down so that the greedy continuation is not one
    /// repeated token (which would make that comparison trivial).
    /// </summary>
    static CausalLm StoriesChild(CausalLm parent)
    {
        var pc = parent.Config;
        int[] source = [0, 0, 1, 2, 3, 3, 4];
        var config = pc.WithBlocks(
        [
            new BlockConfig(AttentionConfig.NoOperation, FfnConfig.SwiGlu(32)),
            new BlockConfig(AttentionConfig.Gqa(2), FfnConfig.SwiGlu(96)),
            new BlockConfig(AttentionConfig.Gqa(1), FfnConfig.Linear),
            new BlockConfig(AttentionConfig.Linear, FfnConfig.NoOperation),
            new BlockConfig(AttentionConfig.NoOperation, FfnConfig.NoOperation),
            BlockConfig.Llama(4, 172),
            BlockConfig.Llama(4, 172),
        ]);
        var child = new CausalLm(config, CPU, ScalarType.Float32);
        using var noGrad = no_grad();
        child.Model.EmbedTokens.Weight.copy_(parent.Model.EmbedTokens.Weight);
        child.Model.Norm.Weight.copy_(parent.Model.Norm.Weight);
        for (int i = 0; i < config.NumLayers; i++)
        {
            var (from, to) = (parent.Layer(source[i]), child.Layer(i));
            var p = (GqaAttention)from.SelfAttn!;
            to.InputLayernorm?.Weight.copy_(from.InputLayernorm!.Weight);
            to.PostAttentionLayernorm?.Weight.copy_(from.PostAttentionLayernorm!.Weight);
            switch (to.SelfAttn)
            {
                case GqaAttention a:
                    a.QProj.Weight.copy_(p.QProj.Weight);
                    a.KProj.Weight.copy_(VariantInitializer.MeanHeadGroups(p.KProj.Weight, p.KeyValueHeads, a.KeyValueHeads, pc.HeadDim));
                    a.VProj.Weight.copy_(VariantInitializer.MeanHeadGroups(p.VProj.Weight, p.KeyValueHeads, a.KeyValueHeads, pc.HeadDim));
                    a.OProj.Weight.copy_(p.OProj.Weight);
                    break;
                case LinearAttention a:
                    a.Linear.Weight.copy_(VariantInitializer.LinearAttentionWeight(p, pc) * 0.1);
                    break;
            }
            var f = (SwiGluFfn)from.Mlp!;
            switch (to.Mlp)
            {
                case SwiGluFfn s:
                    long width = s.GateProj.Weight.shape[0];
                    s.GateProj.Weight.copy_(f.GateProj.Weight.narrow(0, 0, width));
                    s.UpProj.Weight.copy_(f.UpProj.Weight.narrow(0, 0, width));
                    s.DownProj.Weight.copy_(f.DownProj.Weight.narrow(1, 0, width) * (i == 0 ? 0.3 : 1.0));
                    break;
                case LinearFfn l:
                    l.Linear.Weight.copy_(f.DownProj.Weight.matmul(f.UpProj.Weight) * 0.1);
                    break;
            }
        }
        child.eval();
        return child;
    }

    [SkippableFact]
    public void Export_HeterogeneousChild_DeciLayersMatchOursInLlamaCpp()
    {
        string stories = TestSupport.Stories260K();
        using var parent = Checkpoint.Load(stories);
        using var child = StoriesChild(parent);
        string gguf = Path.Combine(TestSupport.TempDir(), "child.gguf");
        var result = GgufExporter.Export(child, stories, gguf, GgmlType.F32, "child", _ => { });

        // Packing: [zero-lin | 32] [gqa2 | 96] [gqa1 | 0] [lin (the FFN) | 0] [lin | 0] [gqa4 | 172] [gqa4 | 172];
        // "| 0" is a width-1 zero SwiGLU, and the empty layer vanishes.
        Assert.Equal("deci", result.Architecture);
        var (meta, tensors) = GgufFile.ReadHeader(gguf);
        int[] Ints(string key) => ((Array)meta[key].Value).Cast<int>().ToArray();
        Assert.Equal([8, 8, 8, 8, 8, 8, 8], Ints("deci.attention.head_count"));
        Assert.Equal([0, 2, 1, 0, 0, 4, 4], Ints("deci.attention.head_count_kv"));
        Assert.Equal([32, 96, 1, 1, 1, 172, 172], Ints("deci.feed_forward_length"));
        Assert.Equal(7u, meta["deci.block_count"].Value);
        Assert.Equal([64L, 64], tensors.Single(t => t.Name == "blk.3.attn_output.weight").Dims);

        using var tokenizer = TextTokenizer.Load(stories);
        string text = Passage(stories);
        int[] ids = tokenizer.Encode(text);
        var ours = PerplexityEvaluator.Evaluate(child, ids);
        var llama = RunLlama(gguf, ids, null);
        Assert.True(Math.Abs(llama.Nll - ours.MeanNll) <= 1e-3 * ours.MeanNll, $"llama.cpp NLL {llama.Nll:F6} vs ours {ours.MeanNll:F6}");
        Assert.Equal(OurGreedy(child, ids), llama.Greedy);
    }

    [SkippableFact]
    public void Export_ByteLevelBpeTokenizer_LlamaCppTokenisesLikeHfTokenizers()
    {
        string shared = TestSupport.SharedDir() ?? "";
        string corpus = Path.Combine(shared, "data", "tinystories-val.txt");
        Skip.If(!File.Exists(corpus), "../shared/data/tinystories-val.txt is absent; skipping the byte-level BPE GGUF test");
        LlamaCheck();
        string dir = TestSupport.TempDir(), input = Path.Combine(dir, "corpus.txt");
        string all = File.ReadAllText(corpus);
        File.WriteAllText(input, all[..40_000]);
        var trained = BpeTrainer.Train([input], 400, dir, log: _ => { });
        using var tokenizer = TextTokenizer.Load(dir);
        var config = TestSupport.TinyParentConfig() with { VocabSize = trained.VocabSize, BosTokenId = tokenizer.BosId, EosTokenIds = tokenizer.EosIds };
        using var model = TestSupport.Build(config);
        string gguf = Path.Combine(dir, "bpe.gguf");
        GgufExporter.Export(model, dir, gguf, GgmlType.F16, "bpe", _ => { });
        var (meta, _) = GgufFile.ReadHeader(gguf);
        Assert.Equal("gpt2", meta["tokenizer.ggml.model"].Value);
        Assert.Equal("gpt-2", meta["tokenizer.ggml.pre"].Value);

        // Unseen text with digits, punctuation, runs of spaces and new lines.
        string text = all.Substring(200_000, 1500) + "\n\n  Numbers 12345, 'quotes' and    spaces.\tTab!";
        int[] ids = tokenizer.Encode(text);
        var llama = RunLlama(gguf, ids[..Math.Min(ids.Length, 64)], text);
        Assert.Equal(ids, llama.Tokens);
    }

    [Fact]
    public void ExportStage_HfAndGguf_WritesBothAndPacksTheTinyChild()
    {
        string root = TestSupport.TempDir(), childDir = Path.Combine(root, "child"), outDir = Path.Combine(root, "export");
        using (var child = TestSupport.Build(TestSupport.TinyChildConfig()))
            Checkpoint.SaveDeciLm(child, childDir);
        ExportStage.Run(childDir, outDir, "float32", log: _ => { }, formats: ["hf", "gguf"]);
        Assert.True(File.Exists(Path.Combine(outDir, "config.json")));
        var (meta, tensors) = GgufFile.ReadHeader(Path.Combine(outDir, ExportStage.GgufFileName));
        int[] Ints(string key) => ((Array)meta[key].Value).Cast<int>().ToArray();
        // [gqa2 | 160] [gqa1 | 48] [lin | zero] [lin (the FFN) | 80] [gqa4 | zero]; the empty layer vanishes.
        Assert.Equal("deci", meta["general.architecture"].Value);
        Assert.Equal([2, 1, 0, 0, 4], Ints("deci.attention.head_count_kv"));
        Assert.Equal([4, 4, 4, 4, 4], Ints("deci.attention.head_count"));
        Assert.Equal([160, 48, 1, 80, 1], Ints("deci.feed_forward_length"));
        Assert.Equal("none", meta["tokenizer.ggml.model"].Value);                              // no tokenizer files: ids only
        Assert.Contains(tensors, t => t.Name == "output.weight" && t.Dims.SequenceEqual([64L, 96]));
        Assert.DoesNotContain(tensors, t => t.Name.StartsWith("blk.5.", StringComparison.Ordinal));

        var e = Assert.Throws<PuzzleException>(() => ExportStage.Run(childDir, outDir, "float32", log: _ => { }, formats: ["onnx"]));
        Assert.Equal("export.formats: 'onnx' is not a format (expected hf or gguf)", e.Message);
        e = Assert.Throws<PuzzleException>(() => GgufExporter.ParseType("q4_k"));
        Assert.Contains("'q4_k'", e.Message);
    }

    /// <summary>
    /// Exporting from a directory streams (the model built on the meta device, each tensor read in its stored dtype and
    /// converted in chunks of <see cref="GgufExporter.ChunkElements"/>): every type gives the same file, byte for byte,
    /// as exporting the model loaded in fp32 (the path before); and the embedding, two chunks long here, holds exactly
    /// the whole tensor converted at once.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    [InlineData(GgmlType.Q8_0)]
    public void Export_FromDirectory_StreamsTheBytesOfTheFp32LoadedModel(GgmlType type)
    {
        // A bf16-stored Llama (untied, llama3 RoPE) whose embedding is 1.3 chunks, and the tiny DeciLM child in fp32.
        var parentConfig = TestSupport.TinyParentConfig() with
        {
            VocabSize = (int)(GgufExporter.ChunkElements * 4 / 3 / 64), TorchDtype = "bfloat16",
            RopeScaling = new RopeScaling("llama3", 8, 1, 4, 64),
        };
        string root = TestSupport.TempDir(), parentDir = Path.Combine(root, "parent"), childDir = Path.Combine(root, "child");
        using (var parent = TestSupport.Build(parentConfig)) Checkpoint.SaveLlama(parent, parentDir, ScalarType.BFloat16);
        using (var child = TestSupport.Build(TestSupport.TinyChildConfig())) Checkpoint.SaveDeciLm(child, childDir);
        Assert.True(parentConfig.VocabSize * 64L > GgufExporter.ChunkElements);
        foreach (string dir in new[] { parentDir, childDir })
        {
            string streamed = Path.Combine(root, $"{Path.GetFileName(dir)}-streamed.gguf"), loaded = Path.Combine(root, $"{Path.GetFileName(dir)}-loaded.gguf");
            GgufExporter.Export(dir, streamed, type, _ => { });
            using var model = Checkpoint.Load(dir);
            GgufExporter.Export(model, dir, loaded, type, Path.GetFileName(dir), _ => { });
            Assert.True(File.ReadAllBytes(loaded).AsSpan().SequenceEqual(File.ReadAllBytes(streamed)), $"{dir} as {type}: the streamed GGUF differs");

            // The embedding's data against the whole tensor converted in one piece.
            var (_, tensors) = GgufFile.ReadHeader(streamed);
            long data = new FileInfo(streamed).Length - tensors.Sum(t => (long)Align(TensorBytes(t.Dims, t.Type)));
            var embedding = tensors.Single(t => t.Name == "token_embd.weight");
            // Every tensor whose bytes are read stays referenced until they are copied: `.bytes` spans native memory, and
            // an unreferenced temporary (the converted copy) could be finalised mid-copy (a fresh-clone CI run read
            // other bytes once).
            using var weight = model.Model.EmbedTokens.Weight.detach().contiguous();
            using var converted = embedding.Type switch
            {
                GgmlType.F16 => weight.to(ScalarType.Float16),
                GgmlType.BF16 => weight.to(ScalarType.BFloat16),
                _ => weight.alias(),
            };
            byte[] expected = embedding.Type switch
            {
                GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => converted.bytes.ToArray(),
                _ => GgufExporter.QuantizeQ8_0(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(weight.bytes)),
            };
            GC.KeepAlive(weight);
            GC.KeepAlive(converted);
            using var file = File.OpenRead(streamed);
            file.Position = data + (long)embedding.Offset;
            var actual = new byte[expected.Length];
            file.ReadExactly(actual);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{dir} as {type}: token_embd.weight");
        }
    }

    static ulong Align(long n) => ((ulong)n + GgufFile.Alignment - 1) / GgufFile.Alignment * GgufFile.Alignment;

    static long TensorBytes(long[] dims, GgmlType type)
    {
        long n = dims.Aggregate(1L, (a, b) => a * b);
        return type switch
        {
            GgmlType.F32 => 4 * n, GgmlType.F16 or GgmlType.BF16 => 2 * n,
            _ => n / GgufExporter.Q8Block * GgufExporter.Q8BlockBytes,
        };
    }

    [SkippableTheory]
    [InlineData("llama3")]
    [InlineData("linear")]
    public void Export_RopeScaling_LlamaCppMatchesOurNll(string type)
    {
        // Scaling that moves most of stories260K's 4 frequencies (head_dim 8): original context 32, factor 4.
        string stories = TestSupport.Stories260K();
        using var parent = Checkpoint.Load(stories);
        var config = parent.Config with { RopeScaling = new RopeScaling(type, 4.0, 1.0, 4.0, 32) };
        using var scaled = new CausalLm(config, CPU, ScalarType.Float32);
        using (no_grad())
        {
            var source = parent.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            foreach (var (name, target) in scaled.named_parameters()) target.copy_(source[name]);
        }
        scaled.eval();
        string gguf = Path.Combine(TestSupport.TempDir(), $"rope-{type}.gguf");
        GgufExporter.Export(scaled, stories, gguf, GgmlType.F32, "rope", _ => { });
        var (meta, tensors) = GgufFile.ReadHeader(gguf);
        Assert.Equal(type == "llama3", tensors.Any(t => t.Name == "rope_freqs.weight"));
        Assert.Equal(type == "linear", meta.ContainsKey("llama.rope.scaling.type"));

        using var tokenizer = TextTokenizer.Load(stories);
        int[] ids = tokenizer.Encode(Passage(stories));
        var ours = PerplexityEvaluator.Evaluate(scaled, ids);
        var unscaled = PerplexityEvaluator.Evaluate(parent, ids);
        Assert.True(Math.Abs(ours.MeanNll - unscaled.MeanNll) > 1e-3, "the scaling should change the model");
        var llama = RunLlama(gguf, ids, null);
        Assert.True(Math.Abs(llama.Nll - ours.MeanNll) <= 1e-3 * ours.MeanNll, $"llama.cpp NLL {llama.Nll:F6} vs ours {ours.MeanNll:F6} ({type})");
    }

    [SkippableFact]
    public void LlamaCppBench_TwoModels_RowsInBenchStageTerms()
    {
        string stories = TestSupport.Stories260K();
        LlamaCheck();
        string ggufDir = TestSupport.TempDir();
        var o = new BenchOptions
        {
            Models = [stories, stories], Batch = 2, PromptLength = 8, GenerationLength = 4, Repeats = 2, Warmup = 0, Dtype = "float32",
            Engine = BenchEngine.LlamaCpp, GgufDir = ggufDir, LlamaCppThreads = 1,
        };
        var log = new List<string>();
        var result = BenchStage.Run(o, log.Add);
        var rows = result["models"]!.AsArray();
        Assert.Equal(2, rows.Count);
        Assert.Equal(1.0, rows[0]!["end_to_end_ratio"]!.GetValue<double>());
        Assert.Equal("ABBA", result["scenario"]!["order"]!.GetValue<string>());
        // Each round's ratio, and their spread around the median's.
        var perRound = rows[1]!["end_to_end_ratio_rounds"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        Assert.Equal(2, perRound.Length);
        Assert.Equal(perRound.Min(), rows[1]!["end_to_end_ratio_min"]!.GetValue<double>());
        Assert.Equal(perRound.Max(), rows[1]!["end_to_end_ratio_max"]!.GetValue<double>());
        // One GGUF per model, exported once (the same model twice: one file) and reused by a later bench.
        string gguf = Assert.Single(Directory.GetFiles(ggufDir, "*.gguf"));
        Assert.Equal(gguf, rows[0]!["gguf"]!.GetValue<string>());
        Assert.Single(log, l => l.Contains("exported", StringComparison.Ordinal));
        var written = File.GetLastWriteTimeUtc(gguf);
        log.Clear();
        BenchStage.Run(o with { Repeats = 1 }, log.Add);
        Assert.Equal(2, log.Count(l => l.Contains($"reusing {gguf}", StringComparison.Ordinal)));
        Assert.DoesNotContain(log, l => l.Contains("exported", StringComparison.Ordinal));
        Assert.Equal(written, File.GetLastWriteTimeUtc(gguf));
        foreach (var row in rows)
        {
            Assert.True(File.Exists(row!["gguf"]!.GetValue<string>()));
            double prefill = row["prefill_tokens_per_s"]!.GetValue<double>(), decode = row["decode_tokens_per_s"]!.GetValue<double>();
            double total = row["total_ms"]!.GetValue<double>() / 1e3;
            Assert.True(prefill > 0 && decode > 0);
            // total = prefill time + decode time, in BenchStage's token counts
            Assert.Equal(total, 2 * 8 / prefill + 2 * 3 / decode, 1e-9);
            Assert.Equal(2 * 4 / total, row["end_to_end_tokens_per_s"]!.GetValue<double>(), 6);
        }
    }

    [SkippableFact]
    public void BenchStage_BothEngines_PutsLlamaCppsRatiosBesideOurs()
    {
        string stories = TestSupport.Stories260K();
        LlamaCheck();
        var o = new BenchOptions { Models = [stories, stories], Batch = 2, PromptLength = 8, GenerationLength = 4, Repeats = 1, Warmup = 0, Dtype = "float32", Engine = BenchEngine.Both };
        var result = BenchStage.Run(o, _ => { });
        var ours = result["models"]!.AsArray();
        var theirs = result["llama_cpp"]!["models"]!.AsArray();
        Assert.Equal(2, theirs.Count);
        for (int m = 0; m < 2; m++)
        {
            Assert.Equal(theirs[m]!["end_to_end_ratio"]!.GetValue<double>(), ours[m]!["llama_cpp_end_to_end_ratio"]!.GetValue<double>());
            Assert.Null(theirs[m]!["gguf"]);                                                  // the temporary GGUF is gone
        }
        Assert.Equal(1.0, ours[0]!["llama_cpp_end_to_end_ratio"]!.GetValue<double>());
    }

    [Fact]
    public void BenchRow_FromSamples_MediansCountedAsTheScenario()
    {
        // batch 2, prompt 8, generation 4: 16 prefill tokens, 2 × 3 decode tokens, 8 generated; medians of 3 rounds.
        var o = new BenchOptions { Models = ["m"], Batch = 2, PromptLength = 8, GenerationLength = 4 };
        var row = BenchRow.FromSamples(o, [new BenchSample(1, 2), new BenchSample(3, 1), new BenchSample(2, 5)]);
        Assert.Equal(new BenchRow(16 / 2.0, 6 / 2.0, 8 / 4.0, 2000, 4000, 3), row);
        var json = row.ToJson();
        Assert.Equal(8.0, json["prefill_tokens_per_s"]!.GetValue<double>());
        Assert.Equal(2.0, json["end_to_end_tokens_per_s"]!.GetValue<double>());
        var half = row with { EndToEndTokensPerSecond = 1.0 };
        half.AddRatios(json, row);
        Assert.Equal(0.5, json["end_to_end_ratio"]!.GetValue<double>());
        // The round ratios replace it by their median (paired, round by round); the ratio of medians is kept beside it.
        // Totals 1, 2, 4 s against the reference's 2, 2, 2 s: rounds 2, 1, 0.5 -> 1.
        BenchRow.AddRoundRatios(json, [new BenchSample(0.5, 0.5), new BenchSample(1, 1), new BenchSample(2, 2)], [new BenchSample(1, 1), new BenchSample(1, 1), new BenchSample(1, 1)]);
        Assert.Equal([2.0, 1.0, 0.5], json["end_to_end_ratio_rounds"]!.AsArray().Select(v => v!.GetValue<double>()));
        Assert.Equal((1.0, 0.5, 0.5, 2.0), (json["end_to_end_ratio"]!.GetValue<double>(), json["end_to_end_ratio_of_medians"]!.GetValue<double>(),
            json["end_to_end_ratio_min"]!.GetValue<double>(), json["end_to_end_ratio_max"]!.GetValue<double>()));
        Assert.Null(json["end_to_end_ratio_ci95"]);                                          // 3 rounds: no 95% interval
        // 11 rounds (the demo's bench): the 95% interval of the median is [x(2), x(10)] (1 - 2 * 12/2048 = 98.8%;
        // x(3) would give 1 - 2 * 67/2048 = 93.5%). Child totals 1.0, 1.1, ..., 2.0 s against the reference's 2 s.
        var eleven = Enumerable.Range(0, 11).Select(i => new BenchSample(0.5 + 0.05 * i, 0.5 + 0.05 * i)).ToList();
        BenchRow.AddRoundRatios(json, eleven, [.. Enumerable.Repeat(new BenchSample(1, 1), 11)]);
        var ci = json["end_to_end_ratio_ci95"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray();
        Assert.Equal(2 / 1.9, ci[0], tolerance: 1e-12);
        Assert.Equal(2 / 1.1, ci[1], tolerance: 1e-12);
        Assert.Equal(2 / 1.5, json["end_to_end_ratio"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Throws<ArgumentException>(() => BenchRow.RoundRatios([1.0], [1.0, 2.0]));
        Assert.Throws<ArgumentException>(() => BenchRow.FromSamples(o, []));
    }

    [Fact]
    public void QuantizeQ8_0_MatchesPerBlockScaleAndRounding()
    {
        var values = new float[64];
        var random = new Random(3);
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1) * (i < 32 ? 1 : 0.01f);
        values[40] = 0.5f;                                                                    // the second block's max
        var bytes = GgufExporter.QuantizeQ8_0(values);
        Assert.Equal(2 * 34, bytes.Length);
        for (int b = 0; b < 2; b++)
        {
            float d = (float)BitConverter.ToHalf(bytes, b * 34);
            float amax = values.Skip(b * 32).Take(32).Max(Math.Abs);
            Assert.Equal((float)(Half)(amax / 127), d);
            for (int j = 0; j < 32; j++)
            {
                float x = values[b * 32 + j], q = (sbyte)bytes[b * 34 + 2 + j];
                Assert.Equal(MathF.Round(x * (1f / (amax / 127f)), MidpointRounding.AwayFromZero), q, 0.0f);
                Assert.True(Math.Abs(q * d - x) <= 0.5f * d + 1e-3f * amax, $"block {b} value {j}: {q * d} vs {x}");
            }
        }
    }

    [Fact]
    public void PermuteRope_InterleavesHalves_PerHead()
    {
        // One head of size 4 over 1 input: HF rows [r0 r1 | r2 r3] (rotate-half pairs (0,2), (1,3)) -> [r0 r2 r1 r3].
        using var w = tensor(new float[] { 0, 1, 2, 3, 10, 11, 12, 13 }, [8, 1]);
        using var permuted = GgufExporter.PermuteRope(w, heads: 2);
        Assert.Equal(new float[] { 0, 2, 1, 3, 10, 12, 11, 13 }, permuted.data<float>().ToArray());
    }

    [Fact]
    public void ReadHeader_NotGguf_NamesFileAndMagic()
    {
        string path = Path.Combine(TestSupport.TempDir(), "x.gguf");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8]);
        var e = Assert.Throws<PuzzleException>(() => GgufFile.ReadHeader(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("magic 0x04030201", e.Message);
    }
}
