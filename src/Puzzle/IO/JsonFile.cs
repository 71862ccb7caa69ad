using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Puzzle.IO;

/// <summary>
/// The one validating reader for every JSON file the project reads (model configs, safetensors headers, indexes,
/// tokenizer files, data manifests, run-directory artifacts): it parses strictly (duplicate keys are an error) and
/// its typed getters name the file, the key path, the expected type and the value found.
/// </summary>
public static class JsonFile
{
    static readonly JsonDocumentOptions Strict = new() { MaxDepth = 256 };

    /// <summary>Parses text that must hold a JSON object; errors name <paramref name="source"/>.</summary>
    public static JsonField Parse(string text, string source, JsonDocumentOptions? options = null)
    {
        JsonNode? node;
        try
        {
            using (var document = JsonDocument.Parse(text, options ?? Strict)) CheckDuplicates(document.RootElement, source, "");
            node = JsonNode.Parse(text, documentOptions: options ?? Strict);
        }
        catch (JsonException e)
        {
            throw new PuzzleException($"{source}: malformed JSON ({FirstLine(e.Message)})");
        }
        if (node is not JsonObject)
            throw new PuzzleException($"{source}: expected a JSON object at the top, got {Describe(node)}");
        return new JsonField(node, source, "");
    }

    /// <summary>Reads a file that must hold a JSON object.</summary>
    public static JsonField Read(string path, string? what = null)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: {what ?? "file"} not found");
        string text;
        try { text = StrictUtf8.GetString(File.ReadAllBytes(path)); }
        catch (DecoderFallbackException e) { throw new PuzzleException($"{path}: not UTF-8 text (invalid byte at offset {e.Index})"); }
        return Parse(text, path);
    }

    public static JsonObject ReadObject(string path, string? what = null) => Read(path, what).Object();

    /// <summary>
    /// A run artifact of one format (scores.json, library.json, report.json, …): the file must exist and hold
    /// <c>format_version</c> = <paramref name="version"/>; otherwise one line naming the file, the version found and
    /// the command that writes it (<paramref name="rerun"/>, e.g. "puzzle score").
    /// </summary>
    public static JsonField ReadVersioned(string path, int version, string rerun)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: not found; run `{rerun}` first");
        var j = Read(path);
        if (!j["format_version"].Exists)
            throw new PuzzleException($"{path}: no format_version (written by an older version of Puzzle); rerun `{rerun}`");
        int found = j["format_version"].Int();
        if (found != version)
            throw new PuzzleException($"{path}: format_version {found} is not {version} (written by another version of Puzzle); rerun `{rerun}`");
        return j;
    }

    /// <summary>An index's <c>complete</c> must agree with what it holds: an error naming the file and <paramref name="holds"/> ("holds 1 of 2 candidates").</summary>
    public static void CheckComplete(JsonField complete, bool actual, string holds)
    {
        if (complete.Bool() != actual)
            throw new PuzzleException($"{complete.File}: complete is {(complete.Bool() ? "true" : "false")} but it {holds}");
    }

    /// <summary>
    /// A derived artifact a stage wrote: null when absent; when present but torn or unreadable, a warning line, the file
    /// is deleted and null is returned, so the unit that writes it is redone instead of every later run failing.
    /// </summary>
    public static JsonField? ReadDerived(string path, Func<JsonField, bool>? valid = null)
    {
        if (!File.Exists(path)) return null;
        try
        {
            var field = Read(path);
            if (valid is null || valid(field)) return field;
            throw new PuzzleException($"{path}: unexpected content");
        }
        catch (PuzzleException e)
        {
            Discard(path, e.Message);
            return null;
        }
    }

    /// <summary>Deletes a torn derived artifact, saying so on one warning line.</summary>
    public static void Discard(string path, string why)
    {
        Log.Warning($"{(why.StartsWith(path, StringComparison.Ordinal) ? why : $"{path}: {why}")}; discarding it, the work that wrote it is redone");
        try { File.Delete(path); }
        catch (IOException) { }
    }

    public static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads a text file that must be UTF-8; an invalid byte is an error naming the file and the offset.</summary>
    public static string ReadUtf8Text(string path)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: text file not found");
        byte[] bytes = File.ReadAllBytes(path);
        try { return StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException e)
        {
            long offset = e.Index >= 0 ? e.Index : Array.FindIndex(bytes, b => b >= 0x80);
            throw new PuzzleException($"{path}: not UTF-8 text (invalid byte 0x{(offset >= 0 && offset < bytes.Length ? bytes[offset] : 0):X2} at offset {offset})");
        }
    }

    static void CheckDuplicates(JsonElement element, string source, string path)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                HashSet<string>? seen = null;
                foreach (var property in element.EnumerateObject())
                {
                    seen ??= new HashSet<string>(StringComparer.Ordinal);
                    string key = path.Length == 0 ? property.Name : $"{path}.{property.Name}";
                    if (!seen.Add(property.Name)) throw new PuzzleException($"{source}: duplicate key '{key}'");
                    CheckDuplicates(property.Value, source, key);
                }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in element.EnumerateArray()) CheckDuplicates(item, source, $"{path}[{i++}]");
                break;
        }
    }

    internal static string FirstLine(string message) => message.Split('\n')[0].Trim();

    internal static string Describe(JsonNode? node)
    {
        if (node is null) return "null";
        string text = node.ToJsonString();
        return text.Length > 60 ? text[..57] + "..." : text;
    }
}

/// <summary>A JSON value with where it came from; getters throw a <see cref="PuzzleException"/> naming file, key, type and value.</summary>
public readonly struct JsonField(JsonNode? node, string file, string key)
{
    public JsonNode? Node { get; } = node;
    public string File { get; } = file;
    public string Key { get; } = key;

    public bool Exists => Node is not null;

    public JsonField this[string name] =>
        new(Node is JsonObject o ? o[name] : Node is null ? null : throw Error("an object"), File, Key.Length == 0 ? name : $"{Key}.{name}");

    public JsonField this[int index] =>
        new(Node is JsonArray a ? (index < a.Count ? a[index] : null) : Node is null ? null : throw Error("an array"), File, $"{Key}[{index}]");

    public PuzzleException Error(string expected) => new(Node is null
        ? $"{File}: {(Key.Length == 0 ? "the document" : Key)} is missing (expected {expected})"
        : $"{File}: {(Key.Length == 0 ? "the document" : Key)} must be {expected}, got {JsonFile.Describe(Node)}");

    public JsonObject Object() => Node as JsonObject ?? throw Error("an object");

    /// <summary>A copy of an object value: a section another stage wrote, carried as written.</summary>
    public JsonObject ObjectCopy() => (JsonObject)Object().DeepClone();

    public JsonObject? OptionalObjectCopy() => Node is null ? null : ObjectCopy();

    public JsonArray Array() => Node as JsonArray ?? throw Error("an array");

    public IReadOnlyList<JsonField> Items()
    {
        var array = Array();
        var self = this;
        return array.Select((_, i) => self[i]).ToArray();
    }

    public IEnumerable<(string Name, JsonField Value)> Properties()
    {
        var self = this;
        return Object().Select(kv => (kv.Key, self[kv.Key])).ToArray();
    }

    public string String() => Node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Error("a string");

    public string? OptionalString() => Node is null ? null : String();

    public bool Bool() => Node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? v.GetValue<bool>() : throw Error("true or false");

    public bool? OptionalBool() => Node is null ? null : Bool();

    public long Long()
    {
        if (Node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
        {
            if (v.TryGetValue(out long l)) return l;
            if (v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < 9e15) return (long)d;
        }
        throw Error("an integer");
    }

    public long? OptionalLong() => Node is null ? null : Long();

    public int Int()
    {
        long value = Long();
        return value is >= int.MinValue and <= int.MaxValue ? (int)value : throw Error("an integer in 32-bit range");
    }

    public int? OptionalInt() => Node is null ? null : Int();

    /// <summary>A finite number (NaN and infinities are never valid results or settings).</summary>
    public double Double()
    {
        if (Node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) && double.IsFinite(d)) return d;
        throw Error("a finite number");
    }

    public double? OptionalDouble() => Node is null ? null : Double();

    public override string ToString() => Node?.ToJsonString() ?? "null";

    public string Describe() => JsonFile.Describe(Node);

    public static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
