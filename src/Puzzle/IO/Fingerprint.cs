using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Puzzle.IO;

/// <summary>
/// The keys that decide whether stored work still stands: a hash of the canonical JSON of the inputs that matter
/// (objects with their keys sorted, arrays element by element, numbers in their shortest round-trip form). Never
/// <c>record.ToString()</c>, which prints an array as <c>System.Double[]</c> and so misses every change inside it.
/// </summary>
public static class Fingerprint
{
    static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>16 hex digits over <paramref name="purpose"/> (a tag with a version, e.g. "costs-v3") and the inputs' canonical JSON.</summary>
    public static string Of(string purpose, params object?[] inputs) =>
        Hash(purpose + "|" + string.Join("|", inputs.Select(Canonical)));

    /// <summary>The canonical JSON text of a value (records, arrays, strings, numbers, JSON trees).</summary>
    public static string Canonical(object? value)
    {
        JsonNode? node = value switch
        {
            null => null,
            JsonNode n => n.DeepClone(),
            _ => JsonSerializer.SerializeToNode(value, value.GetType(), Options),
        };
        return Sorted(node)?.ToJsonString() ?? "null";
    }

    static JsonNode? Sorted(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => KeyValuePair.Create(kv.Key, Sorted(kv.Value?.DeepClone())))),
        JsonArray a => new JsonArray(a.Select(x => Sorted(x?.DeepClone())).ToArray()),
        _ => node,
    };

    /// <summary>Identifies a model directory's weights cheaply: config.json text plus each weight file's name, size and first 64 KiB.</summary>
    public static string OfModel(string modelDir)
    {
        var text = new StringBuilder(File.ReadAllText(Path.Combine(modelDir, "config.json")));
        foreach (string file in Directory.GetFiles(modelDir, "*.safetensors").Order(StringComparer.Ordinal))
        {
            using var stream = File.OpenRead(file);
            var head = new byte[Math.Min(stream.Length, 1 << 16)];
            stream.ReadExactly(head);
            text.Append($"|{Path.GetFileName(file)}:{stream.Length}:{Convert.ToHexString(SHA256.HashData(head))}");
        }
        return Hash(text.ToString());
    }

    /// <summary>The first 16 hex digits of the text's SHA-256.</summary>
    public static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];
}
