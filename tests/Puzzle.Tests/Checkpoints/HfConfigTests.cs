using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Model;

namespace Puzzle.Tests.Checkpoints;

public sealed class HfConfigTests
{
    [Theory]
    [InlineData(28672, 8192, 5.25)]        // Llama-3.1-70B FFN
    [InlineData(14336, 4096, 5.25)]        // Llama-3.1-8B FFN
    [InlineData(1024, 384, 4.0)]
    [InlineData(512, 256, 3.0)]
    public void FfnMult_MultiplesOf256_RoundTrip(int intermediate, int hidden, double mult)
    {
        Assert.Equal(mult, HfConfig.IntermediateSizeToFfnMult(intermediate, hidden));
        Assert.Equal(intermediate, HfConfig.FfnMultToIntermediateSize(mult, hidden));
    }

    [Fact]
    public void FfnMult_RoundsUpToMultipleOf256()
    {
        // int(2 * 1.3 * 8192 / 3) = 7099 -> 7168
        Assert.Equal(7168, HfConfig.FfnMultToIntermediateSize(1.3, 8192));
    }

    [Fact]
    public void WritingNonPortableWidth_Warns_AndReadingPrefersIntermediateSize()
    {
        var child = TestSupport.TinyChildConfig();                                        // widths 160, 44, 80: not multiples of 256
        var config = child with { Blocks = [.. child.Blocks.Select((b, i) => i == 1 ? b with { Ffn = FfnConfig.SwiGlu(44) } : b)] };
        var warnings = new List<string>();
        var previous = Log.Warning;
        Log.Warning = warnings.Add;
        JsonObject json;
        try { json = HfConfig.ToDeciLm(config, "float32"); }
        finally { Log.Warning = previous; }
        Assert.Contains(warnings, w => w.Contains("layer 1: FFN intermediate size 44 is not reproducible from ffn_mult 1.03125"));
        var parsed = HfConfig.Parse(json, "test");
        Assert.Equal(config.Blocks, parsed.Blocks);
    }

    [Fact]
    public void DeciConfig_WithOnlyFfnMult_UsesEngineRule()
    {
        var json = HfConfig.ToDeciLm(TestSupport.TinyParentConfig() with { HiddenSize = 512, HeadDim = 128 }, "float32");
        foreach (var block in json["block_configs"]!.AsArray()) block!["ffn"]!.AsObject().Remove("intermediate_size");
        var parsed = HfConfig.Parse(json, "test");
        Assert.All(parsed.Blocks, b => Assert.Equal(256, b.Ffn.IntermediateSize));          // 160 -> ffn_mult 0.46875 -> 160 -> round up 256
    }

    [Fact]
    public void LlamaConfig_ReadsRopeScalingEosListAndHeadDim()
    {
        var json = JsonNode.Parse("""
        {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 2,
         "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-5,
         "rope_theta": 500000.0, "eos_token_id": [128001, 128008, 128009], "bos_token_id": 128000,
         "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
        """)!.AsObject();
        var config = HfConfig.Parse(json, "test");
        Assert.Equal(128, config.HeadDim);
        Assert.Equal(new[] { 128001, 128008, 128009 }, config.EosTokenIds);
        Assert.Equal(new RopeScaling("llama3", 8, 1, 4, 8192), config.RopeScaling);
        Assert.Equal(BlockConfig.Llama(8, 14336), config.Blocks[1]);
        Assert.True(config.IsHomogeneousLlama);
        // Llama-3.1-8B-like layer: 4096*4096*2 + 4096*1024*2 + 3*4096*14336 + 2*4096
        Assert.Equal(218_112_000L, config.BlockParameters(0));
    }

    [Fact]
    public void UnknownRopeScaling_Reported()
    {
        var json = HfConfig.ToLlama(TestSupport.TinyParentConfig(), "float32");
        json["rope_scaling"] = new JsonObject { ["rope_type"] = "yarn", ["factor"] = 4.0 };
        Assert.Contains("rope_scaling type 'yarn' is not supported", Assert.Throws<PuzzleException>(() => HfConfig.Parse(json, "test")).Message);
    }
}
