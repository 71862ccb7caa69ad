using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Model;
using Puzzle.Parents;
using Puzzle.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Puzzle.Tests.Parents;

public class RandomParentTests
{
    [Theory]
    [InlineData("llama-3.2-1b", 1_235_814_400L)]
    [InlineData("llama-3.1-8b", 8_030_261_248L)]
    [InlineData("smollm2-135m", 134_515_008L)]
    [InlineData("llama-3.1-70b", 70_553_706_496L)]
    public void Presets_have_the_published_parameter_counts(string name, long parameters)
    {
        var config = RandomParent.Preset(name);
        Assert.Equal(parameters, config.TotalParameters);
        Assert.Equal(parameters, StreamingWeights.Specs(config, ScalarType.BFloat16).Sum(s => s.Elements));
    }

    [Fact]
    public void Unknown_preset_names_the_known_ones()
    {
        var e = Assert.Throws<PuzzleException>(() => RandomParent.Preset("gpt-5"));
        Assert.Contains("llama-3.2-1b", e.Message);
    }

    [Fact]
    public void A_tiny_config_becomes_a_sharded_parent_that_loads_with_its_tokenizer()
    {
        string dir = TestSupport.TempDir();
        string configPath = Path.Combine(dir, "shape.json");
        File.WriteAllText(configPath, """
            {"model_type": "llama", "vocab_size": 700, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": true, "rope_theta": 500000.0,
             "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
             "max_position_embeddings": 512}
            """);
        var shape = RandomParent.FromConfigFile(configPath);
        string outA = Path.Combine(dir, "a"), outB = Path.Combine(dir, "b");
        var result = RandomParent.Write(shape, outA, ScalarType.BFloat16, seed: 3, maxShardBytes: 40_000, log: _ => { });
        RandomParent.Write(shape, outB, ScalarType.BFloat16, seed: 3, maxShardBytes: 40_000, log: _ => { });

        Assert.True(result.Files > 1);
        Assert.True(File.Exists(Path.Combine(outA, Checkpoint.IndexFile)));
        var config = HfConfig.Read(outA);
        Assert.Equal("bfloat16", config.TorchDtype);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal(new RopeScaling("llama3", 32, 1, 4, 64), config.RopeScaling);
        Assert.Equal(700, config.VocabSize);

        using var model = Checkpoint.Load(outA);
        Assert.Equal(shape.TotalParameters, model.parameters().Sum(p => p.NumberOfElements));
        var embed = model.Model.EmbedTokens.Weight;
        Assert.InRange(embed.std().item<float>(), 0.018, 0.022);
        Assert.Equal(1.0f, model.Model.Norm.Weight.min().item<float>());

        // Same seed, same bytes; each shard is deterministic.
        foreach (string file in Directory.GetFiles(outA, "*.safetensors"))
            Assert.Equal(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(outB, Path.GetFileName(file))));

        using var tokenizer = TextTokenizer.Load(outA);
        Assert.Equal(700, tokenizer.VocabSize);
        Assert.Equal(config.BosTokenId, tokenizer.BosId);
        string text = "the quick brown fox, 42 times!";
        var ids = tokenizer.Encode(text, addBos: false);
        Assert.True(ids.Length < System.Text.Encoding.UTF8.GetByteCount(text), "merges shorten common text");
        Assert.All(ids, id => Assert.InRange(id, 0, 699));
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Synthetic_merges_are_distinct_and_build_on_earlier_tokens()
    {
        var merges = RandomParent.SyntheticMerges(20_000);
        var tokens = BpeTrainer.TokenStrings(merges);
        Assert.Equal(256 + 20_000, tokens.Distinct().Count());
        for (int i = 0; i < merges.Count; i++) Assert.True(merges[i].Left < 256 + i && merges[i].Right < 256 + i);
    }

    [Fact]
    public void Streamed_writer_rejects_a_short_producer()
    {
        string dir = TestSupport.TempDir();
        var spec = new TensorSpec("w", ScalarType.Float32, [4, 3]);
        var e = Assert.Throws<PuzzleException>(() => StreamingWeights.Write(Path.Combine(dir, "x.safetensors"), [spec], _ => [zeros(2, 3)]));
        Assert.Contains("needs 12 values but 6", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, "x.safetensors")));
    }
}
