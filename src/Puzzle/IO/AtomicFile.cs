using System.Text.Json;
using System.Text.Json.Nodes;

namespace Puzzle.IO;

/// <summary>Writes files so that a reader never sees half of one: write a temp file beside it, flush, rename.</summary>
public static class AtomicFile
{
    public static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string tmp = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}-{TempFiles.HostTag}";      // TempFiles.IsStale reads this
        try
        {
            using (var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });

    /// <summary>Writes JSON; a NaN or infinite number anywhere is an error naming the file and the key, never a silent result.</summary>
    public static void WriteJson(string path, JsonNode node)
    {
        if (NonFinite(node, "") is { } bad) throw new PuzzleException($"{path}: {bad.Key} is {bad.Value}; results must be finite numbers");
        WriteAllText(path, node.ToJsonString(Indented) + "\n");
    }

    static (string Key, double Value)? NonFinite(JsonNode? node, string key)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (name, child) in o)
                    if (NonFinite(child, key.Length == 0 ? name : $"{key}.{name}") is { } found) return found;
                return null;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++)
                    if (NonFinite(a[i], $"{key}[{i}]") is { } found) return found;
                return null;
            case JsonValue v when v.TryGetValue(out double d) && !double.IsFinite(d):
                return (key, d);
            case JsonValue v when v.TryGetValue(out float f) && !float.IsFinite(f):
                return (key, f);
            default:
                return null;
        }
    }

    public static void Copy(string source, string destination) =>
        Write(destination, s => { using var r = File.OpenRead(source); r.CopyTo(s); });
}
