using System.Text.Json.Nodes;
using Puzzle.IO;

namespace Puzzle.Stages.Search;

/// <summary>One layer of a solution: the chosen attention and FFN variant ids and their share of the totals.</summary>
public sealed record SolutionLayer(int Layer, string Attention, string Ffn, double Kl, double TimeMs, double MemoryBytes, long Parameters);

/// <summary>Totals of a choice as stored: summed KL, request time (ms), tokens/s and the ratio to the parent's, memory, parameters.</summary>
public sealed record SolutionTotals(double Kl, double TimeMs, double TokensPerSecond, double ThroughputRatio, double MemoryBytes, long Parameters)
{
    public static SolutionTotals From(SearchTotals t, SearchTotals parent) =>
        new(t.Kl, t.TimeMs, t.TokensPerSecond, t.TokensPerSecond / parent.TokensPerSecond, t.MemoryBytes, t.Parameters);

    public JsonObject ToJson() => new()
    {
        ["kl"] = Kl, ["time_ms"] = TimeMs, ["tokens_per_second"] = TokensPerSecond, ["throughput_ratio"] = ThroughputRatio,
        ["memory_bytes"] = MemoryBytes, ["parameters"] = Parameters,
    };

    public static SolutionTotals Read(JsonField j) => new(j["kl"].Double(), j["time_ms"].Double(), j["tokens_per_second"].Double(),
        j["throughput_ratio"].Double(), j["memory_bytes"].Double(), j["parameters"].Long());
}

public sealed record SolverInfo(string Backend, string Status, double Seconds, double Objective, double RelativeGap);

/// <summary>
/// One check of a chosen architecture in the engine; <c>Cached</c> when read from RUN/measured-checks.json. Re-timed
/// (<see cref="FirstMeasuredRatio"/> set) when the first timing disagreed with the estimate, and <see cref="Suspect"/>
/// when the re-timing still did (<see cref="ArchitectureTimer.SuspectDisagreement"/>).
/// </summary>
public sealed record MeasuredAttempt(double EstimatedRatio, double MeasuredRatio, double ParentTokensPerSecond, double ChildTokensPerSecond, double? MaxTimeMs, bool Cached)
{
    public double? FirstMeasuredRatio { get; init; }
    public bool Suspect { get; init; }
}

public sealed record MeasuredCheck(double TargetRatio, IReadOnlyList<MeasuredAttempt> Attempts, double? FinalMaxTimeMs, bool Met)
{
    /// <summary>Index of the attempt the solution stands on: the last, unless a later child loosened toward the target missed it.</summary>
    public int? Kept { get; init; }
    public MeasuredAttempt KeptAttempt => Attempts[Kept ?? Attempts.Count - 1];
    /// <summary>The measured ratio of the architecture the solution stands on.</summary>
    public double LastRatio => KeptAttempt.MeasuredRatio;
    /// <summary>The check the solution stands on disagreed with the estimate even when re-timed.</summary>
    public bool Suspect => KeptAttempt.Suspect;
}

/// <summary>RUN/solutions/NAME.json: what was asked, the bounds it became, the solver's answer verified, and the per-layer choice.</summary>
public sealed record SolutionFile(string Name, string Target, string ScoreMode, SearchRequest Request, SearchConstraints Constraints, SolverInfo Solver,
    SolutionTotals Verified, SolutionTotals Parent, int Batch, int GenerationLength, IReadOnlyList<SolutionLayer> Layers)
{
    public const int CurrentFormat = 1;

    /// <summary>Identifies the scores, costs and request it was solved from; a stored solution with the same key is reused.</summary>
    public string? Fingerprint { get; init; }
    public MeasuredCheck? MeasuredCheck { get; init; }
    /// <summary>Where the search's candidates were probed (<see cref="CandidateProbe"/>): how this one was chosen among them.</summary>
    public ProbeSelection? Probe { get; init; }

    /// <summary>Only with a measured check: whether the measured ratio met the target.</summary>
    public bool? TargetMet => MeasuredCheck?.Met;

    /// <summary>The request as stored; drift_control only where on (files searched without it read as before).</summary>
    public JsonObject RequestJson()
    {
        var json = new JsonObject
        {
            ["max_memory_gib"] = Request.MaxMemoryGiB, ["min_throughput_ratio"] = Request.MinThroughputRatio, ["min_tokens_per_s"] = Request.MinTokensPerSecond,
            ["max_latency_ms"] = Request.MaxLatencyMs, ["max_params"] = Request.MaxParameters, ["solutions"] = Request.Solutions, ["diversity"] = Request.Diversity,
            ["measured_checks"] = Request.MeasuredChecks, ["max_overshoot"] = Request.MaxOvershoot, ["attention_ladder"] = Request.AttentionLadder,
        };
        if (Request.DriftControl) json["drift_control"] = true;
        return json;
    }

    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["format_version"] = CurrentFormat,
            ["name"] = Name,
            ["target"] = Target,
            ["score_mode"] = ScoreMode,
            ["request"] = RequestJson(),
            ["constraints"] = new JsonObject
            {
                ["max_memory_bytes"] = Constraints.MaxMemoryBytes, ["max_time_ms"] = Constraints.MaxTimeMs, ["max_parameters"] = Constraints.MaxParameters,
                ["min_attention_layers"] = Constraints.MinAttentionLayers,
            },
            ["solver"] = new JsonObject
            {
                ["backend"] = Solver.Backend, ["status"] = Solver.Status, ["seconds"] = Math.Round(Solver.Seconds, 4), ["objective"] = Solver.Objective,
                ["relative_gap"] = Solver.RelativeGap,
            },
            ["verified"] = Verified.ToJson(),
            ["parent"] = Parent.ToJson(),
            ["scenario"] = new JsonObject { ["batch"] = Batch, ["generation_length"] = GenerationLength },
            ["layers"] = new JsonArray(Layers.Select(l => (JsonNode)new JsonObject
            {
                ["layer"] = l.Layer, ["attention"] = l.Attention, ["ffn"] = l.Ffn, ["kl"] = l.Kl, ["time_ms"] = l.TimeMs,
                ["memory_bytes"] = l.MemoryBytes, ["parameters"] = l.Parameters,
            }).ToArray()),
        };
        if (Fingerprint is not null) o["fingerprint"] = Fingerprint;
        if (MeasuredCheck is { } c)
        {
            o["measured_check"] = new JsonObject
            {
                ["target_ratio"] = c.TargetRatio,
                ["attempts"] = new JsonArray(c.Attempts.Select(a => (JsonNode)new JsonObject
                {
                    ["estimated_ratio"] = a.EstimatedRatio, ["measured_ratio"] = a.MeasuredRatio, ["parent_tokens_per_s"] = a.ParentTokensPerSecond,
                    ["child_tokens_per_s"] = a.ChildTokensPerSecond, ["max_time_ms"] = a.MaxTimeMs, ["cached"] = a.Cached,
                    ["first_measured_ratio"] = a.FirstMeasuredRatio, ["suspect"] = a.Suspect,
                }).ToArray()),
                ["final_max_time_ms"] = c.FinalMaxTimeMs, ["met"] = c.Met, ["suspect"] = c.Suspect,
                ["kept_attempt"] = c.Kept ?? c.Attempts.Count - 1, ["measured_ratio"] = c.LastRatio,
            };
            o["target_met"] = c.Met;
        }
        if (Probe is not null) o["probe"] = Probe.ToJson();
        return o;
    }

    public void Write(string path) => AtomicFile.WriteJson(path, ToJson());

    public static SolutionFile Read(string path) => Parse(JsonFile.Read(path, "solution file"));

    public static SolutionFile Parse(JsonField j)
    {
        int format = j["format_version"].Int();
        if (format != CurrentFormat) throw new PuzzleException($"{j.File}: format_version {format} is not {CurrentFormat}; rerun `puzzle search`");
        var r = j["request"];
        var request = new SearchRequest
        {
            MaxMemoryGiB = r["max_memory_gib"].OptionalDouble(), MinThroughputRatio = r["min_throughput_ratio"].OptionalDouble(),
            MinTokensPerSecond = r["min_tokens_per_s"].OptionalDouble(), MaxLatencyMs = r["max_latency_ms"].OptionalDouble(), MaxParameters = r["max_params"].OptionalLong(),
            Solutions = r["solutions"].Int(), Diversity = r["diversity"].Double(), Target = j["target"].String(), Name = j["name"].String(),
            MeasuredChecks = r["measured_checks"].OptionalInt() ?? new SearchRequest().MeasuredChecks, MaxOvershoot = r["max_overshoot"].OptionalDouble(),
            AttentionLadder = r["attention_ladder"].OptionalBool() ?? false, DriftControl = r["drift_control"].OptionalBool() ?? false,
        };
        var c = j["constraints"];
        var s = j["solver"];
        MeasuredCheck? check = null;
        if (j["measured_check"].Exists)
        {
            var m = j["measured_check"];
            check = new MeasuredCheck(m["target_ratio"].Double(), m["attempts"].Items().Select(a => new MeasuredAttempt(a["estimated_ratio"].Double(), a["measured_ratio"].Double(),
                a["parent_tokens_per_s"].Double(), a["child_tokens_per_s"].Double(), a["max_time_ms"].OptionalDouble(), a["cached"].OptionalBool() ?? false)
                {
                    FirstMeasuredRatio = a["first_measured_ratio"].OptionalDouble(), Suspect = a["suspect"].OptionalBool() ?? false,
                }).ToList(),
                m["final_max_time_ms"].OptionalDouble(), m["met"].Bool()) { Kept = m["kept_attempt"].OptionalInt() };
        }
        return new SolutionFile(j["name"].String(), j["target"].String(), j["score_mode"].String(), request,
            new SearchConstraints(c["max_memory_bytes"].OptionalDouble(), c["max_time_ms"].OptionalDouble(), c["max_parameters"].OptionalLong())
            {
                MinAttentionLayers = c["min_attention_layers"].OptionalInt(),
            },
            new SolverInfo(s["backend"].String(), s["status"].String(), s["seconds"].Double(), s["objective"].Double(), s["relative_gap"].Double()),
            SolutionTotals.Read(j["verified"]), SolutionTotals.Read(j["parent"]), j["scenario"]["batch"].Int(), j["scenario"]["generation_length"].Int(),
            j["layers"].Items().Select(l => new SolutionLayer(l["layer"].Int(), l["attention"].String(), l["ffn"].String(), l["kl"].Double(), l["time_ms"].Double(),
                l["memory_bytes"].Double(), l["parameters"].Long())).ToList())
        {
            Fingerprint = j["fingerprint"].OptionalString(), MeasuredCheck = check,
            Probe = j["probe"].Exists ? ProbeSelection.Parse(j["probe"]) : null,
        };
    }
}
