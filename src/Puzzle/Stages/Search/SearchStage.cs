using System.Globalization;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Stages.Costs;
using Puzzle.Domain;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages;

namespace Puzzle.Stages.Search;

/// <summary>What the user asks of the child.</summary>
public sealed record SearchRequest
{
    public double? MaxMemoryGiB { get; init; }
    public double? MinThroughputRatio { get; init; }
    public double? MinTokensPerSecond { get; init; }
    public double? MaxLatencyMs { get; init; }
    public long? MaxParameters { get; init; }
    /// <summary>cpu | measured (the run's measured times) or h100 | h200 | a100 | l40s (rooflines).</summary>
    public string Target { get; init; } = "measured";
    public int Solutions { get; init; } = 1;
    public double Diversity { get; init; } = 0.8;
    public string Name { get; init; } = "solution";
    /// <summary>"throughput-ratio=1.2:3.0:0.2": a Pareto front over that target.</summary>
    public string? Sweep { get; init; }
    public double RelativeGap { get; init; } = 1e-3;
    /// <summary>
    /// On the measured target, time each chosen architecture against the parent in the engine and, while it falls
    /// short of the throughput target, tighten the time bound by the shortfall and solve again (at most this many times).
    /// </summary>
    public int MeasuredChecks { get; init; } = 4;
}

public sealed record SolutionFile(string Name, string Path, SearchSolution Solution, SearchTotals Parent);

/// <summary>Stage 6: builds the MIP from scores.json and costs.json (never recomputing them), solves, verifies, stores.</summary>
public static class SearchStage
{
    public const string Folder = RunDirectory.SolutionsFolder;

    public static IReadOnlyList<SolutionFile> Run(RunDirectory run, SearchRequest request, Action<string>? log = null)
    {
        log ??= Log.Info;
        if (request.Solutions < 1) throw new PuzzleException($"search: --solutions must be at least 1, got {request.Solutions}");
        if (!(request.Diversity >= 0 && request.Diversity <= 1)) throw new PuzzleException($"search: --diversity must be in [0, 1], got {request.Diversity}");
        var problem = BuildProblem(run, request.Target);
        var parentChoice = ParentChoice(run, problem);
        var parentTotals = problem.Totals(parentChoice);
        log($"search: {problem.Groups.Count} groups × {problem.Groups.Average(g => g.Options.Count):F1} options ({problem.Mode} scores, target {problem.Target}); " +
            $"parent: {parentTotals.TokensPerSecond:N0} tokens/s, {parentTotals.MemoryBytes / (1 << 20):F1} MiB, {parentTotals.Parameters:N0} parameters");
        var results = new List<SolutionFile>();
        if (request.Sweep is { } sweep)
        {
            var (key, values) = ParseSweep(sweep);
            var front = new JsonArray();
            foreach (double value in values)
            {
                var r = key switch
                {
                    "throughput-ratio" => request with { MinThroughputRatio = value, MinTokensPerSecond = null },
                    "memory-gib" => request with { MaxMemoryGiB = value },
                    "params" => request with { MaxParameters = (long)value },
                    _ => throw new PuzzleException($"--sweep: unknown target '{key}' (throughput-ratio, memory-gib or params)"),
                };
                string name = $"{request.Name}-{key}-{value.ToString("0.###", CultureInfo.InvariantCulture)}";
                var solved = SolveAndStore(run, problem, parentTotals, r with { Solutions = 1, Name = name, MeasuredChecks = 0 }, log, throwIfInfeasible: false);
                foreach (var s in solved)
                {
                    results.Add(s);
                    front.Add(new JsonObject
                    {
                        ["target"] = value, ["name"] = s.Name, ["kl"] = s.Solution.Totals.Kl,
                        ["tokens_per_second"] = s.Solution.Totals.TokensPerSecond,
                        ["throughput_ratio"] = s.Solution.Totals.TokensPerSecond / parentTotals.TokensPerSecond,
                        ["memory_bytes"] = s.Solution.Totals.MemoryBytes, ["parameters"] = s.Solution.Totals.Parameters,
                    });
                }
            }
            var pareto = new JsonObject
            {
                ["format_version"] = 1, ["sweep"] = sweep, ["target"] = problem.Target,
                ["parent"] = Totals(parentTotals, parentTotals), ["points"] = front,
            };
            AtomicFile.WriteJson(run.Artifact(Folder, "pareto.json"), pareto);
            Plots.ParetoFront(run.Artifact(Folder, "pareto.png"), pareto, chosen: null);
            log($"search: Pareto front of {front.Count} points -> {run.Artifact(Folder, "pareto.json")}, pareto.png");
            return results;
        }
        return SolveAndStore(run, problem, parentTotals, request, log, throwIfInfeasible: true);
    }

    static List<SolutionFile> SolveAndStore(RunDirectory run, SearchProblem problem, SearchTotals parent, SearchRequest request,
        Action<string> log, bool throwIfInfeasible)
    {
        var constraints = Constraints(problem, parent, request);
        var previous = new List<IReadOnlyList<int>>();
        var files = new List<SolutionFile>();
        // Same scores, costs and request: the stored solutions stand (their measured checks are not redone).
        string key = IO.Fingerprint.Of("solution-v2", problem.Fingerprint, request with { Name = "" });
        var stored = Enumerable.Range(0, request.Solutions).Select(k => run.Artifact(Folder, SolutionName(request.Name, k) + ".json")).ToList();
        var storedJson = stored.Select(p => JsonFile.ReadDerived(p, j => j["fingerprint"].Node is not null && j["layers"].Items().Count == problem.Layers)).ToList();
        if (storedJson.All(j => j is { } f && f["fingerprint"].OptionalString() == key))
        {
            foreach (var json in storedJson.Select(j => j!.Value))
            {
                var choice = ChoiceOf(problem, json);
                var totals = MipSearch.Verify(problem, constraints, choice);
                files.Add(new SolutionFile(json["name"].String(), json.File, new SearchSolution(choice, totals, totals.Kl, json["solver"]["status"].String(), 0, 0), parent));
            }
            log($"search: {string.Join(", ", files.Select(f => f.Name))} already solved for these scores, costs and constraints; reusing");
            return files;
        }
        for (int k = 0; k < request.Solutions; k++)
        {
            var solution = MipSearch.Solve(problem, constraints, previous, request.Diversity, request.RelativeGap);
            JsonObject? check = null;
            if (solution is not null && constraints.MaxTimeMs is { } bound && problem.Target == "measured" && request.MeasuredChecks > 0)
                (solution, check) = CheckMeasured(run, problem, constraints, previous, request, solution!, parent.TimeMs / bound, log);
            if (solution is null)
            {
                string why = k == 0 ? Infeasible(problem, constraints, parent)
                    : $"no further solution shares at most {MipSearch.MaxShared(problem, request.Diversity)} choices with the {k} found";
                if (k == 0 && throwIfInfeasible) throw new PuzzleException($"search: {why}");
                log($"search: {why}");
                break;
            }
            var verified = MipSearch.Verify(problem, constraints, solution.Choice, solution.SolverObjective, previous, request.Diversity);
            previous.Add(solution.Choice);
            string name = SolutionName(request.Name, k);
            string path = run.Artifact(Folder, name + ".json");
            var json = ToJson(name, problem, request, constraints, solution, verified, parent);
            json["fingerprint"] = key;
            if (check is not null) json["measured_check"] = check;
            if (check?["met"]?.GetValue<bool>() == false)
            {
                // Never store a child that misses the target as if it met it: the file says so and the user is told loudly.
                json["target_met"] = false;
                double measured = check["attempts"]!.AsArray()[^1]!["measured_ratio"]!.GetValue<double>();
                Log.Warning($"search: {name}: the measured throughput ratio {measured:F2}x misses the target {check["target_ratio"]!.GetValue<double>():F2}x " +
                            $"after {check["attempts"]!.AsArray().Count} checks; {path} holds the closest architecture found (\"target_met\": false). " +
                            "Lower search.min_throughput_ratio or widen the search space");
            }
            else if (check is not null) json["target_met"] = true;
            AtomicFile.WriteJson(path, json);
            log($"search: {name}: KL {verified.Kl:F4}, {verified.TokensPerSecond:N0} tokens/s ({verified.TokensPerSecond / parent.TokensPerSecond:F2}x the parent), " +
                $"{verified.MemoryBytes / (1 << 20):F1} MiB, {verified.Parameters:N0} parameters; {solution.Status} (gap {solution.Gap:P2}) in {solution.Seconds:F2} s -> {path}");
            files.Add(new SolutionFile(name, path, solution, parent));
        }
        return files;
    }

    /// <summary>
    /// Times the solution's architecture against the parent's (random weights, the generation engine, the scenario);
    /// while the measured ratio misses the target, shrinks the time bound by the miss and solves again.
    /// </summary>
    static (SearchSolution? Solution, JsonObject Check) CheckMeasured(RunDirectory run, SearchProblem problem, SearchConstraints constraints,
        IReadOnlyList<IReadOnlyList<int>> previous, SearchRequest request, SearchSolution solution, double targetRatio, Action<string> log)
    {
        var parentConfig = HfConfig.Read(run.ParentDir);
        var attempts = new JsonArray();
        var current = constraints;
        var best = solution;
        double parentTime = problem.Totals(ParentChoice(run, problem)).TimeMs;
        for (int attempt = 1; ; attempt++)
        {
            var blocks = Enumerable.Range(0, problem.Layers).Select(layer =>
            {
                var chosen = problem.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[best.Choice[x.i]]).ToList();
                var (a, f) = BlockOption.LayerIds(chosen);
                return new Model.BlockConfig(run.Variants.Get(a, "search").Attention!, run.Variants.Get(f, "search").Ffn!);
            }).ToList();
            var (parentTps, childTps) = ArchitectureTimer.Measure(parentConfig, parentConfig.WithBlocks(blocks), run.Config.Scenario);
            double measured = childTps / parentTps, estimated = parentTime / best.Totals.TimeMs;
            attempts.Add(new JsonObject
            {
                ["estimated_ratio"] = estimated, ["measured_ratio"] = measured, ["parent_tokens_per_s"] = parentTps, ["child_tokens_per_s"] = childTps,
                ["max_time_ms"] = current.MaxTimeMs,
            });
            log($"search: measured check {attempt}: estimated {estimated:F2}x, measured {measured:F2}x in the engine (target {targetRatio:F2}x)");
            if (measured >= targetRatio * 0.99 || attempt > request.MeasuredChecks) break;
            current = current with { MaxTimeMs = current.MaxTimeMs * measured / targetRatio };
            var next = MipSearch.Solve(problem, current, previous, request.Diversity, request.RelativeGap);
            if (next is null) { log("search: no architecture meets the tightened bound; keeping the last one"); break; }
            best = next;
        }
        double last = attempts[^1]!["measured_ratio"]!.GetValue<double>();
        return (best, new JsonObject
        {
            ["target_ratio"] = targetRatio, ["attempts"] = attempts, ["final_max_time_ms"] = current.MaxTimeMs,
            ["met"] = last >= targetRatio * 0.99,
        });
    }

    /// <summary>The k-th (from 0) of several diverse solutions: the best keeps the name (the pipeline assembles it), the others NAME-2, NAME-3, ….</summary>
    public static string SolutionName(string name, int k) => k == 0 ? name : $"{name}-{k + 1}";

    /// <summary>Option indices of a stored solution's per-layer choices.</summary>
    static int[] ChoiceOf(SearchProblem problem, JsonField json)
    {
        var layers = json["layers"];
        return problem.Groups.Select(g =>
        {
            var layer = layers[g.Layer];
            string a = layer["attention"].String(), f = layer["ffn"].String();
            int index = g.Options.ToList().FindIndex(o => o.Matches(a, f));
            return index >= 0 ? index : throw new PuzzleException($"{json.File}: layers[{g.Layer}] ({a}, {f}) is not among the scored options");
        }).ToArray();
    }

    public static SearchConstraints Constraints(SearchProblem problem, SearchTotals parent, SearchRequest r)
    {
        if (r.MinThroughputRatio is not null && r.MinTokensPerSecond is not null)
            throw new PuzzleException("give --min-throughput-ratio or --min-tokens-per-s, not both");
        var times = new List<double>();
        if (r.MinThroughputRatio is { } ratio)
        {
            if (ratio <= 0) throw new PuzzleException($"--min-throughput-ratio must be positive, got {ratio}");
            times.Add(parent.TimeMs / ratio);
        }
        if (r.MinTokensPerSecond is { } tps)
        {
            if (tps <= 0) throw new PuzzleException($"--min-tokens-per-s must be positive, got {tps}");
            times.Add(problem.GeneratedTokens / tps * 1e3);
        }
        if (r.MaxLatencyMs is { } latency) times.Add(latency);
        return new SearchConstraints(r.MaxMemoryGiB * (1L << 30), times.Count > 0 ? times.Min() : null, r.MaxParameters);
    }

    /// <summary>Why nothing fits: the tightest value each bound could take with the other bounds kept.</summary>
    public static string Infeasible(SearchProblem p, SearchConstraints c, SearchTotals parent)
    {
        var parts = new List<string>();
        if (c.MaxTimeMs is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxTimeMs = null }, null, 1, 1e-6, 30, o => o.TimeMs);
            parts.Add(best is null ? "no throughput is feasible under the other bounds"
                : $"the highest feasible throughput is {best.Totals.TokensPerSecond:N0} tokens/s = {best.Totals.TokensPerSecond / parent.TokensPerSecond:F3}x the parent (generation time {best.Totals.TimeMs:F3} ms; asked for at most {c.MaxTimeMs:F3} ms)");
        }
        if (c.MaxMemoryBytes is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxMemoryBytes = null }, null, 1, 1e-6, 30, o => o.MemoryBytes);
            parts.Add(best is null ? "no memory budget is feasible under the other bounds"
                : $"the smallest feasible memory is {best.Totals.MemoryBytes / (1L << 30):F4} GiB (asked for at most {c.MaxMemoryBytes / (1L << 30):F4} GiB)");
        }
        if (c.MaxParameters is not null)
        {
            var best = MipSearch.Optimise(p, c with { MaxParameters = null }, null, 1, 1e-6, 30, o => o.Parameters);
            parts.Add(best is null ? "no parameter budget is feasible under the other bounds"
                : $"the fewest feasible parameters are {best.Totals.Parameters:N0} (asked for at most {c.MaxParameters:N0})");
        }
        return "no architecture meets the constraints: " + string.Join("; ", parts);
    }

    static (string Key, double[] Values) ParseSweep(string sweep)
    {
        var parts = sweep.Split('=', 2);
        var range = parts.Length == 2 ? parts[1].Split(':') : [];
        if (range.Length != 3 || !range.All(x => double.TryParse(x, CultureInfo.InvariantCulture, out _)))
            throw new PuzzleException($"--sweep '{sweep}': expected target=start:stop:step, e.g. throughput-ratio=1.2:3.0:0.2");
        double start = double.Parse(range[0], CultureInfo.InvariantCulture), stop = double.Parse(range[1], CultureInfo.InvariantCulture),
            step = double.Parse(range[2], CultureInfo.InvariantCulture);
        if (step <= 0 || stop < start) throw new PuzzleException($"--sweep '{sweep}': needs start <= stop and step > 0");
        var values = new List<double>();
        for (double v = start; v <= stop + step * 1e-9; v += step) values.Add(Math.Round(v, 6));
        return (parts[0], [.. values]);
    }

    static JsonObject Totals(SearchTotals t, SearchTotals parent) => new()
    {
        ["kl"] = t.Kl, ["time_ms"] = t.TimeMs, ["tokens_per_second"] = t.TokensPerSecond,
        ["throughput_ratio"] = t.TokensPerSecond / parent.TokensPerSecond, ["memory_bytes"] = t.MemoryBytes, ["parameters"] = t.Parameters,
    };

    static JsonObject ToJson(string name, SearchProblem p, SearchRequest r, SearchConstraints c, SearchSolution s, SearchTotals verified, SearchTotals parent)
    {
        var layers = new JsonArray();
        for (int layer = 0; layer < p.Layers; layer++)
        {
            var chosen = p.Groups.Select((g, i) => (g, i)).Where(x => x.g.Layer == layer).Select(x => x.g.Options[s.Choice[x.i]]).ToList();
            var (attention, ffn) = BlockOption.LayerIds(chosen);
            layers.Add(new JsonObject
            {
                ["layer"] = layer,
                ["attention"] = attention,
                ["ffn"] = ffn,
                ["kl"] = chosen.Sum(o => o.Kl), ["time_ms"] = chosen.Sum(o => o.TimeMs),
                ["memory_bytes"] = chosen.Sum(o => o.MemoryBytes), ["parameters"] = chosen.Sum(o => o.Parameters),
            });
        }
        return new JsonObject
        {
            ["format_version"] = 1,
            ["name"] = name,
            ["target"] = p.Target,
            ["score_mode"] = p.Mode,
            ["request"] = new JsonObject
            {
                ["max_memory_gib"] = r.MaxMemoryGiB, ["min_throughput_ratio"] = r.MinThroughputRatio, ["min_tokens_per_s"] = r.MinTokensPerSecond,
                ["max_latency_ms"] = r.MaxLatencyMs, ["max_params"] = r.MaxParameters, ["solutions"] = r.Solutions, ["diversity"] = r.Diversity,
            },
            ["constraints"] = new JsonObject
            {
                ["max_memory_bytes"] = c.MaxMemoryBytes, ["max_time_ms"] = c.MaxTimeMs, ["max_parameters"] = c.MaxParameters,
            },
            ["solver"] = new JsonObject
            {
                ["backend"] = "OR-Tools SCIP", ["status"] = s.Status, ["seconds"] = Math.Round(s.Seconds, 4), ["objective"] = s.SolverObjective,
                ["relative_gap"] = s.Gap,
            },
            ["verified"] = Totals(verified, parent),
            ["parent"] = Totals(parent, parent),
            ["scenario"] = new JsonObject { ["batch"] = p.Batch, ["generation_length"] = p.GenerationLength },
            ["layers"] = layers,
        };
    }

    /// <summary>Options per layer from scores.json with costs from costs.json for the target.</summary>
    public static SearchProblem BuildProblem(RunDirectory run, string target)
    {
        string scoresPath = run.Artifact(BlockScorer.FileName), costsPath = run.Artifact(BlockCosts.FileName);
        if (!File.Exists(scoresPath)) throw new PuzzleException($"{scoresPath}: not found; run `puzzle score --run {run.Path}` first");
        if (!File.Exists(costsPath)) throw new PuzzleException($"{costsPath}: not found; run `puzzle costs --run {run.Path}` first");
        var scores = JsonFile.Read(scoresPath);
        var costs = JsonFile.Read(costsPath);
        if (scores["complete"].OptionalBool() != true)
            throw new PuzzleException($"{scoresPath}: scoring is incomplete ({scores["entries"].Items().Count}/{scores["candidates_total"]} candidates); finish `puzzle score` (all shards)");
        string mode = scores["mode"].String();
        int batch = costs["scenario"]["batch"].Int(), generation = costs["scenario"]["generation_length"].Int();
        string key = target.ToLowerInvariant() is "cpu" or "measured" ? "measured" : Accelerators.Get(target).Key;
        if (key == "measured" && costs["roofline_only"].OptionalBool() == true)
            throw new PuzzleException($"{costsPath}: costs are from the rooflines only; search with a named accelerator (--target {string.Join("|", Accelerators.All.Select(a => a.Key))}) or run `puzzle costs` without --roofline-only");
        var nonBlock = costs["non_block"];
        double scalePrefill = nonBlock["block_scale_prefill"].OptionalDouble() ?? 1, scaleDecode = nonBlock["block_scale_decode"].OptionalDouble() ?? 1;
        double Time(JsonField entry, bool block) => key == "measured"
            ? (block ? scalePrefill : 1) * entry["prefill"]["measured"]["median_ms"].Double()
              + generation * (block ? scaleDecode : 1) * entry["decode"]["measured"]["median_ms"].Double()
            : entry["roofline"][key]["prefill_ms"].Double() + generation * entry["roofline"][key]["decode_ms"].Double();
        int context = costs["scenario"]["prompt_length"].Int() + generation;
        var cost = new Dictionary<string, JsonField>();
        foreach (var e in costs["entries"].Items()) cost[e["variant"].String()] = e;
        JsonField Cost(string id) => cost.TryGetValue(id, out var c) ? c
            : throw new PuzzleException($"{costsPath}: no cost for variant {id} (scores and costs come from different search spaces; rerun `puzzle costs`)");
        double Memory(JsonField e) => e["parameter_bytes"].Double() + (double)batch * context * e["kv_bytes_per_token"].Double();
        BlockOption Option(string? a, string? f, double kl)
        {
            var parts = new[] { a, f }.OfType<string>().Select(Cost).ToList();
            return new BlockOption(a, f, kl, parts.Sum(e => Time(e, block: true)), parts.Sum(Memory), parts.Sum(e => e["parameters"].Long()));
        }

        var entries = scores["entries"].Items().Select(BlockScore.FromJson).ToList();
        if (entries.Count == 0) throw new PuzzleException($"{scoresPath}: entries is empty");
        int layers = entries.Max(e => e.Layer) + 1;
        var groups = new List<SearchGroup>();
        for (int layer = 0; layer < layers; layer++)
        {
            var here = entries.Where(e => e.Layer == layer).ToList();
            if (mode == "composed")
                groups.Add(new SearchGroup(layer, "block", here.Select(e => Option(e.Attention, e.Ffn, e.Kl)).ToList()));
            else
            {
                string parentFfn = run.Variants.Parent(layer, SubblockKind.Ffn).Id, parentAttention = run.Variants.Parent(layer, SubblockKind.Attention).Id;
                groups.Add(new SearchGroup(layer, "attention", here.Where(e => e.Ffn == parentFfn).Select(e => Option(e.Attention, null, e.Kl)).ToList()));
                groups.Add(new SearchGroup(layer, "ffn", here.Where(e => e.Attention == parentAttention).Select(e => Option(null, e.Ffn, e.Kl)).ToList()));
            }
        }
        return new SearchProblem(groups, layers, Time(nonBlock, block: false), nonBlock["parameter_bytes"].Double(), nonBlock["parameters"].Long(),
            batch, generation, key, mode)
        {
            Fingerprint = ArtifactKeys.SearchProblem(run, scores["fingerprint"].OptionalString(), costs["fingerprint"].OptionalString(), key),
        };
    }

    static HashSet<string> ParentVariantIds(RunDirectory run) => run.Variants.All.Where(v => v.IsParent).Select(v => v.Id).ToHashSet();

    public static IReadOnlyList<int> ParentChoice(RunDirectory run, SearchProblem problem)
    {
        var parentIds = ParentVariantIds(run);
        var choice = problem.ParentChoice(o => (o.AttentionId is null || parentIds.Contains(o.AttentionId)) && (o.FfnId is null || parentIds.Contains(o.FfnId)));
        if (choice.Any(c => c < 0)) throw new PuzzleException("search: the parent's own blocks are missing from scores.json");
        return choice;
    }
}
