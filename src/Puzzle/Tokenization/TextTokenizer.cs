using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Tokenization;

/// <summary>
/// A model's tokenizer, read from its directory through maintained libraries: <c>tokenizer.json</c> via the Rust
/// HF tokenizers (Tokenizers.DotNet), else <c>tokenizer.model</c> (SentencePiece) via Microsoft.ML.Tokenizers.
/// BOS/EOS follow tokenizer_config.json and the model's config.
/// </summary>
public abstract class TextTokenizer : IDisposable
{
    public int? BosId { get; protected init; }
    public IReadOnlyList<int> EosIds { get; protected init; } = [];
    /// <summary>
    /// Whether <see cref="Encode(string)"/> prepends BOS: tokenizer_config.json's add_bos_token where it says; else, for
    /// tokenizer.json, whether its post-processor adds a BOS (as transformers' fast tokenizers do); else true (SentencePiece Llama).
    /// </summary>
    public bool AddBos { get; protected init; } = true;
    public bool AddEos { get; protected init; }
    /// <summary>Size of the id space (largest id + 1), special tokens included.</summary>
    public int VocabSize { get; protected init; }
    public abstract string Source { get; }

    /// <summary>Ids of the text without any special tokens.</summary>
    public abstract int[] EncodeRaw(string text);

    /// <summary>Text of the ids, special tokens dropped.</summary>
    public abstract string Decode(IReadOnlyList<int> ids);

    /// <summary>Ids as the model expects them: BOS/EOS added per tokenizer_config.json.</summary>
    public int[] Encode(string text) => Encode(text, AddBos, AddEos);

    public int[] Encode(string text, bool addBos, bool addEos = false)
    {
        var ids = new List<int>();
        if (addBos && BosId is { } bos) ids.Add(bos);
        ids.AddRange(EncodeRaw(text));
        if (addEos && EosIds.Count > 0) ids.Add(EosIds[0]);
        return [.. ids];
    }

    public static TextTokenizer Load(string modelDir)
    {
        var settings = TokenizerSettings.Read(modelDir);
        string json = Path.Combine(modelDir, "tokenizer.json");
        if (File.Exists(json)) return new HfTokenizer(json, settings);
        string model = Path.Combine(modelDir, "tokenizer.model");
        if (File.Exists(model)) return new SentencePieceTokenizer(model, settings);
        throw new PuzzleException($"{modelDir}: no tokenizer.json or tokenizer.model");
    }

    public virtual void Dispose() => GC.SuppressFinalize(this);
}

/// <summary>What tokenizer_config.json, config.json and generation_config.json say about special tokens.</summary>
public sealed record TokenizerSettings(bool? AddBos, bool AddEos, string? BosToken, string? EosToken, int? BosId, IReadOnlyList<int> EosIds)
{
    public static TokenizerSettings Read(string modelDir)
    {
        bool? addBos = null;
        bool addEos = false;
        string? bosToken = null, eosToken = null;
        int? bosId = null;
        var eosIds = new List<int>();
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            var root = JsonFile.Read(configPath);
            addBos = root["add_bos_token"].OptionalBool() ?? addBos;
            addEos = root["add_eos_token"].OptionalBool() ?? addEos;
            bosToken = TokenString(root["bos_token"]);
            eosToken = TokenString(root["eos_token"]);
        }
        foreach (string name in new[] { "generation_config.json", "config.json" })
        {
            string path = Path.Combine(modelDir, name);
            if (!File.Exists(path)) continue;
            var root = JsonFile.Read(path);
            if (bosId is null && root["bos_token_id"].Node is not null) bosId = root["bos_token_id"].Int();
            if (eosIds.Count == 0)
            {
                var eos = root["eos_token_id"];
                if (eos.Node is JsonArray) eosIds.AddRange(eos.Items().Select(x => x.Int()));
                else if (eos.Node is not null) eosIds.Add(eos.Int());
            }
        }
        return new TokenizerSettings(addBos, addEos, bosToken, eosToken, bosId, eosIds);
    }

    static string? TokenString(JsonField field) => field.Node switch
    {
        null => null,
        JsonObject => field["content"].String(),
        _ => field.String(),
    };
}

/// <summary>tokenizer.json through the Rust HF tokenizers library (exactly what transformers uses).</summary>
public sealed class HfTokenizer : TextTokenizer
{
    readonly Tokenizers.DotNet.Tokenizer _tokenizer;
    readonly int[] _prefix;   // special ids the library's post-processor adds before the text
    readonly int[] _suffix;   // ... and after it
    readonly string _path;

    public override string Source => _path;

    public HfTokenizer(string path, TokenizerSettings settings)
    {
        _path = path;
        var root = JsonFile.Read(path);
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root["added_tokens"].Node is not null)
            foreach (var t in root["added_tokens"].Items())
            {
                string content = t["content"].String();
                int id = t["id"].Int();
                if (id < 0) throw t["id"].Error("a token id >= 0");
                added[content] = id;
            }
        int? Lookup(string? token) => token is not null && added.TryGetValue(token, out int id) ? id : null;
        var model = root["model"].Object();
        int maxVocab = model["vocab"] switch
        {
            JsonObject => root["model"]["vocab"].Properties().Select(kv => kv.Value.Int()).DefaultIfEmpty(-1).Max(),
            JsonArray a => a.Count - 1,                                                    // Unigram: [piece, score] list
            _ => -1,
        };
        VocabSize = Math.Max(maxVocab, added.Values.DefaultIfEmpty(-1).Max()) + 1;
        try
        {
            _tokenizer = new Tokenizers.DotNet.Tokenizer(path);
        }
        catch (Exception e)
        {
            throw new PuzzleException($"{path}: the HF tokenizers library cannot read it: {e.Message}", e);
        }
        // Learn what the post-processor adds by encoding a probe with and without surrounding text.
        int[] empty = [.. _tokenizer.Encode("").Select(i => (int)i)];
        int[] probe = [.. _tokenizer.Encode("a").Select(i => (int)i)];
        int prefixLength = 0;
        while (prefixLength < empty.Length && prefixLength < probe.Length && empty[prefixLength] == probe[prefixLength]) prefixLength++;
        _prefix = empty[..prefixLength];
        _suffix = empty[prefixLength..];
        BosId = settings.BosId ?? Lookup(settings.BosToken) ?? (_prefix.Length > 0 ? _prefix[0] : null);
        var eos = settings.EosIds.ToList();
        if (eos.Count == 0 && Lookup(settings.EosToken) is { } eosId) eos.Add(eosId);
        EosIds = eos;
        AddBos = settings.AddBos ?? (_prefix.Length > 0 && BosId is { } b && _prefix.Contains(b));
        AddEos = settings.AddEos;
    }

    public override int[] EncodeRaw(string text)
    {
        uint[] ids = _tokenizer.Encode(text);
        int start = ids.Length >= _prefix.Length + _suffix.Length && ids.Take(_prefix.Length).Select(i => (int)i).SequenceEqual(_prefix) ? _prefix.Length : 0;
        int end = ids.Length - (ids.Skip(ids.Length - _suffix.Length).Select(i => (int)i).SequenceEqual(_suffix) ? _suffix.Length : 0);
        return ids[start..Math.Max(start, end)].Select(i => (int)i).ToArray();
    }

    public override string Decode(IReadOnlyList<int> ids) => _tokenizer.Decode(ids.Select(i => (uint)i).ToArray());

    public override void Dispose()
    {
        _tokenizer.Dispose();
        base.Dispose();
    }
}

/// <summary>
/// tokenizer.model (SentencePiece BPE) through Microsoft.ML.Tokenizers. Note: that library breaks ties on runs of
/// spaces differently from SentencePiece; prefer tokenizer.json where a model ships both.
/// </summary>
public sealed class SentencePieceTokenizer : TextTokenizer
{
    readonly Microsoft.ML.Tokenizers.LlamaTokenizer _tokenizer;
    readonly string _path;

    public override string Source => _path;

    public SentencePieceTokenizer(string path, TokenizerSettings settings)
    {
        _path = path;
        try
        {
            using var stream = File.OpenRead(path);
            _tokenizer = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not PuzzleException)
        {
            throw new PuzzleException($"{path}: not a readable SentencePiece model: {e.Message}", e);
        }
        BosId = settings.BosId ?? _tokenizer.BeginningOfSentenceId;
        VocabSize = _tokenizer.Vocabulary.Count;
        EosIds = settings.EosIds.Count > 0 ? settings.EosIds : [_tokenizer.EndOfSentenceId];
        AddBos = settings.AddBos ?? true;
        AddEos = settings.AddEos;
    }

    public override int[] EncodeRaw(string text) =>
        [.. _tokenizer.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false)];

    public override string Decode(IReadOnlyList<int> ids) =>
        _tokenizer.Decode(ids, considerSpecialTokens: false) ?? "";
}
