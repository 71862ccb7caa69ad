using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Data;

/// <summary>The manifest of a prepared data folder (manifest.json): splits, shards, token dtype, provenance.</summary>
public sealed record DataManifest(int SeqLen, string TokenDtype, int VocabSize, int? BosId, IReadOnlyList<int> EosIds,
    IReadOnlyDictionary<string, SplitInfo> Splits, string TokenizerSha256)
{
    public const string FileName = "manifest.json";
    public const string TokenizerFolder = "tokenizer";
    /// <summary>2: three splits (train / validation / test); 1 had no test split.</summary>
    public const int FormatVersion = 2;

    /// <summary>The format version the manifest was written with (1 when absent).</summary>
    public int Format { get; init; } = 1;

    /// <summary>Where the manifest was read from (for error messages).</summary>
    public string ManifestPath { get; init; } = FileName;

    /// <summary>The split's description; a clear error when the data was prepared without it (format 1: no test split).</summary>
    public SplitInfo Split(string name)
    {
        if (Splits.TryGetValue(name, out var info)) return info;
        if (name == "test")
            throw new PuzzleException($"{ManifestPath}: no 'test' split (data format {Format}, prepared before held-out test documents existed); " +
                                      "re-prepare it with `puzzle data prepare` (it now writes train, validation and test splits; see --test-fraction), " +
                                      "or delete a pipeline's RUN/data so `puzzle run` prepares it again");
        throw new PuzzleException($"{ManifestPath}: no split '{name}' (has {string.Join(", ", Splits.Keys)})");
    }

    /// <summary>
    /// Checks that the split holds at least <paramref name="tokens"/> tokens in whole windows of the manifest's
    /// sequence length (as the loaders serve them) and returns that window count; never falls back to another split.
    /// </summary>
    public int RequireWindows(string split, long tokens, string purpose)
    {
        var info = Split(split);
        long needWindows = Math.Max(1, tokens / SeqLen);
        long haveWindows = Math.Max(0, (info.Tokens - 1) / SeqLen);
        if (haveWindows < needWindows)
            throw new PuzzleException($"{ManifestPath}: split '{split}' holds {info.Tokens:N0} tokens ({haveWindows} windows of {SeqLen}), " +
                                      $"but {purpose} needs {needWindows * SeqLen:N0} tokens ({needWindows} windows); " +
                                      $"prepare the data with a larger {split} fraction or ask for fewer tokens");
        return (int)needWindows;
    }

    public static DataManifest Read(string dataDir)
    {
        string path = Path.Combine(dataDir, FileName);
        if (!File.Exists(path)) throw new PuzzleException($"{path}: not found (prepare the data with `puzzle data prepare`)");
        var root = JsonFile.Read(path);                                                           // validated: errors name the key
        var splits = new Dictionary<string, SplitInfo>();
        foreach (var (name, node) in root["splits"].Properties())
        {
            var shards = node["shards"].Items().Select(x => new ShardInfo(x["file"].String(), x["tokens"].Long())).ToArray();
            long tokens = node["tokens"].Long();
            if (tokens < 0 || shards.Any(x => x.Tokens < 0) || shards.Sum(x => x.Tokens) != tokens)
                throw new PuzzleException($"{path}: splits.{name}.tokens ({tokens}) must be >= 0 and equal the sum of its shards' tokens ({shards.Sum(x => x.Tokens)})");
            splits[name] = new SplitInfo(node["documents"].Long(), tokens, shards);
        }
        var tokenizer = root["tokenizer"];
        int format = root["format_version"].OptionalInt() ?? 1;
        if (format > FormatVersion)
            throw new PuzzleException($"{path}: format_version {format} is newer than this build reads ({FormatVersion})");
        int seqLen = root["seq_len"].Int(), vocab = tokenizer["vocab_size"].Int();
        if (seqLen < 2) throw new PuzzleException($"{path}: seq_len must be at least 2, got {seqLen}");
        if (vocab <= 0) throw new PuzzleException($"{path}: tokenizer.vocab_size must be positive, got {vocab}");
        string dtype = root["token_dtype"].String();
        if (dtype is not ("uint16" or "uint32")) throw root["token_dtype"].Error("\"uint16\" or \"uint32\"");
        if (!splits.ContainsKey("train")) throw new PuzzleException($"{path}: splits has no 'train' split (has {string.Join(", ", splits.Keys.DefaultIfEmpty("none"))})");
        return new DataManifest(
            seqLen,
            dtype,
            vocab,
            tokenizer["bos_id"].OptionalInt(),
            tokenizer["eos_ids"].Items().Select(x => x.Int()).ToArray(),
            splits,
            tokenizer["sha256"].String()) { Format = format, ManifestPath = path };
    }
}

public sealed record SplitInfo(long Documents, long Tokens, IReadOnlyList<ShardInfo> Shards);

public sealed record ShardInfo(string File, long Tokens);

/// <summary>One split of a prepared data folder: its shards memory-mapped, read as one token stream.</summary>
public sealed class TokenDataset : IDisposable
{
    readonly (MemoryMappedFile Map, MemoryMappedViewAccessor View, long First, long Count)[] _shards;
    readonly int _bytesPerToken;

    public string Split { get; }
    public long Tokens { get; }
    public DataManifest Manifest { get; }

    public TokenDataset(string dataDir, string split)
    {
        Manifest = DataManifest.Read(dataDir);
        var info = Manifest.Split(split);
        Split = split;
        _bytesPerToken = Manifest.TokenDtype == "uint16" ? 2 : 4;
        var shards = new List<(MemoryMappedFile, MemoryMappedViewAccessor, long, long)>();
        long first = 0;
        foreach (var shard in info.Shards.Where(s => s.Tokens > 0))
        {
            string path = Path.Combine(dataDir, shard.File);
            if (!File.Exists(path)) throw new PuzzleException($"{path}: shard listed in the manifest is missing");
            long expected = shard.Tokens * _bytesPerToken;
            if (new FileInfo(path).Length != expected)
                throw new PuzzleException($"{path}: shard holds {new FileInfo(path).Length} bytes but the manifest says {shard.Tokens} tokens ({expected} bytes)");
            var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            shards.Add((map, map.CreateViewAccessor(0, expected, MemoryMappedFileAccess.Read), first, shard.Tokens));
            first += shard.Tokens;
        }
        _shards = [.. shards];
        Tokens = first;
    }

    /// <summary>
    /// Where each document of the split starts in its stream: after every end-of-document token the preparer wrote
    /// (the manifest's EOS ids), or at every BOS where the tokenizer has no EOS; one document when it has neither.
    /// </summary>
    public long[] DocumentStarts()
    {
        var eos = Manifest.EosIds.Select(e => (long)e).ToHashSet();
        long? bos = eos.Count == 0 ? Manifest.BosId : null;
        var starts = new List<long> { 0 };
        var buffer = new long[1 << 16];
        for (long start = 0; start < Tokens; start += buffer.Length)
        {
            int n = (int)Math.Min(buffer.Length, Tokens - start);
            Read(start, buffer.AsSpan(0, n));
            for (int i = 0; i < n; i++)
            {
                long position = start + i;
                if (eos.Contains(buffer[i]) && position + 1 < Tokens) starts.Add(position + 1);
                else if (bos is { } b && buffer[i] == b && position > 0) starts.Add(position);
            }
        }
        return [.. starts];
    }

    /// <summary>Copies tokens [start, start + destination.Length) of the split's stream.</summary>
    public void Read(long start, Span<long> destination)
    {
        if (start < 0 || start + destination.Length > Tokens)
            throw new ArgumentOutOfRangeException(nameof(start), $"tokens [{start}, {start + destination.Length}) are outside the split's {Tokens}");
        int written = 0;
        int s = FindShard(start);
        while (written < destination.Length)
        {
            var (_, view, first, count) = _shards[s];
            long offset = start + written - first;
            int n = (int)Math.Min(destination.Length - written, count - offset);
            for (int i = 0; i < n; i++)
                destination[written + i] = _bytesPerToken == 2
                    ? view.ReadUInt16((offset + i) * 2)
                    : view.ReadUInt32((offset + i) * 4);
            written += n;
            s++;
        }
    }

    int FindShard(long position)
    {
        int lo = 0, hi = _shards.Length - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_shards[mid].First <= position) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    public void Dispose()
    {
        foreach (var (map, view, _, _) in _shards)
        {
            view.Dispose();
            map.Dispose();
        }
    }
}

/// <summary>Where a loader is in its stream: which epoch and how many windows of it were served.</summary>
public sealed record LoaderState(int Epoch, long Cursor);

/// <summary>
/// Serves [B, T+1] token windows from a split: windows start every T tokens (so every token is a target once per
/// epoch), visited in a seeded random order per epoch (or in order, for evaluation). Resumable from its state.
/// </summary>
public sealed class TokenBatchLoader
{
    readonly TokenDataset _data;
    readonly int _seqLen;
    readonly long _seed;
    readonly bool _shuffle;
    long[]? _order;
    int _orderEpoch = -1;

    public long Windows { get; }
    public LoaderState State { get; set; } = new(0, 0);

    public TokenBatchLoader(TokenDataset data, int seqLen, long seed, bool shuffle = true)
    {
        _data = data;
        _seqLen = seqLen;
        _seed = seed;
        _shuffle = shuffle;
        Windows = (data.Tokens - 1) / seqLen;
        if (Windows <= 0)
            throw new PuzzleException($"split '{data.Split}' holds {data.Tokens} tokens, fewer than one window of {seqLen + 1}");
    }

    /// <summary>The next <paramref name="batch"/> windows as a row-major [batch, T+1] array.</summary>
    public long[] Next(int batch)
    {
        var result = new long[batch * (_seqLen + 1)];
        var (epoch, cursor) = State;
        for (int b = 0; b < batch; b++)
        {
            if (cursor >= Windows) { epoch++; cursor = 0; }
            long window = WindowAt(epoch, cursor++);
            _data.Read(window * _seqLen, result.AsSpan(b * (_seqLen + 1), _seqLen + 1));
        }
        State = new LoaderState(epoch, cursor);
        return result;
    }

    long WindowAt(int epoch, long cursor)
    {
        if (!_shuffle) return cursor;
        if (_orderEpoch != epoch)
        {
            _order ??= new long[Windows];
            for (long i = 0; i < Windows; i++) _order[i] = i;
            new Random((int)(Hashing.UnitInterval(_seed, $"epoch {epoch}") * int.MaxValue)).Shuffle(_order);   // stable across runs and machines
            _orderEpoch = epoch;
        }
        return _order![cursor];
    }
}

public static class Hashing
{
    public static string Sha256File(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>A stable number in [0, 1) for a key and seed (same on every machine and run).</summary>
    public static double UnitInterval(long seed, string key)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}\u0000{key}"));
        return (BitConverter.ToUInt64(hash, 0) >> 11) / (double)(1UL << 53);
    }
}
