using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Puzzle.Model;
using Puzzle.Tokenization;

namespace Puzzle.Gguf;

/// <summary>
/// The tokenizer as llama.cpp reads it from GGUF metadata (tokenizer.ggml.*): a SentencePiece tokenizer.model as model
/// <c>llama</c> (pieces, scores, types), else a byte-level BPE tokenizer.json as model <c>gpt2</c> (tokens, types,
/// merges and the pre-tokenizer name llama.cpp knows it by), else none (ids only). The token list is padded to the
/// model's vocab_size.
/// </summary>
public static class GgufVocabulary
{
    // llama_token_type (llama.cpp's vocabulary), which is also SentencePiece's piece type numbering.
    const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5;

    /// <summary>Whether our tokenizer adds BOS (tokenizer_config.json, else what the tokenizer itself does), so llama.cpp does the same.</summary>
    static bool AddsBos(string modelDir, TokenizerSettings settings)
    {
        if (settings.AddBos is { } add) return add;
        using var tokenizer = TextTokenizer.Load(modelDir);
        return tokenizer.AddBos;
    }

    public static List<(string, GgufValue)> Read(string modelDir, ModelConfig config)
    {
        string spm = Path.Combine(modelDir, "tokenizer.model"), json = Path.Combine(modelDir, "tokenizer.json");
        var settings = TokenizerSettings.Read(modelDir);
        List<(string, GgufValue)> meta;
        List<string> tokens;
        List<int> types;
        int? unknownId = null;
        if (File.Exists(spm))
        {
            var (pieces, scores, pieceTypes, addDummyPrefix) = ReadSentencePiece(spm);
            tokens = pieces;
            types = pieceTypes;
            var paddedScores = scores.Concat(Enumerable.Repeat(-1000f, Math.Max(0, config.VocabSize - scores.Count)));
            int unk = pieceTypes.IndexOf(Unknown);
            if (unk >= 0) unknownId = unk;
            meta =
            [
                ("tokenizer.ggml.model", GgufValue.Str("llama")),
                ("tokenizer.ggml.pre", GgufValue.Str("default")),
                ("tokenizer.ggml.scores", GgufValue.F32s(paddedScores)),
                ("tokenizer.ggml.add_space_prefix", GgufValue.Bool(addDummyPrefix)),
            ];
        }
        else if (File.Exists(json))
        {
            (tokens, types, var merges, string pre) = ReadByteLevelBpe(json);
            meta =
            [
                ("tokenizer.ggml.model", GgufValue.Str("gpt2")),
                ("tokenizer.ggml.pre", GgufValue.Str(pre)),
                ("tokenizer.ggml.merges", GgufValue.Strs(merges)),
            ];
        }
        else
        {
            // llama.cpp's "no vocabulary" model: token ids only (vocab_size dummy tokens), enough for benchmarks.
            Log.Warning($"gguf: {modelDir} has no tokenizer.model or tokenizer.json; writing tokenizer.ggml.model = none (token ids only)");
            return [("tokenizer.ggml.model", GgufValue.Str("none"))];
        }

        string source = File.Exists(spm) ? spm : json;
        if (tokens.Count > config.VocabSize)
            throw new PuzzleException($"{source}: the tokenizer has {tokens.Count} tokens but the model's vocab_size is {config.VocabSize}");
        for (int i = tokens.Count; i < config.VocabSize; i++)
        {
            tokens.Add($"[PAD{i}]");
            types.Add(Unused);
        }
        meta.Insert(1, ("tokenizer.ggml.tokens", GgufValue.Strs(tokens)));
        meta.Insert(2, ("tokenizer.ggml.token_type", GgufValue.I32s(types)));
        int? bos = settings.BosId ?? config.BosTokenId;
        int? eos = settings.EosIds.Count > 0 ? settings.EosIds[0] : config.EosTokenIds.Count > 0 ? config.EosTokenIds[0] : null;
        if (bos is { } b) meta.Add(("tokenizer.ggml.bos_token_id", GgufValue.U32(b)));
        if (eos is { } e) meta.Add(("tokenizer.ggml.eos_token_id", GgufValue.U32(e)));
        if (unknownId is { } u) meta.Add(("tokenizer.ggml.unknown_token_id", GgufValue.U32(u)));
        if (config.PadTokenId is { } p) meta.Add(("tokenizer.ggml.padding_token_id", GgufValue.U32(p)));
        meta.Add(("tokenizer.ggml.add_bos_token", GgufValue.Bool(AddsBos(modelDir, settings) && bos is not null)));
        meta.Add(("tokenizer.ggml.add_eos_token", GgufValue.Bool(settings.AddEos)));
        foreach (var (key, value) in meta)
            if (key is "tokenizer.ggml.bos_token_id" or "tokenizer.ggml.eos_token_id" && (uint)value.Value >= config.VocabSize)
                throw new PuzzleException($"{modelDir}: {key} ({value.Value}) is outside the vocabulary (vocab_size {config.VocabSize})");
        return meta;
    }

    /// <summary>
    /// sentencepiece_model.proto through Google.Protobuf's wire reader: ModelProto.pieces (field 1: piece = 1,
    /// score = 2, type = 3) and NormalizerSpec.add_dummy_prefix (ModelProto field 3, its field 3; default true).
    /// </summary>
    public static (List<string> Pieces, List<float> Scores, List<int> Types, bool AddDummyPrefix) ReadSentencePiece(string path)
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var types = new List<int>();
        bool addDummyPrefix = true;
        try
        {
            var input = new CodedInputStream(File.ReadAllBytes(path));
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int field = WireFormat.GetTagFieldNumber(tag);
                if (field == 1 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                {
                    var piece = new CodedInputStream(input.ReadBytes().ToByteArray());
                    string text = "";
                    float score = 0;
                    int type = Normal;
                    uint t;
                    while ((t = piece.ReadTag()) != 0)
                    {
                        switch (WireFormat.GetTagFieldNumber(t))
                        {
                            case 1: text = piece.ReadString(); break;
                            case 2: score = piece.ReadFloat(); break;
                            case 3: type = piece.ReadEnum(); break;
                            default: piece.SkipLastField(); break;
                        }
                    }
                    pieces.Add(text);
                    scores.Add(score);
                    types.Add(type);
                }
                else if (field == 3 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited)
                {
                    var spec = new CodedInputStream(input.ReadBytes().ToByteArray());
                    uint t;
                    while ((t = spec.ReadTag()) != 0)
                    {
                        if (WireFormat.GetTagFieldNumber(t) == 3) addDummyPrefix = spec.ReadBool();
                        else spec.SkipLastField();
                    }
                }
                else input.SkipLastField();
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new PuzzleException($"{path}: not a readable SentencePiece model: {e.Message}", e);
        }
        if (pieces.Count == 0) throw new PuzzleException($"{path}: SentencePiece model has no pieces");
        return (pieces, scores, types, addDummyPrefix);
    }

    // The Llama-3 pre-tokenizer regex (tokenizer.json Split pattern) that llama.cpp calls "llama-bpe".
    const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>tokenizer.json with a BPE model and a byte-level pre-tokenizer (GPT-2 regex or Llama-3 Split + ByteLevel).</summary>
    public static (List<string> Tokens, List<int> Types, List<string> Merges, string Pre) ReadByteLevelBpe(string path)
    {
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PuzzleException($"{path}: expected a JSON object"); }
        catch (JsonException e) { throw new PuzzleException($"{path}: malformed JSON: {e.Message}"); }
        if (root["model"] is not JsonObject model || model["type"]?.GetValue<string>() != "BPE")
            throw new PuzzleException($"{path}: model.type is '{root["model"]?["type"]}', GGUF export handles BPE tokenizer.json (or a tokenizer.model)");
        string pre = PreTokenizerName(root["pre_tokenizer"])
            ?? throw new PuzzleException($"{path}: pre_tokenizer {root["pre_tokenizer"]?.ToJsonString() ?? "null"} is not byte-level " +
                                         "(GPT-2 ByteLevel or Llama-3 Split + ByteLevel); a SentencePiece-style tokenizer needs its tokenizer.model");
        if (model["vocab"] is not JsonObject vocab) throw new PuzzleException($"{path}: model.vocab is missing");
        var byId = new SortedDictionary<int, (string Text, int Type)>();
        foreach (var (text, id) in vocab) byId[id!.GetValue<int>()] = (text, Normal);
        if (root["added_tokens"] is JsonArray added)
            foreach (var token in added.OfType<JsonObject>())
                byId[token["id"]!.GetValue<int>()] = (token["content"]!.GetValue<string>(), token["special"]?.GetValue<bool>() == true ? Control : UserDefined);
        int count = byId.Count == 0 ? 0 : byId.Keys.Max() + 1;
        var tokens = new List<string>(count);
        var types = new List<int>(count);
        for (int i = 0; i < count; i++)
        {
            var (text, type) = byId.TryGetValue(i, out var t) ? t : ($"[PAD{i}]", Unused);
            tokens.Add(text);
            types.Add(type);
        }
        var merges = (model["merges"] as JsonArray ?? []).Select(m => m switch
        {
            JsonValue v => v.GetValue<string>(),
            JsonArray pair when pair.Count == 2 => $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}",
            _ => throw new PuzzleException($"{path}: model.merges holds {m?.ToJsonString()}, expected \"a b\" or [a, b]"),
        }).ToList();
        return (tokens, types, merges, pre);
    }

    static string? PreTokenizerName(JsonNode? node)
    {
        static bool ByteLevel(JsonNode? n, bool regex) =>
            n?["type"]?.GetValue<string>() == "ByteLevel" && (n["use_regex"]?.GetValue<bool>() ?? true) == regex;
        if (ByteLevel(node, regex: true)) return "gpt-2";
        if (node?["type"]?.GetValue<string>() == "Sequence" && node["pretokenizers"] is JsonArray { Count: 2 } parts &&
            parts[0]?["type"]?.GetValue<string>() == "Split" && parts[0]?["pattern"]?["Regex"]?.GetValue<string>() == Llama3Pattern &&
            ByteLevel(parts[1], regex: false))
            return "llama-bpe";
        return null;
    }
}
