using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.IO;
using Puzzle.Stages.Assembly;
using Puzzle.Training;

namespace Puzzle.Stages.Search;

/// <summary>One candidate's probe: its validation KL to the parent as assembled and after a short GKD.</summary>
public sealed record ProbeOutcome(string Name, double SummedKl, double? MeasuredRatio, double InitialKl, double ProbedKl, int Steps)
{
    public JsonObject ToJson() => new()
    {
        ["name"] = Name, ["summed_block_kl"] = SummedKl, ["measured_ratio"] = MeasuredRatio,
        ["initial_validation_kl"] = InitialKl, ["probed_validation_kl"] = ProbedKl, ["steps"] = Steps,
    };

    public static ProbeOutcome Parse(JsonField j) => new(j["name"].String(), j["summed_block_kl"].Double(), j["measured_ratio"].OptionalDouble(),
        j["initial_validation_kl"].Double(), j["probed_validation_kl"].Double(), j["steps"].Int());
}

/// <summary>How the child was chosen among the search's diverse candidates: the probe's tokens, each candidate's outcome, the winner.</summary>
public sealed record ProbeSelection(long Tokens, string Chosen, IReadOnlyList<ProbeOutcome> Candidates)
{
    public JsonObject ToJson() => new()
    {
        ["tokens"] = Tokens, ["chosen"] = Chosen, ["candidates"] = new JsonArray(Candidates.Select(c => (JsonNode)c.ToJson()).ToArray()),
    };

    public static ProbeSelection Parse(JsonField j) => new(j["tokens"].Long(), j["chosen"].String(), j["candidates"].Items().Select(ProbeOutcome.Parse).ToList());
}

/// <summary>
/// Chooses the child among the search's candidates by what global distillation makes of each, not by the summed
/// replace-1-block KL alone. The sum ranks children that keep the same layers' attention well, but not children
/// that drop most of it: on 3 Dec two demo children of one parent with the same summed KL (0.162) distilled to a
/// validation KL of 0.049 (attention kept in 2 of 6 layers) and 0.120 (1 of 6), and ranked the other way as assembled
/// (0.261 against 0.223). A short GKD of 32,768 tokens already separates them (0.096 against 0.169). So, with
/// search.solutions ≥ 2 and search.probe_tokens > 0, the search's candidates (search.probe_candidates: by default
/// the best child and the best keeping 1, 2, … more attention layers, <see cref="SearchRequest.AttentionLadder"/>; the
/// next-best diverse children of 3 Dec differed in FFN widths only and distilled alike, 0.1727–0.1738) are stored as
/// RUN/solutions/NAME-candidate*.json, and each is
/// assembled, distilled for probe_tokens with the run's gkd settings, and the one with the lowest validation KL after
/// the probe becomes RUN/solutions/NAME.json, with the probe's figures in its "probe" field. Each outcome is kept in
/// RUN/probes/CANDIDATE.json (keyed by the candidate's architecture, library records and settings), so a rerun
/// skips it; the probe's model directories are deleted once measured.
/// </summary>
public static class CandidateProbe
{
    public const string Folder = "probes";

    /// <summary>The name the search's candidates take before the probe chooses one as <paramref name="name"/>.</summary>
    public static string CandidateName(string name) => name + "-candidate";

    /// <summary>
    /// The search of <paramref name="request"/>; with <paramref name="probeTokens"/> > 0 and more than one solution asked
    /// for, its candidates probed and the best stored as request.Name. Returns the chosen solution.
    /// </summary>
    public static SearchResult SearchAndChoose(RunDirectory run, SearchRequest request, long probeTokens, string candidateKind = "attention", Action<string>? log = null)
    {
        log ??= Log.Info;
        if (request.Solutions < 2 || probeTokens <= 0) return SearchStage.Run(run, request, log)[0];
        var candidates = SearchStage.Run(run, request with { Name = CandidateName(request.Name), AttentionLadder = candidateKind == "attention" }, log);
        var outcomes = candidates.Count == 1 ? [] : candidates.Select(c => Probe(run, c, probeTokens, log)).ToList();
        var chosen = outcomes.Count == 0 ? candidates[0] : candidates.Zip(outcomes).MinBy(p => p.Second.ProbedKl).First;
        if (outcomes.Count > 0)
            log($"probe: {string.Join("; ", outcomes.Select(o => $"{o.Name} {o.InitialKl:F4} -> {o.ProbedKl:F4}"))} (validation KL after {probeTokens:N0} tokens); " +
                $"the child is {chosen.Name}");
        else log($"probe: the search found one candidate only; it is the child");
        string path = run.Solution(request.Name);
        var file = SolutionFile.Read(chosen.Path) with { Name = request.Name, Probe = outcomes.Count > 0 ? new ProbeSelection(probeTokens, chosen.Name, outcomes) : null };
        file.Write(path);
        return chosen with { Name = request.Name, Path = path };
    }

    /// <summary>Assembles the candidate, distils it for <paramref name="tokens"/> and returns its validation KL before and after; stored once measured.</summary>
    public static ProbeOutcome Probe(RunDirectory run, SearchResult candidate, long tokens, Action<string> log)
    {
        var file = SolutionFile.Read(candidate.Path);
        string dir = run.Artifact(Folder, candidate.Name), child = Path.Combine(dir, "child"), distilled = Path.Combine(dir, "child-gkd");
        var options = ChildRecipe.DistillOptionsFor(run, child, distilled, tokens);
        var variantIds = file.Layers.SelectMany(l => new[] { l.Attention, l.Ffn });
        string key = Fingerprint.Of("probe-v1", file.Fingerprint, file.Layers.Select(l => $"{l.Attention}+{l.Ffn}").ToArray(),
            AssemblyStage.LibraryKey(run, variantIds), options with { TeacherDir = "", StudentDir = "", DataDir = "", OutDir = "", Device = "" });
        string record = run.Artifact(Folder, candidate.Name + ".json");
        double summed = file.Verified.Kl;
        double? measured = file.MeasuredCheck?.LastRatio;
        if (JsonFile.ReadDerived(record, j => j["fingerprint"].OptionalString() == key) is { } stored)
        {
            var o = ProbeOutcome.Parse(stored["outcome"]);
            log($"probe: {candidate.Name} already probed: validation KL {o.InitialKl:F4} -> {o.ProbedKl:F4}");
            return o;
        }
        var clock = Stopwatch.StartNew();
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        log($"probe: {candidate.Name} (summed block KL {summed:F4}{(measured is { } m ? $", measured {m:F2}x" : "")}): assembling, then {tokens:N0} tokens of GKD");
        ChildAssembler.Run(run, candidate.Name, child, _ => { });
        var result = Distiller.Run(options, line => log($"probe: {candidate.Name}: {line}"));
        var outcome = new ProbeOutcome(candidate.Name, summed, measured, result.InitialValidationKl, result.BestValidationKl, result.Steps);
        AtomicFile.WriteJson(record, new JsonObject
        {
            ["format_version"] = 1, ["fingerprint"] = key, ["tokens"] = tokens, ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
            ["outcome"] = outcome.ToJson(),
        });
        Directory.Delete(dir, recursive: true);
        return outcome;
    }
}
