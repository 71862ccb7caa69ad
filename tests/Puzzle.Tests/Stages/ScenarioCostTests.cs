using Puzzle.Domain;
using Puzzle.Config;
using Puzzle.Model;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Search;

namespace Puzzle.Tests.Stages;

/// <summary>Golden values of the scenario cost model, worked out by hand (comments show the arithmetic).</summary>
public sealed class ScenarioCostTests
{
    // H = 64, 4 heads × 16 dims, vocab 256, untied; batch 2, prompt 8, generation 5, bf16 weights and KV cache.
    static readonly ModelConfig Config = new()
    {
        VocabSize = 256, HiddenSize = 64, NumAttentionHeads = 4, HeadDim = 16, Blocks = [BlockConfig.Llama(2, 128)],
    };
    static readonly ScenarioCost Scenario = ScenarioCost.From(new ScenarioSection { Batch = 2, PromptLength = 8, GenerationLength = 5 });

    static SubblockVariant Attention(AttentionConfig a) => new("L0.attn.x", 0, SubblockKind.Attention, a, null, false);
    static SubblockVariant Ffn(FfnConfig f) => new("L0.ffn.x", 0, SubblockKind.Ffn, null, f, false);

    [Fact]
    public void Steps_context_capacity_time_throughput_and_memory()
    {
        Assert.Equal(4, Scenario.DecodeSteps);                          // the prefill yields token 1; tokens 2..5 take a step each
        Assert.Equal(9, Scenario.DecodeContext);                        // steps see 8, 9, 10, 11 cached positions: mean 9.5, rounded down
        Assert.Equal(13, Scenario.CacheCapacity);                       // 8 + 5
        Assert.Equal(10, Scenario.GeneratedTokens);                     // 2 × 5
        Assert.Equal(18, Scenario.TimeMs(10, 2));                       // 10 + 4 × 2
        Assert.Equal(10 / 0.018, Scenario.TokensPerSecond(18), tolerance: 1e-9);
        Assert.Equal(5328, Scenario.MemoryBytes(1000, 128));            // 1000 × 2 + 2 × 13 × 128
        // Whole model: 32,832 non-block + 12,352 attention + 24,640 FFN = 69,824 parameters × 2 bytes;
        // KV 2 × 2 heads × 16 × 2 bytes = 128 per token → 2 × 13 × 128 = 3,328.
        Assert.Equal(69824 * 2 + 3328, Scenario.MemoryBytes(Config));
        Assert.Equal(4, ScenarioCost.DtypeBytes("float32", "x"));
        Assert.Equal(1, ScenarioCost.DtypeBytes("fp8", "x"));
        var e = Assert.Throws<PuzzleException>(() => ScenarioCost.DtypeBytes("float64", "scenario.kv_dtype"));
        Assert.Equal("scenario.kv_dtype: unknown dtype 'float64' (float32, bfloat16, float16, fp8, int8)", e.Message);
        var bad = Assert.Throws<PuzzleException>(() => ScenarioCost.From(new ScenarioSection { GenerationLength = 0 }));
        Assert.Contains("generation_length (0)", bad.Message);
    }

    [Fact]
    public void Gqa_attention_flops_and_bytes()
    {
        var kv2 = Attention(AttentionConfig.Gqa(2));
        // Prefill, 16 positions: projections 2·16·64·(2·64 + 2·32) = 393,216; causal pairs 2·(8·9/2) = 72,
        // QKᵀ + PV 2·2·64·72 = 18,432.
        // Bytes: 12,352 parameters × 2 = 24,704; KV 2·8·(2·2·16)·2 = 2,048; activations 2·16·64·2 = 4,096.
        Assert.Equal(new PhaseWork(411648, 30848), Scenario.Prefill(Config, kv2));
        // Decode at context 9, 2 positions: projections 2·2·64·192 = 49,152; pairs 2·(9 + 1) = 20 → 5,120.
        // Bytes: 24,704 + KV 2·10·64·2 = 2,560 + activations 2·2·64·2 = 512.
        Assert.Equal(new PhaseWork(54272, 27776), Scenario.Decode(Config, kv2));
        // Linear attention: 2·16·64·64 = 131,072 FLOPs; 64·64·2 + 4,096 bytes. No-op: nothing.
        Assert.Equal(new PhaseWork(131072, 12288), Scenario.Prefill(Config, Attention(AttentionConfig.Linear)));
        Assert.Equal(new PhaseWork(0, 0), Scenario.Decode(Config, Attention(AttentionConfig.NoOperation)));
    }

    [Fact]
    public void SwiGlu_ffn_and_non_block_flops_and_bytes()
    {
        var w128 = Ffn(FfnConfig.SwiGlu(128));
        // 2·16·3·64·128 = 786,432 FLOPs; 24,640 × 2 = 49,280 + activations 4,096 + gate/up/down 3·16·128·2 = 12,288.
        Assert.Equal(new PhaseWork(786432, 65664), Scenario.Prefill(Config, w128));
        // 2·2·3·64·128 = 98,304; 49,280 + 512 + 3·2·128·2 = 1,536.
        Assert.Equal(new PhaseWork(98304, 51328), Scenario.Decode(Config, w128));
        // LM head at the last position: 2·2·64·256 = 65,536 FLOPs.
        // Prefill bytes: 32,832 × 2 = 65,664 + embeddings out 2·2·8·64·2 = 4,096; decode: head 256·64·2 = 32,768 + 512.
        Assert.Equal(new PhaseWork(65536, 69760), Scenario.NonBlockPrefill(Config));
        Assert.Equal(new PhaseWork(65536, 33280), Scenario.NonBlockDecode(Config));
    }

    [Fact]
    public void Costs_file_adds_calibrated_blocks_and_generation_minus_one_steps()
    {
        var h100 = Accelerators.Get("h100");
        var roofline = new Dictionary<string, RooflineTimes> { ["h100"] = new(0.5, 0.25) };
        CostPhase Phase(double ms) => new(new Timing(ms, ms, ms, 3), 0, 0);
        var entry = new CostEntry(0, "L0.ffn.w1", "ffn", 1000, 2000, 0, Phase(4), Phase(1), roofline);
        var costs = new CostsFile("f", false, Scenario, "bfloat16", "bfloat16", null, [h100],
            new NonBlockCost(10, 20, Phase(2), Phase(0.5), roofline, BlockScalePrefill: 1.5, BlockScaleDecode: 2), null, [entry], 0);
        Assert.Equal(1.5 * 4 + 4 * 2 * 1, costs.BlockTimeMs(entry, "measured"));  // scaled prefill + 4 scaled steps
        Assert.Equal(2 + 4 * 0.5, costs.NonBlockTimeMs("measured"));
        Assert.Equal(0.5 + 4 * 0.25, costs.BlockTimeMs(entry, "h100"));

        // Round trip through the file, and a format this program does not read.
        string path = Path.Combine(TestSupport.TempDir(), "costs.json");
        costs.Write(path);
        var back = CostsFile.Read(path);
        Assert.Equal(costs.ToJson().ToJsonString(), back.ToJson().ToJsonString());
        // A format 1 file (no decode_steps, decode context prompt + generation / 2) still reads: same per-step times.
        var v1 = costs.ToJson();
        v1["format_version"] = 1;
        v1["scenario"]!.AsObject().Remove("decode_steps");
        v1["scenario"]!["decode_context"] = 10;
        Puzzle.IO.AtomicFile.WriteJson(path, v1);
        var old = CostsFile.Read(path);
        Assert.Equal((1, 10), (old.FormatVersion, old.DecodeContext));
        Assert.Equal(costs.BlockTimeMs(entry, "measured"), old.BlockTimeMs(old.Entries[0], "measured"));
        costs.Write(path);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"format_version\": 2", "\"format_version\": 7"));
        var e = Assert.Throws<PuzzleException>(() => CostsFile.Read(path));
        Assert.Equal($"{path}: format_version 7 is not one this program reads (1 to 2); rerun `puzzle costs`", e.Message);
    }

    [Fact]
    public void Calibrations_ScaleTheBlocks_OrAnchorOnTheParentsWhole()
    {
        // One layer: parent attention (kv 2) and FFN (128), and a no-op FFN. Timings per phase (ms): non-block 1 / 0.5,
        // attention 3 / 1, FFN 4 / 2; the parent measured whole 10 / 4.5 against parts 1 + 3 + 4 = 8 and 0.5 + 1 + 2 = 3.5.
        var parentAttention = new SubblockVariant("L0.attn.kv2", 0, SubblockKind.Attention, AttentionConfig.Gqa(2), null, true);
        var parentFfn = new SubblockVariant("L0.ffn.w1", 0, SubblockKind.Ffn, null, FfnConfig.SwiGlu(128), true);
        var noFfn = new SubblockVariant("L0.ffn.noop", 0, SubblockKind.Ffn, null, FfnConfig.NoOperation, false);
        Timing T(double ms) => new(ms, ms, ms, 3);
        var timings = new BlockTimings.Result(new Dictionary<string, (Timing, Timing)>
        {
            [BlockTimings.Key(parentAttention)] = (T(3), T(1)), [BlockTimings.Key(parentFfn)] = (T(4), T(2)), [BlockTimings.Key(noFfn)] = (Timing.None, Timing.None),
        }, (T(1), T(0.5)), (T(10), T(4.5)));
        var sc = new ScenarioSection { Batch = 2, PromptLength = 8, GenerationLength = 5 };   // a request: prefill + 4 steps
        CostsFile Costs(string method) => BlockCosts.FromTimings(Config, [parentAttention, parentFfn, noFfn], sc, CostMethod.Parse(method), timings, "", "cpu");
        string[] parent = ["L0.attn.kv2", "L0.ffn.w1"], child = ["L0.attn.kv2", "L0.ffn.noop"];
        double whole = 10 + 4 * 4.5;

        // Scaled: blocks × (10 − 1) / (8 − 1) and × (4.5 − 0.5) / (3.5 − 0.5); the child keeps attention only.
        var scaled = Costs("engine/median");
        Assert.Equal(whole, scaled.PredictTimeMs(parent, "measured"), tolerance: 1e-9);
        Assert.Equal(1 + 3 * 9 / 7.0 + 4 * (0.5 + 1 * 4 / 3.0), scaled.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        // Anchored: non-block + (whole − parts) = 1 + 2 and 0.5 + 1, blocks as timed: the child is the whole less its FFN.
        var anchored = Costs("engine/median/anchored");
        Assert.Equal("engine/median/anchored", CostMethod.Parse("engine/median/anchored").Name);
        Assert.Equal(whole, anchored.PredictTimeMs(parent, "measured"), tolerance: 1e-9);
        Assert.Equal(whole - (4 + 4 * 2), anchored.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        Assert.Equal((1.0, 1.0, 2.0, 1.0), (anchored.NonBlock.BlockScalePrefill, anchored.NonBlock.BlockScaleDecode, anchored.NonBlock.OffsetPrefillMs, anchored.NonBlock.OffsetDecodeMs));
        // Anchored where the parts exceed the whole (decode 3.5 against a whole of 3): no negative fixed cost; the decode
        // blocks are scaled by (3 − 0.5) / (3.5 − 0.5) instead, so a child never runs below its non-block time.
        var over = BlockCosts.FromTimings(Config, [parentAttention, parentFfn, noFfn], sc, CostMethod.Parse("engine/median/anchored"), timings with { Whole = (T(10), T(3)) }, "", "cpu");
        Assert.Equal((1.0, 2.5 / 3, 2.0, 0.0), (over.NonBlock.BlockScalePrefill, over.NonBlock.BlockScaleDecode, over.NonBlock.OffsetPrefillMs, over.NonBlock.OffsetDecodeMs));
        Assert.Equal(10 + 4 * 3.0, over.PredictTimeMs(parent, "measured"), tolerance: 1e-9);
        Assert.Equal(10 - 4 + 4 * (0.5 + 1 * 2.5 / 3), over.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        // Uncalibrated: the parts as timed.
        Assert.Equal(8 + 4 * 3.5, Costs("engine/median/uncalibrated").PredictTimeMs(parent, "measured"), tolerance: 1e-9);

        // A measured interaction (a layer with both sublayers costs 1 / 0.5 ms more than its two parts): a part of the
        // parent's (9 / 4 against the whole's 10 / 4.5, the offsets 1 / 0.5), charged only to a layer that keeps both.
        var paired = BlockCosts.FromTimings(Config, [parentAttention, parentFfn, noFfn], sc, CostMethod.Parse("engine/median/anchored"),
            timings with { Interaction = (1, 0.5) }, "", "cpu");
        Assert.Equal((9.0, 4.0), (paired.WholeParent!.SumOfPartsPrefillMs, paired.WholeParent.SumOfPartsDecodeMs));
        Assert.Equal((1.0, 0.5), (paired.NonBlock.OffsetPrefillMs, paired.NonBlock.OffsetDecodeMs));
        Assert.Equal(1 + 4 * 0.5, paired.PairTimeMs("measured"), tolerance: 1e-12);
        Assert.Equal(0, paired.PairTimeMs("h100"));
        Assert.Equal(whole, paired.PredictTimeMs(parent, "measured"), tolerance: 1e-9);
        Assert.Equal((1 + 1 + 3) + 4 * (0.5 + 0.5 + 1), paired.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        string pairedPath = Path.Combine(TestSupport.TempDir(), "costs.json");
        paired.Write(pairedPath);
        var reread = CostsFile.Read(pairedPath);
        Assert.Equal((1.0, 0.5), (reread.NonBlock.InteractionPrefillMs, reread.NonBlock.InteractionDecodeMs));
        Assert.Equal(paired.PredictTimeMs(child, "measured"), reread.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        // "/unpaired" (the accuracy benchmark's comparison) leaves the interaction in the whole less the parts: the
        // anchored model as it was, whatever was measured.
        var unpairedMethod = CostMethod.Parse("engine/median/anchored/unpaired");
        Assert.Equal(("engine/median/anchored/unpaired", false), (unpairedMethod.Name, unpairedMethod.Pairs));
        Assert.True(CostMethod.Parse("engine/min/anchored").Pairs);
        var unpaired = BlockCosts.FromTimings(Config, [parentAttention, parentFfn, noFfn], sc, unpairedMethod, timings with { Interaction = (1, 0.5) }, "", "cpu");
        Assert.Equal((0.0, 2.0, 1.0), (unpaired.PairTimeMs("measured"), unpaired.NonBlock.OffsetPrefillMs, unpaired.NonBlock.OffsetDecodeMs));
        Assert.Equal(anchored.PredictTimeMs(child, "measured"), unpaired.PredictTimeMs(child, "measured"), tolerance: 1e-9);
        Assert.Contains("[/unpaired]", Assert.Throws<PuzzleException>(() => CostMethod.Parse("engine/min/paired")).Message);
        // The default (benchmarks/results/busy-work-2026-12-05.md §4): engine/min, the blocks (the interaction with them)
        // scaled to the parent's whole, no fixed offset.
        Assert.Equal(("engine/min", true, false, true), (CostMethod.Default.Name, CostMethod.Default.Calibrate, CostMethod.Default.Anchor, CostMethod.Default.Pairs));

        // The offsets round-trip through costs.json; a file without them reads as 0.
        string path = Path.Combine(TestSupport.TempDir(), "costs.json");
        anchored.Write(path);
        Assert.Equal(anchored.PredictTimeMs(child, "measured"), CostsFile.Read(path).PredictTimeMs(child, "measured"), tolerance: 1e-9);
        scaled.Write(path);
        Assert.DoesNotContain("offset_prefill_ms", File.ReadAllText(path));
        var e = Assert.Throws<PuzzleException>(() => CostMethod.Parse("engine/median/shifted"));
        Assert.Contains("uncalibrated|anchored", e.Message);
    }
}
