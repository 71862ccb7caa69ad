using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Tests.Checkpoints;

public sealed class CheckpointTests
{
    static Tensor Logits(CausalLm model)
    {
        using var noGrad = no_grad();
        return model.Forward(TestSupport.RandomIds(2, 9, 96, seed: 4));
    }

    [Fact]
    public void ParentWrittenAsDeciLm_ReadBack_IdenticalLogits()
    {
        string dir = TestSupport.TempDir();
        using var parent = TestSupport.Build(TestSupport.TinyParentConfig(layers: 3));
        Checkpoint.SaveDeciLm(parent, dir);
        using var loaded = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        Assert.Equal(0, TestSupport.MaxAbsDiff(Logits(parent), Logits(loaded)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("nemotron-nas", config["model_type"]!.GetValue<string>());
        Assert.Equal("DeciLMForCausalLM", config["architectures"]![0]!.GetValue<string>());
        Assert.Null(config["intermediate_size"]);
        Assert.Null(config["num_key_value_heads"]);
        Assert.Equal(3, config["block_configs"]!.AsArray().Count);
    }

    [Fact]
    public void ParentWrittenAsLlama_ReadBack_IdenticalLogits()
    {
        string dir = TestSupport.TempDir();
        using var parent = TestSupport.Build(TestSupport.TinyParentConfig(tied: true));
        Checkpoint.SaveLlama(parent, dir);
        using var loaded = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        Assert.Equal(0, TestSupport.MaxAbsDiff(Logits(parent), Logits(loaded)));
        Assert.Equal("llama", JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["model_type"]!.GetValue<string>());
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.DoesNotContain("lm_head.weight", file.Tensors.Keys);                       // tied: stored once
    }

    [Fact]
    public void HeterogeneousChild_RoundTrip_IdenticalLogitsAndNoTensorsForNoOps()
    {
        string dir = TestSupport.TempDir();
        var config = TestSupport.TinyChildConfig();
        using var child = TestSupport.Build(config);
        Checkpoint.SaveDeciLm(child, dir);
        using var loaded = Checkpoint.Load(dir);
        Assert.Equal(config.Blocks, loaded.Config.Blocks);
        using var scope = NewDisposeScope();
        Assert.Equal(0, TestSupport.MaxAbsDiff(Logits(child), Logits(loaded)));

        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.DoesNotContain(file.Tensors.Keys, k => k.StartsWith("model.layers.5.", StringComparison.Ordinal));   // both no-op
        Assert.DoesNotContain("model.layers.3.input_layernorm.weight", file.Tensors.Keys);                       // no-op attention: no norm
        Assert.DoesNotContain("model.layers.4.post_attention_layernorm.weight", file.Tensors.Keys);              // no-op FFN: no norm
        Assert.Equal([64L, 64], file.Tensors["model.layers.2.self_attn.linear_attn.weight"].Shape);
        Assert.Equal([64L, 64], file.Tensors["model.layers.2.mlp.linear_mlp.weight"].Shape);
        Assert.Equal([48L, 64], file.Tensors["model.layers.1.mlp.gate_proj.weight"].Shape);
        Assert.Equal([16L, 64], file.Tensors["model.layers.1.self_attn.k_proj.weight"].Shape);

        var blocks = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["block_configs"]!.AsArray();
        Assert.Equal(4, blocks[1]!["attention"]!["n_heads_in_group"]!.GetValue<int>());                          // 4 heads / 1 KV head
        Assert.Null(blocks[2]!["attention"]!["n_heads_in_group"]);
        Assert.True(blocks[2]!["attention"]!["replace_with_linear"]!.GetValue<bool>());
        Assert.True(blocks[3]!["attention"]!["no_op"]!.GetValue<bool>());
        Assert.Null(blocks[5]!["ffn"]!["ffn_mult"]);
        Assert.Equal(48, blocks[1]!["ffn"]!["intermediate_size"]!.GetValue<int>());
        Assert.Equal(1.125, blocks[1]!["ffn"]!["ffn_mult"]!.GetValue<double>());                                  // 3*48/(2*64)
    }

    [Fact]
    public void SaveBf16_ReadBack_EqualsBf16RoundedWeights()
    {
        string dir = TestSupport.TempDir();
        using var child = TestSupport.Build(TestSupport.TinyChildConfig());
        Checkpoint.SaveDeciLm(child, dir, ScalarType.BFloat16);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.All(file.Tensors.Values, t => Assert.Equal("BF16", t.Dtype));
        Assert.Equal("bfloat16", JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["torch_dtype"]!.GetValue<string>());
        using var loaded = Checkpoint.Load(dir);
        foreach (var ((name, original), (_, read)) in child.named_parameters().Zip(loaded.named_parameters()))
        {
            using var rounded = original.to(ScalarType.BFloat16).to(ScalarType.Float32);
            Assert.True(TestSupport.MaxAbsDiff(rounded, read) == 0, name);
        }
    }

    [Fact]
    public void Float16Checkpoint_LoadsIntoFloat32Model()
    {
        string dir = TestSupport.TempDir();
        using var parent = TestSupport.Build(TestSupport.TinyParentConfig());
        Checkpoint.SaveDeciLm(parent, dir, ScalarType.Float16);
        using var loaded = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        Assert.True(TestSupport.MaxAbsDiff(Logits(parent), Logits(loaded)) < 1e-2);
    }

    [Fact]
    public void ShardedSave_WritesIndex_AndLoadsIdentically()
    {
        string dir = TestSupport.TempDir();
        using var child = TestSupport.Build(TestSupport.TinyChildConfig());
        Checkpoint.SaveDeciLm(child, dir, maxShardBytes: 40_000);
        var shards = Directory.GetFiles(dir, "model-*-of-*.safetensors");
        Assert.True(shards.Length > 2, $"{shards.Length} shards");
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, Checkpoint.IndexFile)))!;
        Assert.Equal(child.parameters().Count(), index["weight_map"]!.AsObject().Count);
        using var loaded = Checkpoint.Load(dir);
        using var scope = NewDisposeScope();
        Assert.Equal(0, TestSupport.MaxAbsDiff(Logits(child), Logits(loaded)));
    }

    [Fact]
    public void SafeTensors_HeaderIsEightByteAligned_AndUnalignedFilesStillRead()
    {
        string dir = TestSupport.TempDir();
        using var scope = NewDisposeScope();
        var a = arange(6, dtype: ScalarType.Float32).view(2, 3);
        var b = arange(5, dtype: ScalarType.Float32).to(ScalarType.BFloat16);
        string aligned = Path.Combine(dir, "aligned.safetensors");
        SafeTensorsWriter.Write(aligned, [("a", a), ("b", b)]);
        Assert.Equal(0UL, BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(aligned).AsSpan(0, 8)) % 8);

        // A writer that does not pad (e.g. TorchSharp.PyBridge) leaves data at odd offsets.
        string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"b\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[24,34]}}";
        Assert.NotEqual(0, header.Length % 4);
        string unaligned = Path.Combine(dir, "unaligned.safetensors");
        using (var stream = File.Create(unaligned))
        {
            var length = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
            stream.Write(length);
            stream.Write(Encoding.UTF8.GetBytes(header));
            stream.Write(a.bytes);
            stream.Write(b.bytes);
        }
        using var file = SafeTensorsFile.Open(unaligned);
        Assert.Equal(0, TestSupport.MaxAbsDiff(a, file.Read("a")));
        Assert.Equal(0, TestSupport.MaxAbsDiff(b, file.Read("b")));
    }

    [Fact]
    public void TokenizerFiles_AreCopiedNextToWeights()
    {
        string source = TestSupport.TempDir(), dir = TestSupport.TempDir();
        File.WriteAllText(Path.Combine(source, "tokenizer.json"), "{}");
        File.WriteAllText(Path.Combine(source, "tokenizer_config.json"), "{\"add_bos_token\": true}");
        using var parent = TestSupport.Build(TestSupport.TinyParentConfig());
        Checkpoint.SaveDeciLm(parent, dir, tokenizerDir: source);
        Assert.Equal("{}", File.ReadAllText(Path.Combine(dir, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer_config.json")));
        Assert.True(File.Exists(Path.Combine(dir, "generation_config.json")));
    }

    [Theory]
    [InlineData("tiny-parent.keys.txt", false)]
    [InlineData("tiny-child.keys.txt", true)]
    public void StateDictListing_MatchesCheckedInGolden(string golden, bool child)
    {
        // Built on the meta device: names and shapes without allocating weights.
        var config = child ? TestSupport.TinyChildConfig() : TestSupport.TinyParentConfig();
        using var model = new CausalLm(config, META, ScalarType.Float32);
        string expected = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Golden", golden)).ReplaceLineEndings("\n").TrimEnd();
        string actual = string.Join("\n", model.StateDictListing());
        Assert.Equal(expected, actual);
    }
}
