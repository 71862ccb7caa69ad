using Puzzle.Tokenization;

namespace Puzzle.Tests.Tokenization;

public sealed class TokenizerTests
{
    /// <summary>A Llama-3 style byte-level BPE tokenizer.json written here (vocabulary: bytes + two merges).</summary>
    internal static string ByteLevelTokenizerDir()
    {
        string dir = TestSupport.TempDir();
        var vocab = new Dictionary<string, int>();
        // GPT-2 byte-to-unicode table.
        var bytes = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        var chars = bytes.ToList();
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (!bytes.Contains(b)) { bytes.Add(b); chars.Add(256 + n++); }
        var map = bytes.Zip(chars).OrderBy(p => p.First).Select(p => ((char)p.Second).ToString()).ToArray();
        for (int b = 0; b < 256; b++) vocab[map[b]] = b;
        vocab["Ġt"] = 256;
        vocab["Ġth"] = 257;
        string vocabJson = string.Join(",", vocab.Select(kv => $"{System.Text.Json.JsonSerializer.Serialize(kv.Key)}:{kv.Value}"));
        string json = """
        {"version":"1.0","truncation":null,"padding":null,
         "added_tokens":[{"id":258,"content":"<|begin_of_text|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
                         {"id":259,"content":"<|end_of_text|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":null,
         "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},
         "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
             "pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],
             "special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[258],"tokens":["<|begin_of_text|>"]}}},
         "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
         "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
                  "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{VOCAB},"merges":["Ġ t","Ġt h"]}}
        """.Replace("VOCAB", vocabJson);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": true}""");
        return dir;
    }

    [Fact]
    public void ByteLevelBpe_EncodesWithMergesAndBos_AndRoundTripsUnicode()
    {
        using var tokenizer = TextTokenizer.Load(ByteLevelTokenizerDir());
        Assert.Equal(258, tokenizer.BosId);
        Assert.Equal([259], tokenizer.EosIds);
        // "a the": 'a', then " th" merged (Ġ t -> Ġt, Ġt h -> Ġth), then 'e'
        Assert.Equal([258, 'a', 257, 'e'], tokenizer.Encode("a the"));
        Assert.Equal(['a', 257, 'e'], tokenizer.Encode("a the", addBos: false));
        string text = "naïve café — 東京 🙂";
        int[] ids = tokenizer.Encode(text, addBos: false);
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(text), ids.Length);            // no merge applies: one id per byte
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal(text, tokenizer.Decode([258, .. ids, 259]));                          // special tokens dropped
    }

    [Fact]
    public void Load_NoTokenizerFiles_NamesTheDirectory()
    {
        string dir = TestSupport.TempDir();
        Assert.Contains($"{dir}: no tokenizer.json or tokenizer.model", Assert.Throws<PuzzleException>(() => TextTokenizer.Load(dir)).Message);
    }

    [SkippableFact]
    public void AddBosFalse_InTokenizerConfig_IsHonoured()
    {
        string source = TestSupport.Stories260K();
        string dir = TestSupport.TempDir();
        File.Copy(Path.Combine(source, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": false, "bos_token": "<s>", "eos_token": "</s>"}""");
        using var tokenizer = TextTokenizer.Load(dir);
        Assert.NotEqual(1, tokenizer.Encode("Once upon a time")[0]);
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal([2], tokenizer.EosIds);
    }
}
