using System.Text;
using System.Text.Json;
using Parquet;

namespace Puzzle.IO;

/// <summary>A piece of a document's text. A document may arrive in several parts (large .txt files are streamed).</summary>
public sealed record DocumentPart(int SourceIndex, string DocumentKey, string Text, bool IsFirst, bool IsLast);

/// <summary>Why input was not used, counted and reported (never dropped silently).</summary>
public sealed class SkipReport
{
    readonly Dictionary<string, int> _counts = new();
    readonly List<string> _examples = new();

    public IReadOnlyDictionary<string, int> Counts => _counts;
    public IReadOnlyList<string> Examples => _examples;
    public int Total => _counts.Values.Sum();

    public void Add(string reason, string where)
    {
        lock (_counts)
        {
            _counts[reason] = _counts.GetValueOrDefault(reason) + 1;
            if (_examples.Count < 20) _examples.Add($"{where}: {reason}");
        }
    }
}

/// <summary>
/// Streams documents from .txt files (one document each, read in bounded parts), folders of them, .jsonl (one
/// document per line, a text field) and .parquet (one document per row, a text column).
/// </summary>
public sealed class DocumentSources
{
    public const int TextPartChars = 1 << 20;
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public IReadOnlyList<string> Files { get; }
    public string TextField { get; }
    /// <summary>.txt documents: "file" (each file is one document) or "paragraphs" (blank-line separated blocks).</summary>
    public string TxtDocuments { get; }
    public SkipReport Skips { get; } = new();

    public DocumentSources(IEnumerable<string> inputs, string textField = "text", string txtDocuments = "file")
    {
        TextField = textField;
        if (txtDocuments is not ("file" or "paragraphs"))
            throw new PuzzleException($"data.txt_documents '{txtDocuments}' is not 'file' or 'paragraphs'");
        TxtDocuments = txtDocuments;
        var files = new List<string>();
        foreach (string input in inputs)
        {
            if (Directory.Exists(input))
            {
                var found = Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories)
                    .Where(f => Kind(f) is not null).Order(StringComparer.Ordinal).ToList();
                if (found.Count == 0) throw new PuzzleException($"{input}: folder holds no .txt, .jsonl or .parquet files");
                files.AddRange(found);
            }
            else if (File.Exists(input))
            {
                if (Kind(input) is null)
                    throw new PuzzleException($"{input}: unsupported input type (expected .txt, .jsonl or .parquet, or a folder of them)");
                files.Add(input);
            }
            else throw new PuzzleException($"{input}: input not found");
        }
        if (files.Count == 0) throw new PuzzleException("no input files given");
        Files = files;
    }

    static string? Kind(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".txt" => "txt",
        ".jsonl" => "jsonl",
        ".parquet" => "parquet",
        _ => null,
    };

    /// <summary>Documents of every file in order; bad documents are counted in <see cref="Skips"/>.</summary>
    public IEnumerable<DocumentPart> Read()
    {
        for (int i = 0; i < Files.Count; i++)
        {
            var parts = Kind(Files[i]) switch
            {
                "txt" => ReadText(i),
                "jsonl" => ReadJsonl(i),
                _ => ReadParquet(i),
            };
            foreach (var part in parts) yield return part;
        }
    }

    IEnumerable<DocumentPart> ReadText(int index)
    {
        string path = Files[index];
        string key = Path.GetFileName(path);
        if (new FileInfo(path).Length == 0)
        {
            Skips.Add("empty file", path);
            yield break;
        }
        // Validate UTF-8 in one streaming pass first, so an invalid file is skipped whole, never half-used.
        string? invalid = FindInvalidUtf8(path);
        if (invalid is not null)
        {
            Skips.Add("invalid UTF-8", $"{path} ({invalid})");
            yield break;
        }
        if (TxtDocuments == "paragraphs")
        {
            int n = 0;
            foreach (string paragraph in Paragraphs(path))
                yield return new DocumentPart(index, $"{key}#{n++}", paragraph, true, true);
            if (n == 0) Skips.Add("empty document (whitespace only)", path);
            yield break;
        }
        using var parts = TextParts(path).GetEnumerator();
        if (!parts.MoveNext())
        {
            Skips.Add("empty document (whitespace only)", path);
            yield break;
        }
        string current = parts.Current;
        bool first = true;
        while (parts.MoveNext())
        {
            yield return new DocumentPart(index, key, current, first, false);
            first = false;
            current = parts.Current;
        }
        if (first && string.IsNullOrWhiteSpace(current))
        {
            Skips.Add("empty document (whitespace only)", path);
            yield break;
        }
        yield return new DocumentPart(index, key, current, first, true);
    }

    /// <summary>Blocks of non-blank lines, streamed (a blank line ends a document).</summary>
    static IEnumerable<string> Paragraphs(string path)
    {
        using var reader = new StreamReader(path, StrictUtf8, detectEncodingFromByteOrderMarks: true);
        var current = new StringBuilder();
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (string.IsNullOrWhiteSpace(line))
            {
                if (current.Length > 0) yield return current.ToString();
                current.Clear();
                continue;
            }
            if (current.Length > 0) current.Append('\n');
            current.Append(line);
        }
        if (current.Length > 0) yield return current.ToString();
    }

    /// <summary>The file's text in parts of about <see cref="TextPartChars"/>, cut after a line break or space.</summary>
    static IEnumerable<string> TextParts(string path)
    {
        using var reader = new StreamReader(path, StrictUtf8, detectEncodingFromByteOrderMarks: true);
        var buffer = new char[TextPartChars];
        string pending = "";
        int read;
        while ((read = reader.ReadBlock(buffer, 0, buffer.Length)) > 0)
        {
            string text = pending + new string(buffer, 0, read);
            int cut = Math.Max(text.LastIndexOf('\n'), text.LastIndexOf(' ')) + 1;
            if (cut <= 0) cut = text.Length;
            pending = text[cut..];
            if (cut > 0) yield return text[..cut];
        }
        if (pending.Length > 0) yield return pending;
    }

    static string? FindInvalidUtf8(string path)
    {
        using var stream = File.OpenRead(path);
        var decoder = StrictUtf8.GetDecoder();
        var bytes = new byte[1 << 20];
        var chars = new char[StrictUtf8.GetMaxCharCount(bytes.Length)];
        long offset = 0;
        int read;
        try
        {
            while ((read = stream.Read(bytes, 0, bytes.Length)) > 0)
            {
                decoder.GetChars(bytes, 0, read, chars, 0, flush: false);
                offset += read;
            }
            decoder.GetChars(bytes, 0, 0, chars, 0, flush: true);
        }
        catch (DecoderFallbackException e)
        {
            return $"near byte {offset + Math.Max(e.Index, 0)}";
        }
        return null;
    }

    IEnumerable<DocumentPart> ReadJsonl(int index)
    {
        string path = Files[index];
        string name = Path.GetFileName(path);
        if (new FileInfo(path).Length == 0)
        {
            Skips.Add("empty file", path);
            yield break;
        }
        int lineNumber = 0;
        foreach (byte[] line in ReadLines(path))
        {
            lineNumber++;
            string where = $"{path}:{lineNumber}";
            if (line.All(b => b is (byte)' ' or (byte)'\t' or (byte)'\r')) continue;   // blank lines are not documents
            string json;
            try { json = StrictUtf8.GetString(line); }
            catch (DecoderFallbackException) { Skips.Add("invalid UTF-8", where); continue; }
            string? text;
            try
            {
                using var doc = JsonDocument.Parse(json);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) { Skips.Add("line is not a JSON object", where); continue; }
                if (!doc.RootElement.TryGetProperty(TextField, out var field)) { Skips.Add($"no '{TextField}' field", where); continue; }
                if (field.ValueKind != JsonValueKind.String) { Skips.Add($"'{TextField}' is not a string", where); continue; }
                text = field.GetString();
            }
            catch (JsonException) { Skips.Add("line is not valid JSON", where); continue; }
            if (string.IsNullOrWhiteSpace(text)) { Skips.Add("empty document (whitespace only)", where); continue; }
            yield return new DocumentPart(index, $"{name}:{lineNumber}", text!, true, true);
        }
    }

    static IEnumerable<byte[]> ReadLines(string path)
    {
        using var stream = new BufferedStream(File.OpenRead(path), 1 << 20);
        var line = new MemoryStream();
        int b;
        while ((b = stream.ReadByte()) >= 0)
        {
            if (b == '\n')
            {
                yield return line.ToArray();
                line.SetLength(0);
            }
            else line.WriteByte((byte)b);
        }
        if (line.Length > 0) yield return line.ToArray();
    }

    IEnumerable<DocumentPart> ReadParquet(int index)
    {
        string path = Files[index];
        string name = Path.GetFileName(path);
        using var stream = File.OpenRead(path);
        ParquetReader reader;
        try { reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not PuzzleException) { throw new PuzzleException($"{path}: not a readable Parquet file: {e.Message}", e); }
        try
        {
            var field = reader.Schema.GetDataFields().FirstOrDefault(f => f.Name == TextField)
                ?? throw new PuzzleException(
                    $"{path}: no column '{TextField}' (columns: {string.Join(", ", reader.Schema.GetDataFields().Select(f => f.Name))}); choose one with --text-field");
            if (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>))
                throw new PuzzleException($"{path}: column '{TextField}' holds {field.ClrType.Name}, not text");
            long row = 0;
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                using var group = reader.OpenRowGroupReader(g);
                var values = new string?[group.RowCount];
                group.ReadAsync(field, values.AsMemory(), null).AsTask().GetAwaiter().GetResult();
                foreach (string? text in values)
                {
                    row++;
                    if (string.IsNullOrWhiteSpace(text)) { Skips.Add("empty document (null or whitespace)", $"{path} row {row}"); continue; }
                    yield return new DocumentPart(index, $"{name}#{row}", text, true, true);
                }
            }
        }
        finally
        {
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }
}
