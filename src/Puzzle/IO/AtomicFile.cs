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

    public static void WriteJson(string path, JsonNode node) => WriteAllText(path, node.ToJsonString(Indented) + "\n");

    public static void Copy(string source, string destination) =>
        Write(destination, s => { using var r = File.OpenRead(source); r.CopyTo(s); });
}
