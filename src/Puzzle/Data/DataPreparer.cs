using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Tokenization;

namespace Puzzle.Data;

public sealed record DataPrepareOptions
{
    public required string TokenizerDir { get; init; }
    public required IReadOnlyList<string> Inputs { get; init; }
    public required string OutDir { get; init; }
    public int SeqLen { get; init; } = 256;
    public double ValidationFraction { get; init; } = 0.05;
    /// <summary>Share of documents held out for `puzzle eval` only (nothing that trains or selects reads them).</summary>
    public double TestFraction { get; init; } = 0.05;
    public string TextField { get; init; } = "text";
    /// <summary>.txt documents: "file" (one per file) or "paragraphs" (blank-line separated blocks of one file).</summary>
    public string TxtDocuments { get; init; } = "file";
    public long Seed { get; init; }
    public long MaxShardTokens { get; init; } = 1L << 26;
    /// <summary>Parts tokenized together in parallel; bounds memory.</summary>
    public int BatchChars { get; init; } = 8 << 20;
}

public sealed record DataPrepareResult(DataManifest Manifest, SkipReport Skips, bool Reused, long PeakWorkingSetBytes, double Seconds);

/// <summary>
/// Tokenizes documents (in parallel, streaming: the corpus is never held whole) into memory-mappable token shards
/// per split, with a deterministic by-document split and a manifest of counts, checksums and settings.
/// </summary>
public static class DataPreparer
{
    public static DataPrepareResult Prepare(DataPrepareOptions options, Action<string>? log = null)
    {
        log ??= Log.Info;
        if (options.SeqLen < 2) throw new PuzzleException($"--seq-len must be at least 2, got {options.SeqLen}");
        if (options.ValidationFraction is < 0 or >= 1)
            throw new PuzzleException($"--validation-fraction must be in [0, 1), got {options.ValidationFraction}");
        if (options.TestFraction is < 0 or >= 1 || options.ValidationFraction + options.TestFraction >= 1)
            throw new PuzzleException($"--test-fraction must be in [0, 1) and leave documents for training, got {options.TestFraction} (validation {options.ValidationFraction})");
        var clock = Stopwatch.StartNew();
        var sources = new DocumentSources(options.Inputs, options.TextField, options.TxtDocuments);
        var sourceInfo = sources.Files.Select(f => (Path: Path.GetFullPath(f), Sha: Hashing.Sha256File(f), Bytes: new FileInfo(f).Length)).ToList();
        string tokenizerSha = TokenizerChecksum(options.TokenizerDir);
        string fingerprint = Fingerprint(options, sourceInfo.Select(s => s.Sha), tokenizerSha);

        string manifestPath = Path.Combine(options.OutDir, DataManifest.FileName);
        if (JsonFile.ReadDerived(manifestPath)?["fingerprint"].OptionalString() == fingerprint)
        {
            log($"data: {options.OutDir} is already prepared from the same inputs, tokenizer and settings; reusing it");
            return new DataPrepareResult(DataManifest.Read(options.OutDir), new SkipReport(), true, 0, clock.Elapsed.TotalSeconds);
        }
        Directory.CreateDirectory(options.OutDir);
        if (File.Exists(manifestPath)) File.Delete(manifestPath);           // the old manifest must not vouch for new shards

        using var tokenizer = TextTokenizer.Load(options.TokenizerDir);
        string dtype = tokenizer.VocabSize <= 65536 ? "uint16" : "uint32";
        var writers = new Dictionary<string, ShardWriter>
        {
            ["train"] = new(options.OutDir, "train", dtype, options.MaxShardTokens),
            ["validation"] = new(options.OutDir, "validation", dtype, options.MaxShardTokens),
            ["test"] = new(options.OutDir, "test", dtype, options.MaxShardTokens),
        };
        var documents = new Dictionary<string, long> { ["train"] = 0, ["validation"] = 0, ["test"] = 0 };
        var perSource = new long[sources.Files.Count, 2];   // documents, tokens
        long totalTokens = 0;
        var batch = new List<DocumentPart>();
        long batchChars = 0;

        void Flush()
        {
            // Tokenize in parallel, write in order.
            var encoded = batch.AsParallel().AsOrdered().WithDegreeOfParallelism(Environment.ProcessorCount)
                .Select(p => tokenizer.EncodeRaw(p.Text)).ToArray();
            for (int i = 0; i < batch.Count; i++)
            {
                var part = batch[i];
                string split = SplitOf(Hashing.UnitInterval(options.Seed, part.DocumentKey), options.ValidationFraction, options.TestFraction);
                var writer = writers[split];
                long before = writer.TotalTokens;
                if (part.IsFirst && tokenizer.AddBos && tokenizer.BosId is { } bos) writer.Write(bos);
                foreach (int id in encoded[i]) writer.Write(id);
                if (part.IsLast && tokenizer.EosIds.Count > 0) writer.Write(tokenizer.EosIds[0]);
                if (part.IsFirst) { documents[split]++; perSource[part.SourceIndex, 0]++; }
                perSource[part.SourceIndex, 1] += writer.TotalTokens - before;
                totalTokens += writer.TotalTokens - before;
            }
            batch.Clear();
            batchChars = 0;
        }

        long lastReport = 0;
        foreach (var part in sources.Read())
        {
            batch.Add(part);
            batchChars += part.Text.Length;
            if (batchChars >= options.BatchChars) Flush();
            if (totalTokens - lastReport >= 5_000_000)
            {
                lastReport = totalTokens;
                log($"data: {totalTokens:N0} tokens, {totalTokens / clock.Elapsed.TotalSeconds:N0} tokens/s");
            }
        }
        Flush();
        foreach (var w in writers.Values) w.Dispose();
        if (documents["train"] == 0)
            throw new PuzzleException($"no training documents: {sources.Skips.Total} skipped ({string.Join("; ", sources.Skips.Counts.Select(kv => $"{kv.Key}: {kv.Value}"))})");
        if (options.ValidationFraction > 0 && documents["validation"] == 0)
            Log.Warning($"data: no document fell into the validation split (fraction {options.ValidationFraction}, {documents["train"]} documents)");
        if (options.TestFraction > 0 && documents["test"] == 0)
            Log.Warning($"data: no document fell into the test split (fraction {options.TestFraction}, {documents["train"]} documents)");

        long peak = Process.GetCurrentProcess().PeakWorkingSet64;
        var splits = new JsonObject();
        foreach (var (name, writer) in writers)
            splits[name] = new JsonObject
            {
                ["documents"] = documents[name],
                ["tokens"] = writer.TotalTokens,
                ["shards"] = new JsonArray(writer.Shards.Select(s => (JsonNode)new JsonObject { ["file"] = s.File, ["tokens"] = s.Tokens }).ToArray()),
            };
        // Keep the tokenizer with the data, so a model trained on it ships the exact tokenizer.
        string tokenizerCopy = Path.Combine(options.OutDir, DataManifest.TokenizerFolder);
        foreach (string name in TokenizerFileNames)
        {
            string source = Path.Combine(options.TokenizerDir, name);
            if (File.Exists(source)) AtomicFile.Copy(source, Path.Combine(tokenizerCopy, name));
        }
        var manifest = new JsonObject
        {
            ["format_version"] = DataManifest.FormatVersion,
            ["fingerprint"] = fingerprint,
            ["seq_len"] = options.SeqLen,
            ["validation_fraction"] = options.ValidationFraction,
            ["test_fraction"] = options.TestFraction,
            ["split_rule"] = "by document: u = SHA-256(seed, document key) in [0, 1); u < validation_fraction: validation; " +
                             "u < validation_fraction + test_fraction: test; else train",
            ["seed"] = options.Seed,
            ["text_field"] = options.TextField,
            ["txt_documents"] = options.TxtDocuments,
            ["token_dtype"] = dtype,
            ["tokenizer"] = new JsonObject
            {
                ["source"] = Path.GetFullPath(options.TokenizerDir),
                ["sha256"] = tokenizerSha,
                ["vocab_size"] = tokenizer.VocabSize,
                ["bos_id"] = tokenizer.BosId,
                ["eos_ids"] = new JsonArray(tokenizer.EosIds.Select(e => (JsonNode)e).ToArray()),
                ["add_bos"] = tokenizer.AddBos,
            },
            ["sources"] = new JsonArray(sourceInfo.Select((s, i) => (JsonNode)new JsonObject
            {
                ["path"] = s.Path, ["sha256"] = s.Sha, ["bytes"] = s.Bytes,
                ["documents"] = perSource[i, 0], ["tokens"] = perSource[i, 1],
            }).ToArray()),
            ["skipped"] = new JsonObject
            {
                ["total"] = sources.Skips.Total,
                ["reasons"] = new JsonObject(sources.Skips.Counts.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
                ["examples"] = new JsonArray(sources.Skips.Examples.Select(e => (JsonNode)e).ToArray()),
            },
            ["splits"] = splits,
            ["peak_working_set_bytes"] = peak,
            ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2),
        };
        AtomicFile.WriteJson(manifestPath, manifest);
        log($"data: {totalTokens:N0} tokens ({documents["train"]} train / {documents["validation"]} validation / {documents["test"]} test documents) in {clock.Elapsed.TotalSeconds:F1} s, " +
            $"{writers["train"].TotalTokens:N0} train / {writers["validation"].TotalTokens:N0} validation / {writers["test"].TotalTokens:N0} test tokens, {dtype}, " +
            $"peak working set {peak / (1 << 20)} MiB");
        if (sources.Skips.Total > 0)
            Log.Warning($"data: skipped {sources.Skips.Total} documents: {string.Join("; ", sources.Skips.Counts.Select(kv => $"{kv.Key}: {kv.Value}"))} (e.g. {sources.Skips.Examples[0]})");
        return new DataPrepareResult(DataManifest.Read(options.OutDir), sources.Skips, false, peak, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// The split of a document from its stable hash: validation below the validation fraction, test in the next
    /// test-fraction slice, train above. Adding or growing the test split never moves a validation document.
    /// </summary>
    public static string SplitOf(double u, double validationFraction, double testFraction) =>
        u < validationFraction ? "validation" : u < validationFraction + testFraction ? "test" : "train";

    static readonly string[] TokenizerFileNames = [.. Checkpoints.Checkpoint.TokenizerFiles, "generation_config.json"];

    public static string TokenizerChecksum(string tokenizerDir)
    {
        var parts = new[] { "tokenizer.json", "tokenizer.model", "tokenizer_config.json" }.Select(n => Path.Combine(tokenizerDir, n)).Where(File.Exists)
            .Select(f => $"{Path.GetFileName(f)}={Hashing.Sha256File(f)}").ToList();
        if (parts.Count == 0) throw new PuzzleException($"{tokenizerDir}: no tokenizer.json or tokenizer.model");
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("\n", parts))));
    }

    static string Fingerprint(DataPrepareOptions o, IEnumerable<string> sourceShas, string tokenizerSha) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(
            $"v{DataManifest.FormatVersion}|{string.Join(",", sourceShas)}|{tokenizerSha}|{o.SeqLen}|{o.ValidationFraction}|{o.TestFraction}|{o.TextField}|{o.TxtDocuments}|{o.Seed}|{o.MaxShardTokens}")));

    /// <summary>Appends tokens to numbered shard files of one split; each shard appears under its final name only when complete.</summary>
    sealed class ShardWriter(string dir, string split, string dtype, long maxShardTokens) : IDisposable
    {
        BufferedStream? _stream;
        string? _tmp;
        long _inShard;
        readonly byte[] _scratch = new byte[4];
        public List<ShardInfo> Shards { get; } = new();
        public long TotalTokens { get; private set; }

        public void Write(int id)
        {
            if (_stream is null || _inShard >= maxShardTokens) Rotate();
            if (dtype == "uint16")
            {
                if ((uint)id > ushort.MaxValue) throw new PuzzleException($"token id {id} does not fit uint16");
                _scratch[0] = (byte)id; _scratch[1] = (byte)(id >> 8);
                _stream!.Write(_scratch, 0, 2);
            }
            else
            {
                BitConverter.TryWriteBytes(_scratch, (uint)id);
                _stream!.Write(_scratch, 0, 4);
            }
            _inShard++;
            TotalTokens++;
        }

        void Rotate()
        {
            Close();
            string file = $"{split}-{Shards.Count:00000}.bin";
            _tmp = Path.Combine(dir, file + ".tmp");
            _stream = new BufferedStream(new FileStream(_tmp, FileMode.Create, FileAccess.Write), 1 << 20);
            Shards.Add(new ShardInfo(file, 0));
            _inShard = 0;
        }

        void Close()
        {
            if (_stream is null) return;
            _stream.Flush();
            _stream.Dispose();
            _stream = null;
            File.Move(_tmp!, Path.Combine(dir, Shards[^1].File), overwrite: true);
            Shards[^1] = Shards[^1] with { Tokens = _inShard };
        }

        public void Dispose()
        {
            Close();
            // Remove shards of an earlier, larger preparation that this one did not rewrite.
            for (int k = Shards.Count; File.Exists(Path.Combine(dir, $"{split}-{k:00000}.bin")); k++)
                File.Delete(Path.Combine(dir, $"{split}-{k:00000}.bin"));
        }
    }
}
