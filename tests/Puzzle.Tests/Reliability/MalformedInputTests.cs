using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Data;

namespace Puzzle.Tests.Reliability;

/// <summary>
/// Shared inputs of the malformed-input corpus: a prepared data folder tokenized with stories260K's tokenizer and a
/// short text. Each case works on its own copy of stories260K-hf, so cases never see each other's damage.
/// </summary>
public sealed class CorpusFixture
{
    public string? Stories { get; }
    public string Work { get; } = TestSupport.TempDir();
    public string Text { get; } = "";
    public string DataDir { get; } = "";

    public CorpusFixture()
    {
        string? shared = TestSupport.SharedDir();
        string stories = shared is null ? "" : Path.Combine(shared, "models", "stories260K-hf");
        string tiny = shared is null ? "" : Path.Combine(shared, "data", "tinystories-val.txt");
        if (!Directory.Exists(stories) || !File.Exists(tiny)) return;
        Stories = stories;
        Text = Path.Combine(Work, "text.txt");
        File.WriteAllText(Text, File.ReadAllText(tiny)[..20_000]);
        DataDir = Path.Combine(Work, "data");
        DataPreparer.Prepare(new DataPrepareOptions { TokenizerDir = stories, Inputs = [Text], OutDir = DataDir, SeqLen = 32, ValidationFraction = 0.1 }, _ => { });
    }
}

/// <summary>
/// The malformed-input corpus (issue 15): every case is generated here from stories260K-hf and tiny data and run
/// through the real `puzzle` entry point in this process. Each must exit non-zero with exactly one "error:" line on
/// stderr (the last line) that names the file or option, the field and the number, with no stack trace, in time.
/// </summary>
public sealed class MalformedInputTests(CorpusFixture fixture) : IClassFixture<CorpusFixture>
{
    public sealed record Case(string Name, Func<CorpusFixture, string[]> Setup, params string[] Expected)
    {
        public override string ToString() => Name;
    }

    // ---- helpers that make damaged inputs ----

    static string Copy(CorpusFixture f)
    {
        string dir = TestSupport.TempDir();
        foreach (string file in Directory.GetFiles(f.Stories!)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        return dir;
    }

    static string Weights(string dir) => Path.Combine(dir, "model.safetensors");

    /// <summary>Rewrites a safetensors header's text, keeping the data section as it is.</summary>
    static void EditHeaderText(string file, Func<string, string> edit)
    {
        byte[] bytes = File.ReadAllBytes(file);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        byte[] header = Encoding.UTF8.GetBytes(edit(Encoding.UTF8.GetString(bytes, 8, n)));
        using var stream = File.Create(file);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        stream.Write(bytes, 8 + n, bytes.Length - 8 - n);
    }

    static void EditHeader(string file, Action<JsonObject> edit) => EditHeaderText(file, text =>
    {
        var root = JsonNode.Parse(text)!.AsObject();
        edit(root);
        return root.ToJsonString();
    });

    /// <summary>Overwrites the first float of a tensor's data with <paramref name="value"/>.</summary>
    static void PokeFloat(string file, string tensor, float value)
    {
        byte[] bytes = File.ReadAllBytes(file);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        long begin = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, n))![tensor]!["data_offsets"]![0]!.GetValue<long>();
        BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(8 + n + begin)), value);
        File.WriteAllBytes(file, bytes);
    }

    static void EditJson(string path, Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(root);
        File.WriteAllText(path, root.ToJsonString());
    }

    static void Truncate(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
    }

    static string[] Perplexity(CorpusFixture f, string model) => ["perplexity", model, "--text", f.Text, "--max-tokens", "64"];

    /// <summary>A copy of stories260K whose <paramref name="file"/> is edited, checked by `perplexity`.</summary>
    static Func<CorpusFixture, string[]> Model(Action<string> damage) => f =>
    {
        string dir = Copy(f);
        damage(dir);
        return Perplexity(f, dir);
    };

    static Func<CorpusFixture, string[]> Config(Action<JsonObject> edit) => Model(dir => EditJson(Path.Combine(dir, "config.json"), edit));

    static Func<CorpusFixture, string[]> Header(Action<JsonObject> edit) => Model(dir => EditHeader(Weights(dir), edit));

    static string WriteText(string content)
    {
        string path = Path.Combine(TestSupport.TempDir(), "bad.txt");
        File.WriteAllText(path, content);
        return path;
    }

    /// <summary>`puzzle run` with a config built from the fixture's parent and data, then edited.</summary>
    static Func<CorpusFixture, string[]> Run(Action<JsonObject> edit, string extension = ".json") => f =>
    {
        var config = new RunConfig
        {
            Parent = new ParentSection { Path = f.Stories! },
            Data = new DataSection { Path = f.DataDir },
        }.ToJson();
        edit(config);
        string path = Path.Combine(TestSupport.TempDir(), "run" + extension);
        File.WriteAllText(path, config.ToJsonString());
        return ["run", path, "--run", TestSupport.TempDir()];
    };

    static Func<CorpusFixture, string[]> RunYaml(string yaml) => _ =>
    {
        string path = Path.Combine(TestSupport.TempDir(), "run.yaml");
        File.WriteAllText(path, yaml);
        return ["run", path, "--run", TestSupport.TempDir()];
    };

    /// <summary>A copy of the prepared data with its manifest edited (or replaced), for `pretrain`.</summary>
    static string DataCopy(CorpusFixture f, Action<string> damage)
    {
        string dir = TestSupport.TempDir();
        foreach (string file in Directory.GetFiles(f.DataDir)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        damage(Path.Combine(dir, DataManifest.FileName));
        return dir;
    }

    static string[] Pretrain(string data, params string[] extra) =>
        ["pretrain", "--data", data, "--out", TestSupport.TempDir(), "--preset", "tiny", .. extra.Contains("--tokens") ? extra : [.. extra, "--tokens", "64"]];

    static Func<CorpusFixture, string[]> PretrainWithManifest(Action<string> damage) => f => Pretrain(DataCopy(f, damage));

    /// <summary>A run directory (config only) with a stage artifact written by <paramref name="write"/>.</summary>
    static string RunDirectoryWith(CorpusFixture f, Action<string> write)
    {
        string run = TestSupport.TempDir();
        new RunConfig { Parent = new ParentSection { Path = f.Stories! }, Data = new DataSection { Path = f.DataDir } }.Save(Path.Combine(run, RunConfig.FileName));
        write(run);
        return run;
    }

    const string ScoresJson = """{"format_version":1,"fingerprint":"x","mode":"composed","tokens":8,"parent_lm_loss":1.0,"candidates_total":1,"complete":true,"entries":[{"layer":0,"attention":"a","ffn":"f","kl":0.1,"lm_loss":1.0,"top1_agreement":0.9,"tokens":8}]}""";

    public static readonly Case[] Cases =
    [
        // ---- safetensors ----
        new("safetensors dtype is a number", Header(h => h["model.embed_tokens.weight"]!["dtype"] = 5), "model.safetensors", "model.embed_tokens.weight.dtype must be a string, got 5"),
        new("safetensors shape holds strings", Header(h => h["model.norm.weight"]!["shape"] = new JsonArray("64")), "model.norm.weight.shape[0] must be an integer, got \"64\""),
        new("safetensors shape holds floats", Header(h => h["model.norm.weight"]!["shape"] = new JsonArray(64.5)), "model.norm.weight.shape[0] must be an integer, got 64.5"),
        new("safetensors data_offsets are strings", Header(h => h["model.norm.weight"]!["data_offsets"] = new JsonArray("0", "256")), "model.norm.weight.data_offsets[0] must be an integer"),
        new("safetensors data_offsets has one number", Header(h => h["model.norm.weight"]!["data_offsets"] = new JsonArray(0)), "model.norm.weight.data_offsets must be [begin, end]"),
        new("safetensors entry is a string", Header(h => h["model.norm.weight"] = "x"), "model.norm.weight must be an object, got \"x\""),
        new("safetensors shape missing", Header(h => h["model.norm.weight"]!.AsObject().Remove("shape")), "model.norm.weight.shape is missing"),
        new("safetensors duplicate tensor key", Model(dir => EditHeaderText(Weights(dir), t => t.Replace("{\"__metadata__\"", "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},\"__metadata__\""))), "duplicate key 'model.norm.weight'"),
        new("safetensors I32 declared over F32 bytes", Header(h => h["model.norm.weight"]!["dtype"] = "I32"), "tensor 'model.norm.weight' is stored as I32"),
        new("safetensors unknown dtype", Header(h => h["model.norm.weight"]!["dtype"] = "F8"), "tensor 'model.norm.weight' has unsupported dtype 'F8'"),
        new("safetensors shape product overflows", Header(h => h["extra"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(1L << 40, 1L << 40), ["data_offsets"] = new JsonArray(0, 0) }), "tensor 'extra': shape [1099511627776, 1099511627776] overflows"),
        new("safetensors shape disagrees with the bytes", Header(h => h["model.norm.weight"]!["shape"] = new JsonArray(65)), "shape [65] of F32 needs 260 bytes but data_offsets [", "hold 256"),
        new("safetensors negative dimension", Header(h => h["model.norm.weight"]!["shape"] = new JsonArray(-64)), "negative dimension in shape [-64]"),
        new("safetensors offsets past the data", Header(h => h["model.norm.weight"]!["data_offsets"] = new JsonArray(0, 1L << 40)), "data_offsets [0, 1099511627776] are out of range"),
        new("safetensors truncated", Model(dir => Truncate(Weights(dir))), "model.safetensors", "out of range"),
        new("safetensors empty file", Model(dir => File.WriteAllBytes(Weights(dir), [])), "truncated safetensors file (0 bytes"),
        new("safetensors header length past the file", Model(dir => { var b = File.ReadAllBytes(Weights(dir)); BinaryPrimitives.WriteUInt64LittleEndian(b, 1UL << 40); File.WriteAllBytes(Weights(dir), b); }), "header length 1099511627776 goes beyond the file"),
        new("safetensors header not JSON", Model(dir => EditHeaderText(Weights(dir), t => "{" + new string(' ', t.Length - 1))), "safetensors header: malformed JSON"),
        new("safetensors NaN weight", Model(dir => PokeFloat(Weights(dir), "model.layers.1.mlp.up_proj.weight", float.NaN)), "tensor 'model.layers.1.mlp.up_proj.weight' holds 1 non-finite values"),
        new("safetensors infinite weight", Model(dir => PokeFloat(Weights(dir), "model.norm.weight", float.PositiveInfinity)), "tensor 'model.norm.weight' holds 1 non-finite values"),
        new("safetensors shape swapped", Header(h => h["model.layers.0.mlp.down_proj.weight"]!["shape"] = new JsonArray(172, 64)), "tensor 'model.layers.0.mlp.down_proj.weight' has shape [172, 64] but the config needs [64, 172]"),
        new("safetensors tensor missing", Header(h => h.Remove("model.norm.weight")), "missing tensors (1): model.norm.weight"),
        // ---- shard index ----
        new("index maps a tensor to a shard that lacks it", Model(dir =>
        {
            string one = Path.Combine(dir, "model-00001-of-00002.safetensors"), two = Path.Combine(dir, "model-00002-of-00002.safetensors");
            File.Move(Weights(dir), one);
            File.Copy(one, two);
            EditHeader(two, h => h.Remove("model.norm.weight"));
            var map = new JsonObject();
            foreach (string name in ReadNames(one)) map[name] = name == "model.norm.weight" ? Path.GetFileName(two) : Path.GetFileName(one);
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        }), "model-00002-of-00002.safetensors: has no tensor 'model.norm.weight'"),
        new("index names a missing shard", Model(dir => File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), """{"weight_map":{"model.norm.weight":"nowhere.safetensors"}}""")), "weight_map['model.norm.weight'] names nowhere.safetensors, which does not exist"),
        new("index truncated", Model(dir => File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), """{"weight_map":{"model.norm.weight":"mod""")), "model.safetensors.index.json: malformed JSON"),
        new("index weight_map is a number", Model(dir => File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), """{"weight_map":5}""")), "model.safetensors.index.json: weight_map must be an object, got 5"),
        new("index shard name is a number", Model(dir => File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), """{"weight_map":{"model.norm.weight":7}}""")), "weight_map.model.norm.weight must be a string, got 7"),
        // ---- config.json ----
        new("config tie_word_embeddings is a string", Config(c => c["tie_word_embeddings"] = "yes"), "config.json: tie_word_embeddings must be true or false, got \"yes\""),
        new("config hidden_act is a number", Config(c => c["hidden_act"] = 1), "config.json: hidden_act must be a string, got 1"),
        new("config torch_dtype is a number", Config(c => c["torch_dtype"] = 32), "config.json: torch_dtype must be a string, got 32"),
        new("config model_type is a number", Config(c => c["model_type"] = 5), "config.json: model_type must be a string, got 5"),
        new("config hidden_size is a string", Config(c => c["hidden_size"] = "64"), "config.json: hidden_size must be an integer, got \"64\""),
        new("config vocab_size 0", Config(c => c["vocab_size"] = 0), "config.json: vocab_size must be positive, got 0"),
        new("config num_attention_heads 0", Config(c => c["num_attention_heads"] = 0), "num_attention_heads must be positive, got 0"),
        new("config 100000 layers", Config(c => c["num_hidden_layers"] = 100_000), "num_hidden_layers (100000) is more than the 1024 supported"),
        new("config vocab 10^9", Config(c => c["vocab_size"] = 1_000_000_000), "vocab_size 1000000000", "GiB of memory"),
        new("config max_position_embeddings -1", Config(c => c["max_position_embeddings"] = -1), "max_position_embeddings must be positive, got -1"),
        new("config rope_scaling is a string", Config(c => c["rope_scaling"] = "x"), "rope_scaling must be an object or null"),
        new("config eos_token_id past the vocabulary", Config(c => c["eos_token_id"] = 9999), "eos_token_id (9999) is outside the vocabulary (vocab_size 512)"),
        new("config unsupported hidden_act", Config(c => c["hidden_act"] = "gelu"), "hidden_act 'gelu' is not supported"),
        new("config truncated", Model(dir => Truncate(Path.Combine(dir, "config.json"))), "config.json: malformed JSON"),
        new("config duplicate key", Model(dir => File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(dir, "config.json")).Replace("\"hidden_size\": 64", "\"hidden_size\": 64, \"hidden_size\": 32"))), "config.json: duplicate key 'hidden_size'"),
        new("config is an array", Model(dir => File.WriteAllText(Path.Combine(dir, "config.json"), "[]")), "config.json: expected a JSON object at the top, got []"),
        new("DeciLM block both no_op and replace_with_linear", Config(c =>
        {
            c["model_type"] = "nemotron-nas";
            c["block_configs"] = new JsonArray(Enumerable.Range(0, 5).Select(i => (JsonNode)new JsonObject
            {
                ["attention"] = new JsonObject { ["n_heads_in_group"] = 2, ["no_op"] = i == 3, ["replace_with_linear"] = i == 3 },
                ["ffn"] = new JsonObject { ["intermediate_size"] = 172 },
            }).ToArray());
        }), "block_configs[3].attention sets both no_op and replace_with_linear"),
        new("generation_config truncated", Model(dir => File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"bos_token_id\": 1,")), "generation_config.json: malformed JSON"),
        // ---- tokenizer files ----
        new("tokenizer.json truncated", Model(dir => Truncate(Path.Combine(dir, "tokenizer.json"))), "tokenizer.json: malformed JSON"),
        new("tokenizer added token without content", Model(dir => EditJson(Path.Combine(dir, "tokenizer.json"), t => t["added_tokens"]![1]!.AsObject().Remove("content"))), "tokenizer.json: added_tokens[1].content is missing"),
        new("tokenizer added token id is a string", Model(dir => EditJson(Path.Combine(dir, "tokenizer.json"), t => t["added_tokens"]![1]!["id"] = "1")), "tokenizer.json: added_tokens[1].id must be an integer, got \"1\""),
        new("tokenizer_config add_bos_token is a string", Model(dir => EditJson(Path.Combine(dir, "tokenizer_config.json"), t => t["add_bos_token"] = "yes")), "tokenizer_config.json: add_bos_token must be true or false, got \"yes\""),
        // ---- text, generation, perplexity ----
        new("perplexity of non-UTF-8 text", f => ["perplexity", f.Stories!, "--text", WriteBytes([0x4f, 0x6e, 0x63, 0x65, 0xff, 0xfe, 0x20, 0x75])], "not UTF-8 text (invalid byte 0xFF at offset 4)"),
        new("perplexity of an empty text", f => ["perplexity", f.Stories!, "--text", WriteText("")], "holds 1 tokens; perplexity needs at least 2"),
        new("perplexity --max-tokens 1", f => ["perplexity", f.Stories!, "--text", f.Text, "--max-tokens", "1"], "--max-tokens must be at least 2, got 1"),
        new("perplexity text missing", f => ["perplexity", f.Stories!, "--text", "/nonexistent/t.txt"], "/nonexistent/t.txt: text file not found"),
        new("generate --top-p NaN", f => ["generate", f.Stories!, "--prompt", "Once", "--top-p", "NaN"], "--top-p must be in (0, 1], got NaN"),
        new("generate --top-p 0", f => ["generate", f.Stories!, "--prompt", "Once", "--top-p", "0"], "--top-p must be in (0, 1], got 0"),
        new("generate --temperature -1", f => ["generate", f.Stories!, "--prompt", "Once", "--temperature", "-1"], "--temperature must be a finite number >= 0, got -1"),
        new("generate --max-new-tokens 10^7", f => ["generate", f.Stories!, "--prompt", "Once", "--max-new-tokens", "10000000"], "+ --max-new-tokens (10000000) = 10000002 positions is past", "(max_position_embeddings 512)"),
        new("generate --max-new-tokens 0", f => ["generate", f.Stories!, "--prompt", "Once", "--max-new-tokens", "0"], "--max-new-tokens must be positive, got 0"),
        new("generate past position 512", f => ["generate", f.Stories!, "--prompt", "Once", "--max-new-tokens", "600"], "(max_position_embeddings 512)"),
        new("generate a 100,000-character prompt", f => ["generate", f.Stories!, "--prompt", string.Concat(Enumerable.Repeat("Once upon a time. ", 5556)), "--max-new-tokens", "4"], "positions is past", "(max_position_embeddings 512)"),
        // ---- tokenizer training ----
        new("tokenizer train on a binary file", _ => ["tokenizer", "train", "--input", WriteBytes(Enumerable.Range(0, 4096).Select(i => (byte)(0x80 + i % 64)).ToArray()), "--vocab-size", "300", "--out", TestSupport.TempDir()], "bad.txt", "no usable text"),
        new("tokenizer train without repeated pairs", _ => ["tokenizer", "train", "--input", WriteText("a b c d e f g"), "--vocab-size", "300", "--out", TestSupport.TempDir()], "supports 0 merges"),
        new("tokenizer train --vocab-size 10", f => ["tokenizer", "train", "--input", f.Text, "--vocab-size", "10", "--out", TestSupport.TempDir()], "--vocab-size must exceed the 256 byte tokens and 2 special tokens, got 10"),
        // ---- pretraining flags ----
        new("pretrain --tokens 0", f => Pretrain(f.DataDir, "--tokens", "0"), "--tokens must be positive, got 0"),
        new("pretrain --tokens -100", f => Pretrain(f.DataDir, "--tokens", "-100"), "--tokens must be positive, got -100"),
        new("pretrain --lr -1", f => Pretrain(f.DataDir, "--lr", "-1"), "--lr must be positive, got -1"),
        new("pretrain --lr NaN", f => Pretrain(f.DataDir, "--lr", "NaN"), "--lr must be positive, got NaN"),
        new("pretrain --batch 0", f => Pretrain(f.DataDir, "--batch", "0"), "--batch must be positive, got 0"),
        new("pretrain --checkpoint-every 0", f => Pretrain(f.DataDir, "--checkpoint-every", "0"), "--checkpoint-every must be positive, got 0"),
        new("pretrain --heads 0", f => ["pretrain", "--data", f.DataDir, "--out", TestSupport.TempDir(), "--layers", "1", "--hidden", "16", "--heads", "0", "--kv-heads", "1", "--intermediate", "32"], "--heads must be positive, got 0"),
        // ---- data manifest ----
        new("data manifest {}", PretrainWithManifest(m => File.WriteAllText(m, "{}")), "manifest.json: splits is missing"),
        new("data manifest null", PretrainWithManifest(m => File.WriteAllText(m, "null")), "manifest.json: expected a JSON object at the top, got null"),
        new("data manifest seq_len 0", PretrainWithManifest(m => EditJson(m, j => j["seq_len"] = 0)), "manifest.json: seq_len must be at least 2, got 0"),
        new("data manifest truncated", PretrainWithManifest(Truncate), "manifest.json: malformed JSON"),
        new("data manifest tokens are strings", PretrainWithManifest(m => EditJson(m, j => j["splits"]!["train"]!["tokens"] = "many")), "manifest.json: splits.train.tokens must be an integer, got \"many\""),
        // ---- run configs ----
        new("run format_version 99", Run(c => c["format_version"] = 99), "format_version must be 1 (the only version this build reads), got 99"),
        new("run gkd.temperature 0", Run(c => c["gkd"]!["temperature"] = 0), "gkd.temperature must be a positive number, got 0"),
        new("run scoring.batch 0", Run(c => c["scoring"]!["batch"] = 0), "scoring.batch must be a positive number, got 0"),
        new("run bld.batch 0", Run(c => c["bld"]!["batch"] = 0), "bld.batch must be a positive number, got 0"),
        new("run gkd.batch 0", Run(c => c["gkd"]!["batch"] = 0), "gkd.batch must be a positive number, got 0"),
        new("run search.solutions 0", Run(c => c["search"]!["solutions"] = 0), "search.solutions must be at least 1, got 0"),
        new("run data.seq_len 0", Run(c => c["data"]!["seq_len"] = 0), "data.seq_len must be a positive number, got 0"),
        new("run bld.lr -1", Run(c => c["bld"]!["lr"] = -1), "bld.lr must be a positive number, got -1"),
        new("run scenario.batch as a string", Run(c => c["scenario"]!["batch"] = "16"), "'scenario.batch' has the wrong type"),
        new("run unknown key", Run(c => c["bld"]!["lr_typo"] = 1), "unknown key 'bld.lr_typo'"),
        new("run duplicate YAML key", RunYaml("parent:\n  path: x\nbld:\n  lr: 0.1\n  lr: 0.2\n"), "run.yaml", "duplicate key"),
        new("run duplicate JSON key", f => { string p = Path.Combine(TestSupport.TempDir(), "run.json"); File.WriteAllText(p, "{\"bld\": {\"lr\": 0.1, \"lr\": 0.2}}"); return ["run", p, "--run", TestSupport.TempDir()]; }, "run.json: duplicate key 'bld.lr'"),
        new("run data.path tokenized with a larger vocabulary", f => Run(c => c["data"]!["path"] = DataCopy(f, m => EditJson(m, j => j["tokenizer"]!["vocab_size"] = 100_000)))(f), "tokenizer.vocab_size 100000 is larger than the parent's vocab_size 512"),
        new("run data.path tokenized with another tokenizer", f => Run(c => c["data"]!["path"] = DataCopy(f, m => EditJson(m, j => j["tokenizer"]!["sha256"] = new string('a', 64))))(f), "tokenizer.sha256 aaaaaaaaaaaa… is not the parent's tokenizer"),
        // ---- run-directory artifacts read by stage commands ----
        new("search with truncated scores.json", f => ["search", "--run", RunDirectoryWith(f, r => { File.WriteAllText(Path.Combine(r, "scores.json"), ScoresJson[..40]); File.WriteAllText(Path.Combine(r, "costs.json"), "{}"); }), "--target", "h100"], "scores.json: malformed JSON"),
        new("search with a costs.json missing fields", f => ["search", "--run", RunDirectoryWith(f, r => { File.WriteAllText(Path.Combine(r, "scores.json"), ScoresJson); File.WriteAllText(Path.Combine(r, "costs.json"), """{"format_version":2,"scenario":{"batch":4,"generation_length":8,"prompt_length":8},"non_block":{}}"""); }), "--target", "h100"], "costs.json: scenario.weight_bytes is missing"),
        new("search --solutions 0", f => ["search", "--run", RunDirectoryWith(f, _ => { }), "--solutions", "0"], "--solutions must be positive, got 0"),
        new("search --max-overshoot 0", f => ["search", "--run", RunDirectoryWith(f, _ => { }), "--max-overshoot", "0"], "search.max_overshoot must be a positive number, got 0"),
        new("search --measured-checks -1", f => ["search", "--run", RunDirectoryWith(f, _ => { }), "--measured-checks", "-1"], "--measured-checks must be 0 or more, got -1"),
        new("assemble with truncated solutions/child.json", f => ["assemble", "--run", RunDirectoryWith(f, r => { Directory.CreateDirectory(Path.Combine(r, "solutions")); File.WriteAllText(Path.Combine(r, "solutions", "child.json"), "{\"layers\": [{\"attention\""); }), "--solution", "child", "--out", TestSupport.TempDir()], "child.json: malformed JSON"),
        new("report with truncated eval.json", f => ["report", "--run", RunDirectoryWith(f, _ => { }), "--solution", "child", "--child", f.Stories!, "--eval", WriteText("{\"retention\": {\"mean\": 0.9"), "--bench", WriteText("{}")], "bad.txt: malformed JSON"),
        new("bench --batch 0", f => ["bench", "--models", f.Stories!, "--batch", "0"], "--batch must be positive, got 0"),
    ];

    static IEnumerable<string> ReadNames(string file)
    {
        using var st = Puzzle.Checkpoints.SafeTensorsFile.Open(file);
        return st.Tensors.Keys.ToList();
    }

    static string WriteBytes(byte[] bytes)
    {
        string path = Path.Combine(TestSupport.TempDir(), "bad.txt");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public static TheoryData<string> CaseNames => new(Cases.Select(c => c.Name));

    [Fact]
    public void Corpus_HasAtLeastSixtyCases() => Assert.True(Cases.Length >= 60, $"{Cases.Length} cases");

    [SkippableTheory]
    [MemberData(nameof(CaseNames))]
    public void BadInput_OneLineError_NonZeroExit_NoStackTrace(string name)
    {
        Skip.If(fixture.Stories is null, "../shared/models/stories260K-hf or ../shared/data is absent; skipping the malformed-input corpus");
        var c = Cases.Single(x => x.Name == name);
        string[] args = c.Setup(fixture);
        var result = InProcessCli.Run(TimeSpan.FromSeconds(60), args);
        Assert.False(result.TimedOut, $"{name}: still running after {result.Elapsed.TotalSeconds:F0} s");
        AssertOneLineError(name, result.Code, result.Stderr, c.Expected);
        Assert.True(result.Elapsed.TotalSeconds < 30, $"{name}: took {result.Elapsed.TotalSeconds:F1} s");
    }

    internal static void AssertOneLineError(string name, int code, string stderr, IEnumerable<string> expected)
    {
        Assert.True(code != 0, $"{name}: exit code 0; stderr: {stderr}");
        Assert.DoesNotContain("Unhandled exception", stderr);
        Assert.DoesNotContain("   at ", stderr);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var errors = lines.Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToList();
        Assert.True(errors.Count == 1 && lines[^1] == errors[0], $"{name}: expected one error line last on stderr, got:\n{stderr}");
        Assert.DoesNotContain("internal error", errors[0]);
        foreach (string fragment in expected) Assert.True(errors[0].Contains(fragment, StringComparison.Ordinal), $"{name}: '{fragment}' not in: {errors[0]}");
    }
}
