using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Domain;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Stages.Library;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Stages.Scoring;

/// <summary>One scored candidate: layer, attention variant, FFN variant and the replace-1-block metrics.</summary>
public sealed record BlockScore(int Layer, string Attention, string Ffn, double Kl, double LmLoss, double Top1Agreement, long Tokens)
{
    public string Id => CandidateId.Of(Attention, Ffn).ToString();

    public JsonObject ToJson() => new()
    {
        ["layer"] = Layer, ["attention"] = Attention, ["ffn"] = Ffn, ["kl"] = Kl, ["lm_loss"] = LmLoss,
        ["top1_agreement"] = Top1Agreement, ["tokens"] = Tokens,
    };

    public static BlockScore FromJson(JsonNode j) => FromJson(new JsonField(j, "score", ""));

    public static BlockScore FromJson(JsonField j) => new(
        j["layer"].Int(), j["attention"].String(), j["ffn"].String(), j["kl"].Double(),
        j["lm_loss"].Double(), j["top1_agreement"].Double(), j["tokens"].Long());
}

public sealed record ScoringResult(string Mode, int Candidates, int Scored, int Skipped, double ParentLmLoss, long Tokens, IReadOnlyList<BlockScore> Scores, double Seconds);

/// <summary>
/// Stage 4: replace-1-block scoring (design.md 5). The parent with exactly one layer replaced by a candidate block,
/// on held-out tokens: KL(parent || child) per token (the objective), LM loss, top-1 agreement. The parent's
/// hidden state at every layer input (bf16) and its final hidden state are computed once; a candidate runs only its
/// own block and the parent layers after it, and its head over the vocabulary in chunks, against the parent's
/// per-token summary (memory ∝ hidden × tokens, not vocabulary × tokens; <see cref="ParentCache"/>, docs/memory.md).
/// </summary>
public static class BlockScorer
{
    public const string Folder = RunDirectory.ScoresFolder;
    public const string FileName = RunDirectory.ScoresFile;

    public static ScoringResult Run(RunDirectory run, IProgressReporter? progress = null, Action<string>? log = null)
    {
        var shard = run.Shard;
        progress ??= Progress.Current;
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        var s = run.Config.Scoring;
        if (s.Mode is not ("composed" or "subblocks"))
            throw new PuzzleException($"scoring.mode '{s.Mode}' is not 'composed' or 'subblocks'");
        var device = Runtime.Devices.Parse(s.Device);
        // The parent computes in the cache dtype: bf16 (the default) halves its memory; float32 keeps the exact fp32 scores.
        using var parent = Checkpoint.Load(run.ParentDir, device, Checkpoint.ParseDtype(s.CacheDtype));
        foreach (var p in parent.parameters()) p.requires_grad = false;
        var variants = run.Variants.All;
        var records = LibraryBlocks.Records(run, variants);
        string libraryFingerprint = records.Values.First().Fingerprint;
        var manifest = DataManifest.Read(run.DataDir);
        string fingerprint = ArtifactKeys.Scores(run, libraryFingerprint, manifest);

        var candidates = Candidates(parent.Config, variants, s.Mode);
        var mine = candidates.Where((c, i) => shard.Owns(i)).ToList();
        var pending = mine.Where(c => TryRead(run.Path, c.Id, fingerprint) is null).ToList();
        log($"score: {candidates.Count} candidates ({s.Mode}); shard {shard} owns {mine.Count}, {mine.Count - pending.Count} already scored");
        Directory.CreateDirectory(run.ScoresDir);

        int rows = manifest.RequireWindows("validation", s.ValidationTokens, "replace-1-block scoring (scoring.validation_tokens)");
        using var validation = new TokenDataset(run.DataDir, "validation");
        var loader = new TokenBatchLoader(validation, manifest.SeqLen, 0, shuffle: false);
        using var windows = tensor(loader.Next(rows), [rows, manifest.SeqLen + 1], device: device);
        long tokens = (long)rows * manifest.SeqLen;

        // The parent's pass over the windows is only needed for candidates still to score.
        string parentPath = Path.Combine(run.ScoresDir, "parent.json");
        var stored = JsonFile.ReadDerived(parentPath, j => j["lm_loss"].Double() >= 0);
        using var cache = pending.Count > 0 || stored?["fingerprint"].OptionalString() != fingerprint ? ParentCache.Build(parent, windows, s.Batch, Checkpoint.ParseDtype(s.CacheDtype)) : null;
        double parentLmLoss = cache?.LmLoss ?? stored!.Value["lm_loss"].Double();
        if (cache is not null)
            AtomicFile.WriteJson(parentPath, new JsonObject { ["fingerprint"] = fingerprint, ["lm_loss"] = cache.LmLoss, ["tokens"] = tokens });
        if (cache is not null && pending.Count > 0)
        {
            using var task = progress.Start("score", pending.Count);
            int done = 0;
            using var threads = Runtime.WorkThreads.Enter("score", log);
            foreach (var candidate in pending)
            {
                threads.Step();
                var score = Score(parent, run.Path, candidate, cache, s.Batch);
                AtomicFile.WriteJson(Path.Combine(run.ScoresDir, candidate.Id + ".json"), new JsonObject
                {
                    ["fingerprint"] = fingerprint, ["score"] = score.ToJson(),
                });
                task.Report(++done, $"{candidate.Id}: KL {score.Kl:F4}");
            }
        }
        var scores = candidates.Select(c => TryRead(run.Path, c.Id, fingerprint)).OfType<BlockScore>().ToList();
        new ScoresFile(fingerprint, s.Mode, tokens, parentLmLoss, candidates.Count, scores).Write(run.Scores);
        log($"score: {scores.Count}/{candidates.Count} candidates scored on {tokens:N0} tokens (parent LM loss {parentLmLoss:F4}) in {clock.Elapsed.TotalSeconds:F1} s -> {run.Scores}");
        return new ScoringResult(s.Mode, candidates.Count, pending.Count, mine.Count - pending.Count, parentLmLoss, tokens, scores, clock.Elapsed.TotalSeconds);
    }

    public sealed record Candidate(int Layer, SubblockVariant Attention, SubblockVariant Ffn)
    {
        public string Id => new CandidateId(Attention.Key, Ffn.Key).ToString();
    }

    /// <summary>Composed: every pair per layer. Subblocks: each variant with the parent's other sublayer.</summary>
    public static List<Candidate> Candidates(ModelConfig config, IReadOnlyList<SubblockVariant> variants, string mode)
    {
        var list = new List<Candidate>();
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            var attention = variants.Where(v => v.Layer == layer && v.Kind == SubblockKind.Attention).ToList();
            var ffn = variants.Where(v => v.Layer == layer && v.Kind == SubblockKind.Ffn).ToList();
            if (mode == "composed")
                list.AddRange(from a in attention from f in ffn select new Candidate(layer, a, f));
            else
            {
                var parentAttention = attention.Single(v => v.IsParent);
                var parentFfn = ffn.Single(v => v.IsParent);
                list.AddRange(attention.Select(a => new Candidate(layer, a, parentFfn)));
                list.AddRange(ffn.Where(f => !f.IsParent).Select(f => new Candidate(layer, parentAttention, f)));
            }
        }
        return list;
    }

    static BlockScore? TryRead(string runDir, string id, string fingerprint)
    {
        string path = Path.Combine(runDir, Folder, id + ".json");
        BlockScore? score = null;
        var node = JsonFile.ReadDerived(path, j =>
        {
            score = j["fingerprint"].OptionalString() == fingerprint ? BlockScore.FromJson(j["score"]) : null;
            return true;
        });
        return node is null ? null : score;
    }

    public static BlockScore Score(CausalLm parent, string runDir, Candidate c, ParentCache cache, int batch)
    {
        using var block = LibraryBlocks.Compose(parent, runDir, c.Layer, c.Attention, c.Ffn);
        return ScoreBlock(parent, block, c.Layer, c.Attention.Id, c.Ffn.Id, cache, batch);
    }

    /// <summary>
    /// Metrics of the parent with layer <paramref name="layer"/> replaced by <paramref name="block"/>: the candidate runs
    /// from the cached layer input; KL, NLL and top-1 are taken over the vocabulary in chunks against the parent's cached
    /// per-token summary (<see cref="VocabularyChunks.AgainstParent"/>), so no [tokens, vocabulary] tensor is ever whole
    /// and the parent's logits are never recomputed.
    /// </summary>
    public static BlockScore ScoreBlock(CausalLm parent, DecoderLayer block, int layer, string attentionId, string ffnId, ParentCache cache, int batch)
    {
        using var noGrad = no_grad();
        long rows = cache.Targets.shape[0], t = cache.Targets.shape[1];
        double kl = 0, nll = 0, agree = 0;
        for (long start = 0; start < rows; start += batch)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(batch, rows - start);
            var inputs = parent.PrefillInputs(t, layer, parent.DType);
            var h = block.Forward(cache.LayerInputs[layer].narrow(0, start, n).to(parent.DType), inputs);
            for (int i = layer + 1; i < parent.Config.NumLayers; i++) h = parent.Layer(i).Forward(h, inputs with { Layer = i });
            var stats = VocabularyChunks.AgainstParent(cache.ExpectedRow.narrow(0, start, n), cache.NegEntropy.narrow(0, start, n),
                parent.Model.Norm.call(h), parent.LmHeadWeight, cache.Targets.narrow(0, start, n), cache.VocabChunk);
            kl += stats.Kl.sum().item<double>();
            nll += stats.Nll.sum().item<double>();
            agree += stats.Top1.eq(cache.ParentTop1.narrow(0, start, n)).sum().item<long>();
        }
        long tokens = rows * t;
        return new BlockScore(layer, attentionId, ffnId, kl / tokens, nll / tokens, agree / tokens, tokens);
    }
}
