using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using static TorchSharp.torch;

namespace Puzzle.Tests.Checkpoints;

/// <summary>Bad input gets one clear error that names the file, the key and the numbers.</summary>
public sealed class BadInputTests
{
    static string SavedParent(bool tied = false)
    {
        string dir = TestSupport.TempDir();
        using var parent = TestSupport.Build(TestSupport.TinyParentConfig(tied: tied));
        Checkpoint.SaveLlama(parent, dir);
        return dir;
    }

    static void RewriteTensors(string dir, Func<List<(string Name, Tensor Tensor)>, List<(string Name, Tensor Tensor)>> edit)
    {
        string path = Path.Combine(dir, "model.safetensors");
        List<(string, Tensor)> tensors;
        using (var file = SafeTensorsFile.Open(path))
            tensors = file.Tensors.Keys.Select(k => (k, file.Read(k))).ToList();
        SafeTensorsWriter.Write(path, edit(tensors));
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        string path = Path.Combine(dir, "config.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(root);
        File.WriteAllText(path, root.ToJsonString());
    }

    static string LoadError(string dir) => Assert.Throws<PuzzleException>(() => Checkpoint.Load(dir).Dispose()).Message;

    [Fact]
    public void MissingTensor_NamesIt()
    {
        string dir = SavedParent();
        RewriteTensors(dir, t => t.Where(x => x.Name != "model.layers.1.mlp.up_proj.weight").ToList());
        string message = LoadError(dir);
        Assert.Contains("missing tensors (1): model.layers.1.mlp.up_proj.weight", message);
        Assert.Contains("model.safetensors", message);
    }

    [Fact]
    public void UnexpectedTensor_NamesIt()
    {
        string dir = SavedParent();
        RewriteTensors(dir, t => [.. t, ("model.layers.9.mlp.up_proj.weight", zeros(2, 2))]);
        Assert.Contains("unexpected tensors (1): model.layers.9.mlp.up_proj.weight", LoadError(dir));
    }

    [Fact]
    public void ShapeMismatch_GivesBothShapes()
    {
        string dir = SavedParent();
        RewriteTensors(dir, t => t.Select(x => x.Name == "model.layers.0.self_attn.k_proj.weight" ? (x.Name, zeros(64, 64)) : x).ToList());
        Assert.Contains("tensor 'model.layers.0.self_attn.k_proj.weight' has shape [64, 64] but the config needs [32, 64]", LoadError(dir));
    }

    [Fact]
    public void TiedCheckpointWithLmHead_IsAccepted()
    {
        string dir = SavedParent(tied: true);
        RewriteTensors(dir, t => [.. t, ("lm_head.weight", t.First(x => x.Name == "model.embed_tokens.weight").Tensor)]);
        Checkpoint.Load(dir).Dispose();
    }

    static string WriteRaw(byte[] bytes)
    {
        string path = Path.Combine(TestSupport.TempDir(), "bad.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static byte[] WithHeader(string header, int dataBytes, ulong? declaredLength = null)
    {
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)header.Length);
        Encoding.UTF8.GetBytes(header).CopyTo(bytes, 8);
        return bytes;
    }

    static string OpenError(byte[] bytes)
    {
        string path = WriteRaw(bytes);
        string message = Assert.Throws<PuzzleException>(() => SafeTensorsFile.Open(path).Dispose()).Message;
        Assert.Contains(path, message);
        return message;
    }

    [Fact]
    public void Truncated_File_Reported() =>
        Assert.Contains("truncated safetensors file (3 bytes", OpenError([1, 2, 3]));

    [Fact]
    public void HeaderLengthBeyondFile_Reported() =>
        Assert.Contains("header length 5000 goes beyond the file (40 bytes)", OpenError(WithHeader("{}", 30, 5000)));

    [Fact]
    public void OffsetsOutOfRange_Reported() =>
        Assert.Contains("tensor 'w': data_offsets [0, 400] are out of range (the data section holds 16 bytes)",
            OpenError(WithHeader("{\"w\":{\"dtype\":\"F32\",\"shape\":[10,10],\"data_offsets\":[0,400]}}", 16)));

    [Fact]
    public void SizeDisagreesWithShape_Reported() =>
        Assert.Contains("shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 16] hold 16",
            OpenError(WithHeader("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16)));

    [Fact]
    public void OverlappingData_Reported() =>
        Assert.Contains("tensors 'a' [0, 16] and 'b' [8, 24] overlap",
            OpenError(WithHeader("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24)));

    [Fact]
    public void CorruptHeaderJson_Reported() =>
        Assert.Contains("safetensors header: malformed JSON", OpenError(WithHeader("{\"a\":", 4)));

    [Fact]
    public void Config_HeadsNotDividingHidden_Reported()
    {
        string dir = SavedParent();
        EditConfig(dir, c => { c.Remove("head_dim"); c["num_attention_heads"] = 24; });
        string message = LoadError(dir);
        Assert.Contains("hidden_size (64) is not divisible by num_attention_heads (24)", message);
        Assert.Contains("config.json", message);
    }

    [Fact]
    public void Config_KvHeadsNotDividingHeads_Reported()
    {
        string dir = SavedParent();
        EditConfig(dir, c => c["num_key_value_heads"] = 3);
        Assert.Contains("num_key_value_heads (3) must divide num_attention_heads (4)", LoadError(dir));
    }

    [Fact]
    public void Config_Malformed_Reported()
    {
        string dir = SavedParent();
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"hidden_size\": 64,");
        Assert.Contains("config.json: malformed JSON", LoadError(dir));
    }

    [Fact]
    public void Config_MissingField_Reported()
    {
        string dir = SavedParent();
        EditConfig(dir, c => c.Remove("vocab_size"));
        Assert.Contains("required field vocab_size is missing", LoadError(dir));
    }

    [Fact]
    public void Config_WrongType_Reported()
    {
        string dir = SavedParent();
        EditConfig(dir, c => c["hidden_size"] = "sixty-four");
        Assert.Contains("hidden_size must be an integer, got \"sixty-four\"", LoadError(dir));
    }

    [Fact]
    public void DeciConfig_BlockCountMismatch_Reported()
    {
        string dir = TestSupport.TempDir();
        using (var child = TestSupport.Build(TestSupport.TinyChildConfig())) Checkpoint.SaveDeciLm(child, dir);
        EditConfig(dir, c => c["num_hidden_layers"] = 4);
        Assert.Contains("block_configs has 6 entries but num_hidden_layers is 4", LoadError(dir));
    }

    [Fact]
    public void DeciConfig_GroupNotDividingHeads_Reported()
    {
        string dir = TestSupport.TempDir();
        using (var child = TestSupport.Build(TestSupport.TinyChildConfig())) Checkpoint.SaveDeciLm(child, dir);
        EditConfig(dir, c => c["block_configs"]![0]!["attention"]!["n_heads_in_group"] = 3);
        Assert.Contains("block_configs[0].attention.n_heads_in_group (3) must divide num_attention_heads (4)", LoadError(dir));
    }

    [Fact]
    public void UnsupportedModelType_Reported()
    {
        string dir = SavedParent();
        EditConfig(dir, c => c["model_type"] = "mistral");
        Assert.Contains("model_type 'mistral' is not supported", LoadError(dir));
    }
}
