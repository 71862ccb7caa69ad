using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
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
/// log-probabilities and its hidden state at every layer input are computed once; a candidate runs only its own
/// block and the parent layers after it.
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
        var variants = SearchSpace.Expand(parent.Config, run.Config.SearchSpace);
        var records = LibraryBlocks.Records(run.Path, variants);
        string libraryFingerprint = records.Values.First().Fingerprint;
        var manifest = DataManifest.Read(run.DataDir);
        string fingerprint = RunDirectory.Hash($"{libraryFingerprint}|{s with { Device = "" }}|{manifest.TokenizerSha256}");

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
        using var cache = pending.Count > 0 || stored?["fingerprint"].OptionalString() != fingerprint ? ParentCache.Build(parent, windows, s.Batch) : null;
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

    /// <summary>Metrics of the parent with layer <paramref name="layer"/> replaced by <paramref name="block"/>.</summary>
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
            var h = block.Forward(cache.LayerInputs[layer].narrow(0, start, n), inputs);
            for (int i = layer + 1; i < parent.Config.NumLayers; i++) h = parent.Layer(i).Forward(h, inputs with { Layer = i });
            var logq = nn.functional.linear(parent.Model.Norm.call(h), parent.LmHeadWeight).to(ScalarType.Float32).log_softmax(-1);
            var logp = cache.LogProbs.narrow(0, start, n);
            kl += (logp.exp() * (logp - logq)).sum().item<float>();
            nll -= logq.gather(-1, cache.Targets.narrow(0, start, n).unsqueeze(-1)).sum().item<float>();
            agree += logq.argmax(-1).eq(cache.ParentTop1.narrow(0, start, n)).sum().item<long>();
        }
        long tokens = rows * t;
        return new BlockScore(layer, attentionId, ffnId, kl / tokens, nll / tokens, agree / tokens, tokens);
    }
}

/// <summary>The parent on the scoring windows: every layer's input, log-probabilities, argmax, targets, LM loss.</summary>
public sealed class ParentCache : IDisposable
{
    public required Tensor[] LayerInputs { get; init; }                                        // L × [N, T, H]
    public required Tensor LogProbs { get; init; }                                             // [N, T, V] float32
    public required Tensor ParentTop1 { get; init; }                                           // [N, T]
    public required Tensor Targets { get; init; }                                              // [N, T]
    public double LmLoss { get; init; }

    public static ParentCache Build(CausalLm parent, Tensor windows, int batch)
    {
        using var noGrad = no_grad();
        long rows = windows.shape[0], t = windows.shape[1] - 1;
        var layerInputs = Enumerable.Range(0, parent.Config.NumLayers).Select(_ => new List<Tensor>()).ToArray();
        var logProbs = new List<Tensor>();
        using var scope = NewDisposeScope();
        for (long start = 0; start < rows; start += batch)
        {
            var ids = windows.narrow(0, start, Math.Min(batch, rows - start)).narrow(1, 0, t);
            var inputs = parent.PrefillInputs(t, 0, parent.DType);
            var h = parent.Model.EmbedTokens.call(ids);
            for (int i = 0; i < parent.Config.NumLayers; i++)
            {
                layerInputs[i].Add(h);
                h = parent.Layer(i).Forward(h, inputs with { Layer = i });
            }
            logProbs.Add(nn.functional.linear(parent.Model.Norm.call(h), parent.LmHeadWeight).to(ScalarType.Float32).log_softmax(-1));
        }
        var logp = cat(logProbs, 0);
        var targets = windows.narrow(1, 1, t).contiguous();
        double lmLoss = -logp.gather(-1, targets.unsqueeze(-1)).mean().item<float>();
        return new ParentCache
        {
            LayerInputs = layerInputs.Select(l => cat(l, 0).MoveToOuterDisposeScope()).ToArray(),
            LogProbs = logp.MoveToOuterDisposeScope(),
            ParentTop1 = logp.argmax(-1).MoveToOuterDisposeScope(),
            Targets = targets.MoveToOuterDisposeScope(),
            LmLoss = lmLoss,
        };
    }

    public void Dispose()
    {
        foreach (var t in LayerInputs) t.Dispose();
        LogProbs.Dispose();
        ParentTop1.Dispose();
        Targets.Dispose();
    }
}
