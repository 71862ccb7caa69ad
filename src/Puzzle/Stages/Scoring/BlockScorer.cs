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
    public string Id => $"{Attention}+{Ffn}";

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
/// own block and the parent layers after it, and the parent's log-probabilities are recomputed per batch, over the
/// vocabulary in chunks (memory ∝ hidden × tokens, not vocabulary × tokens; docs/memory.md).
/// </summary>
public static class BlockScorer
{
    public const string Folder = "scores";
    public const string FileName = "scores.json";

    public static ScoringResult Run(RunDirectory run, Shard shard, IProgressReporter? progress = null, Action<string>? log = null)
    {
        progress ??= Progress.Current;
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        var s = run.Config.Scoring;
        if (s.Mode is not ("composed" or "subblocks"))
            throw new PuzzleException($"scoring.mode '{s.Mode}' is not 'composed' or 'subblocks'");
        var device = Runtime.Devices.Parse(s.Device);
        using var parent = Checkpoint.Load(run.ParentDir, device);
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
        Directory.CreateDirectory(run.Artifact(Folder));

        int rows = manifest.RequireWindows("validation", s.ValidationTokens, "replace-1-block scoring (scoring.validation_tokens)");
        using var validation = new TokenDataset(run.DataDir, "validation");
        var loader = new TokenBatchLoader(validation, manifest.SeqLen, 0, shuffle: false);
        using var windows = tensor(loader.Next(rows), [rows, manifest.SeqLen + 1], device: device);
        long tokens = (long)rows * manifest.SeqLen;

        // The parent's pass over the windows is only needed for candidates still to score.
        string parentPath = run.Artifact(Folder, "parent.json");
        var stored = JsonFile.ReadDerived(parentPath, j => j["lm_loss"].Double() >= 0);
        using var cache = pending.Count > 0 || stored?["fingerprint"].OptionalString() != fingerprint ? ParentCache.Build(parent, windows, s.Batch, Checkpoint.ParseDtype(s.CacheDtype)) : null;
        double parentLmLoss = cache?.LmLoss ?? stored!.Value["lm_loss"].Double();
        if (cache is not null)
            AtomicFile.WriteJson(parentPath, new JsonObject { ["fingerprint"] = fingerprint, ["lm_loss"] = cache.LmLoss, ["tokens"] = tokens });
        if (cache is not null && pending.Count > 0)
        {
            using var task = progress.Start("score", pending.Count);
            int done = 0;
            foreach (var candidate in pending)
            {
                var score = Score(parent, run.Path, candidate, cache, s.Batch);
                AtomicFile.WriteJson(Path.Combine(run.Artifact(Folder), candidate.Id + ".json"), new JsonObject
                {
                    ["fingerprint"] = fingerprint, ["score"] = score.ToJson(),
                });
                task.Report(++done, $"{candidate.Id}: KL {score.Kl:F4}");
            }
        }
        var scores = candidates.Select(c => TryRead(run.Path, c.Id, fingerprint)).OfType<BlockScore>().ToList();
        var index = new JsonObject
        {
            ["format_version"] = 1,
            ["fingerprint"] = fingerprint,
            ["mode"] = s.Mode,
            ["tokens"] = tokens,
            ["parent_lm_loss"] = parentLmLoss,
            ["candidates_total"] = candidates.Count,
            ["complete"] = scores.Count == candidates.Count,
            ["entries"] = new JsonArray(scores.Select(x => (JsonNode)x.ToJson()).ToArray()),
        };
        AtomicFile.WriteJson(run.Artifact(FileName), index);
        log($"score: {scores.Count}/{candidates.Count} candidates scored on {tokens:N0} tokens (parent LM loss {parentLmLoss:F4}) in {clock.Elapsed.TotalSeconds:F1} s -> {run.Artifact(FileName)}");
        return new ScoringResult(s.Mode, candidates.Count, pending.Count, mine.Count - pending.Count, parentLmLoss, tokens, scores, clock.Elapsed.TotalSeconds);
    }

    public sealed record Candidate(int Layer, SubblockVariant Attention, SubblockVariant Ffn)
    {
        public string Id => $"{Attention.Id}+{Ffn.Id}";
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
    /// from the cached layer input; the parent's log-probabilities are recomputed per batch from its cached final hidden
    /// states, and KL, NLL and top-1 are taken over the vocabulary in chunks (<see cref="VocabularyChunks"/>), so no
    /// [tokens, vocabulary] tensor is ever whole.
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
            var stats = VocabularyChunks.Compare(cache.FinalHidden.narrow(0, start, n), parent.Model.Norm.call(h), parent.LmHeadWeight,
                cache.Targets.narrow(0, start, n), cache.VocabChunk);
            kl += stats.Kl.sum().item<double>();
            nll += stats.Nll.sum().item<double>();
            agree += stats.Top1.eq(cache.ParentTop1.narrow(0, start, n)).sum().item<long>();
        }
        long tokens = rows * t;
        return new BlockScore(layer, attentionId, ffnId, kl / tokens, nll / tokens, agree / tokens, tokens);
    }
}

/// <summary>
/// The parent on the scoring windows, in memory that scales with hidden size × tokens: every layer's input (bf16 by
/// default: L × N × T × H × 2 bytes), the normed final hidden state (fp32, N × T × H × 4), the argmax and the targets.
/// Log-probabilities are not stored; they are recomputed per batch (<see cref="BlockScorer.ScoreBlock"/>).
/// </summary>
public sealed class ParentCache : IDisposable
{
    public required Tensor[] LayerInputs { get; init; }                                        // L × [N, T, H] (cache dtype)
    public required Tensor FinalHidden { get; init; }                                          // [N, T, H] float32, after the final norm
    public required Tensor ParentTop1 { get; init; }                                           // [N, T]
    public required Tensor Targets { get; init; }                                              // [N, T]
    public required long VocabChunk { get; init; }
    public double LmLoss { get; init; }

    /// <summary>Bytes the cache holds (the memory model's scoring term).</summary>
    public static long Bytes(int layers, int hidden, long tokens, int cacheElementBytes) =>
        tokens * hidden * ((long)layers * cacheElementBytes + 4) + tokens * 16;

    /// <summary>Vocabulary columns per chunk so that one [batch × T, chunk] fp32 block holds about 2^24 values.</summary>
    public static long DefaultVocabChunk(long batchTokens, int vocab) => Math.Min(vocab, Math.Max(128, (1L << 24) / Math.Max(1, batchTokens)));

    public static ParentCache Build(CausalLm parent, Tensor windows, int batch, ScalarType cacheDtype = ScalarType.BFloat16, long? vocabChunk = null)
    {
        using var noGrad = no_grad();
        long rows = windows.shape[0], t = windows.shape[1] - 1;
        int hidden = parent.Config.HiddenSize;
        long chunk = vocabChunk ?? DefaultVocabChunk(Math.Min(batch, rows) * t, parent.Config.VocabSize);
        // Filled in place batch by batch: no per-batch lists concatenated while alive.
        var layerInputs = new Tensor[parent.Config.NumLayers];
        Tensor? final = null, top1 = null, targets = null;
        double nll = 0;
        try
        {
            for (int i = 0; i < layerInputs.Length; i++) layerInputs[i] = empty([rows, t, hidden], dtype: cacheDtype, device: parent.Device);
            final = empty([rows, t, hidden], dtype: ScalarType.Float32, device: parent.Device);
            top1 = empty([rows, t], dtype: ScalarType.Int64, device: parent.Device);
            targets = windows.narrow(1, 1, t).contiguous();
            for (long start = 0; start < rows; start += batch)
            {
                using var scope = NewDisposeScope();
                long n = Math.Min(batch, rows - start);
                var ids = windows.narrow(0, start, n).narrow(1, 0, t);
                var inputs = parent.PrefillInputs(t, 0, parent.DType);
                var h = parent.Model.EmbedTokens.call(ids);
                for (int i = 0; i < parent.Config.NumLayers; i++)
                {
                    layerInputs[i].narrow(0, start, n).copy_(h);
                    h = parent.Layer(i).Forward(h, inputs with { Layer = i });
                }
                var normed = parent.Model.Norm.call(h).to(ScalarType.Float32);
                final.narrow(0, start, n).copy_(normed);
                var stats = VocabularyChunks.Compare(normed, normed, parent.LmHeadWeight, targets.narrow(0, start, n), chunk);
                top1.narrow(0, start, n).copy_(stats.Top1);
                nll += stats.Nll.sum().item<double>();
            }
        }
        catch
        {
            foreach (var x in layerInputs) x?.Dispose();
            final?.Dispose();
            top1?.Dispose();
            targets?.Dispose();
            throw;
        }
        return new ParentCache
        {
            LayerInputs = layerInputs, FinalHidden = final, ParentTop1 = top1, Targets = targets, VocabChunk = chunk,
            LmLoss = nll / (rows * t),
        };
    }

    public void Dispose()
    {
        foreach (var t in LayerInputs) t.Dispose();
        FinalHidden.Dispose();
        ParentTop1.Dispose();
        Targets.Dispose();
    }
}

/// <summary>
/// KL(p || q), −log q(target) and argmax q per token, where p = softmax(h_p Wᵀ) and q = softmax(h_q Wᵀ), computed over
/// the vocabulary in chunks in one pass with running maxima (online log-sum-exp): with a = h_p Wᵀ, b = h_q Wᵀ and
/// A, B their log-sum-exps, KL = E_p[a − b] − (A − B). Memory: a few [tokens, chunk] fp32 blocks.
/// </summary>
public static class VocabularyChunks
{
    /// <summary>Per-token results, [.., T] each: KL (float64), NLL of the targets under q (float64), argmax q (int64).</summary>
    public sealed record Result(Tensor Kl, Tensor Nll, Tensor Top1);

    public static Result Compare(Tensor hiddenP, Tensor hiddenQ, Tensor weight, Tensor targets, long chunk)
    {
        using var scope = NewDisposeScope();
        if (chunk <= 0) throw new PuzzleException($"vocabulary chunk must be positive, got {chunk}");
        var hp = hiddenP.to(ScalarType.Float32);
        var hq = hiddenQ.to(ScalarType.Float32);
        long vocab = weight.shape[0];
        var shape = hp.shape[..^1];
        var device = hp.device;
        Tensor mA = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), sA = zeros(shape, device: device), w = zeros(shape, device: device);
        Tensor mB = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), sB = zeros(shape, device: device);
        Tensor best = full(shape, double.NegativeInfinity, dtype: ScalarType.Float32, device: device), arg = zeros(shape, dtype: ScalarType.Int64, device: device);
        Tensor target = zeros(shape, device: device);
        for (long start = 0; start < vocab; start += chunk)
        {
            using var chunkScope = NewDisposeScope();
            long c = Math.Min(chunk, vocab - start);
            var wc = weight.narrow(0, start, c).to(ScalarType.Float32);
            var a = nn.functional.linear(hp, wc);
            var b = ReferenceEquals(hiddenP, hiddenQ) ? a : nn.functional.linear(hq, wc);
            var newA = maximum(mA, a.amax([-1]));
            var scaleA = (mA - newA).exp_();
            var e = (a - newA.unsqueeze(-1)).exp_();
            var newS = sA * scaleA + e.sum(-1);
            var newW = w * scaleA + (e * (a - b)).sum(-1);
            var newB = maximum(mB, b.amax([-1]));
            var newSB = sB * (mB - newB).exp_() + (b - newB.unsqueeze(-1)).exp_().sum(-1);
            var (values, indices) = b.max(-1);
            var better = values.gt(best);
            var newBest = where(better, values, best);
            var newArg = where(better, indices + start, arg);
            var local = targets - start;
            var inside = local.ge(0).logical_and(local.lt(c));
            var picked = b.gather(-1, local.clamp(0, c - 1).unsqueeze(-1)).squeeze(-1);
            var newTarget = where(inside, picked, target);
            foreach (var x in new[] { mA, sA, w, mB, sB, best, arg, target }) x.Dispose();
            (mA, sA, w, mB, sB, best, arg, target) = (newA.MoveToOuterDisposeScope(), newS.MoveToOuterDisposeScope(), newW.MoveToOuterDisposeScope(),
                newB.MoveToOuterDisposeScope(), newSB.MoveToOuterDisposeScope(), newBest.MoveToOuterDisposeScope(), newArg.MoveToOuterDisposeScope(),
                newTarget.MoveToOuterDisposeScope());
        }
        var lseA = mA.to(ScalarType.Float64) + sA.to(ScalarType.Float64).log();
        var lseB = mB.to(ScalarType.Float64) + sB.to(ScalarType.Float64).log();
        var kl = w.to(ScalarType.Float64) / sA.to(ScalarType.Float64) - (lseA - lseB);
        var nll = lseB - target.to(ScalarType.Float64);
        return new Result(kl.MoveToOuterDisposeScope(), nll.MoveToOuterDisposeScope(), arg.MoveToOuterDisposeScope());
    }
}
