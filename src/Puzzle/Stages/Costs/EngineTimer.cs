using Puzzle.Model;
using Puzzle.Runtime;

namespace Puzzle.Stages.Costs;

/// <summary>How repeated timings reduce to one figure.</summary>
public enum TimingStatistic { Median, Min, Trimmed }

public static class TimingStatistics
{
    public static TimingStatistic Parse(string text) => text.ToLowerInvariant() switch
    {
        "median" => TimingStatistic.Median,
        "min" => TimingStatistic.Min,
        "trimmed" => TimingStatistic.Trimmed,
        _ => throw new PuzzleException($"timing statistic '{text}': expected median, min or trimmed"),
    };

    /// <summary>Median; minimum; or the mean of the middle half (the lowest and highest quarter dropped).</summary>
    public static double Apply(this TimingStatistic statistic, IReadOnlyCollection<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("no values");
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        return statistic switch
        {
            TimingStatistic.Min => sorted[0],
            TimingStatistic.Trimmed => sorted.Skip(n / 4).Take(Math.Max(1, n - 2 * (n / 4))).Average(),
            _ => n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
    }

    /// <summary>The statistic with the interquartile range, in the units given.</summary>
    public static Timing Summarise(this TimingStatistic statistic, IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        double Quantile(double q) => sorted[(int)Math.Round(q * (sorted.Length - 1))];
        return new Timing(statistic.Apply(values), Quantile(0.25), Quantile(0.75), values.Count);
    }
}

/// <summary>One engine request's times: prefill (to the first token) and all decode steps, seconds.</summary>
public sealed record EngineSample(double PrefillSeconds, double DecodeSeconds)
{
    public double TotalSeconds => PrefillSeconds + DecodeSeconds;
}

/// <summary>
/// Times models in the generation engine (<see cref="TextGenerator"/>: fused weights, one prefill, generation − 1
/// decode steps) at a scenario, interleaved: every round runs one request of every model, the order reversed every
/// other round (A B C, C B A, …), after warm-up rounds; so slow drifts and a busy neighbour hit every model alike.
/// Every model is fused once for the whole loop. <see cref="StepsPerTurn"/> interleaves within a round (an experiment).
/// </summary>
public static class EngineTimer
{
    static long _requests;

    /// <summary>Engine requests timed by this process so far (warm-up included): evidence that a cache was used.</summary>
    public static long Requests => Interlocked.Read(ref _requests);

    /// <param name="enough">Asked after every timed round with the rounds so far: true stops the loop early (a
    /// sequential measurement, <see cref="Search.ArchitectureTimer.Decided"/>); null: all <paramref name="rounds"/>.</param>
    /// <param name="done">Asked after every timed round for each model still timed (its index, the rounds so far): true
    /// times it no more, so its rounds are the first of the others' (several sequential checks against one parent,
    /// <see cref="Search.ArchitectureTimer.MeasureJoint"/>); the loop ends when none is left.</param>
    public static List<EngineSample>[] Interleaved(IReadOnlyList<CausalLm> models, ScenarioCost scenario, int warmup, int rounds, int seed = 0,
        Func<List<EngineSample>[], bool>? enough = null, Func<int, List<EngineSample>[], bool>? done = null)
    {
        int vocab = models.Min(m => m.Config.VocabSize);
        var random = new Random(seed);
        int[][] prompts = Enumerable.Range(0, scenario.Batch).Select(_ => Enumerable.Range(0, scenario.PromptLength).Select(_ => random.Next(vocab)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = scenario.GenerationLength, StopAtEos = false };
        return Interleaved(models, prompts, options, warmup, rounds, enough, done);
    }

    /// <summary>The rounds of <see cref="Interleaved(IReadOnlyList{CausalLm}, ScenarioCost, int, int, int)"/> for given prompts and options; warm-up rounds are not returned.</summary>
    public static List<EngineSample>[] Interleaved(IReadOnlyList<CausalLm> models, IReadOnlyList<int[]> prompts, GenerationOptions options, int warmup, int rounds,
        Func<List<EngineSample>[], bool>? enough = null, Func<int, List<EngineSample>[], bool>? done = null)
    {
        var samples = models.Select(_ => new List<EngineSample>()).ToArray();
        // Fused once for all rounds (CausalLm.IsFused): per-request fusion made the heap grow round by round.
        var fusedHere = models.Where(m => !m.IsFused).ToList();
        try
        {
            foreach (var m in fusedHere) m.Fuse();
            var timed = Enumerable.Range(0, models.Count).ToList();                            // the models still timed
            for (int round = 0; round < warmup + rounds && timed.Count > 0; round++)
            {
                var times = Round([.. timed.Select(m => models[m])], prompts, options, Benchmark.BenchStage.RoundOrder(round, timed.Count));
                if (NativeHeap.Tracing) Log.Info($"engine timer: round {round} of {warmup + rounds}: {NativeHeap.Describe()}");
                Interlocked.Add(ref _requests, timed.Count);
                if (round < warmup) continue;
                for (int i = 0; i < timed.Count; i++) samples[timed[i]].Add(times[i]);
                if (enough is not null && enough(samples)) break;
                if (done is not null) timed.RemoveAll(m => done(m, samples));
            }
        }
        finally
        {
            foreach (var m in fusedHere) m.Unfuse();
            // After the last timed request: the requests' freed temporaries and the fused copies leave the C heap's
            // free pages resident (NativeHeap); the caller's next work starts from what is live. Not between rounds:
            // there the next request would fault its pages back in inside its timing, and the SmolLM2-135M-shaped
            // costs stage peaked as high with it (1.26 GiB; the peak is set inside a round, by the parent's request).
            NativeHeap.Trim();
        }
        return samples;
    }

    /// <summary>
    /// Decode steps a model runs before the next model's turn within a round; 0 (the default): none, each model's
    /// request runs whole, as a user's engine runs it. PUZZLE_STEPS_PER_TURN=K interleaves them every K steps, an
    /// experiment of issue 12 (benchmarks/results/timing-2026-12-03.md): at K = 1 the spread of the per-round ratio
    /// halves on this machine, but the small demo models run ~10% slower for the fast children (each step starts
    /// after another model's), so the measurement no longer matches a one-model engine.
    /// </summary>
    public static readonly int StepsPerTurn = int.TryParse(Environment.GetEnvironmentVariable("PUZZLE_STEPS_PER_TURN"), out int k) && k > 0 ? k : 0;

    /// <summary>What the rounds' order is, for logs and bench.json.</summary>
    public static string OrderDescription => StepsPerTurn == 0 ? "ABBA" : $"ABBA, decode steps interleaved every {StepsPerTurn} (PUZZLE_STEPS_PER_TURN)";

    /// <summary>One request of every model in <paramref name="order"/> (with <see cref="StepsPerTurn"/>: prefills first, then turns of K decode steps, the order reversed every turn).</summary>
    static EngineSample[] Round(IReadOnlyList<CausalLm> models, IReadOnlyList<int[]> prompts, GenerationOptions options, int[] order)
    {
        int n = models.Count;
        if (StepsPerTurn == 0)
        {
            var whole = new EngineSample[n];
            foreach (int m in order)
            {
                var r = TextGenerator.Generate(models[m], prompts, options, []);
                whole[m] = new EngineSample(r.PrefillSeconds, r.DecodeSeconds);
                if (NativeHeap.Tracing) Log.Info($"engine timer: model {m} ({models[m].Config.NumLayers} layers): {NativeHeap.Describe()}");
            }
            return whole;
        }
        var sessions = new GenerationSession?[n];
        var prefill = new double[n];
        var decode = new double[n];
        try
        {
            foreach (int m in order)
            {
                sessions[m] = new GenerationSession(models[m], prompts, options, []);
                prefill[m] = sessions[m]!.Prefill();
            }
            for (int turn = 0; sessions.Any(s => !s!.Finished); turn++)
                foreach (int m in turn % 2 == 0 ? order : order.Reverse())
                    for (int k = 0; k < StepsPerTurn && !sessions[m]!.Finished; k++) decode[m] += sessions[m]!.Step();
        }
        finally
        {
            foreach (var s in sessions) s?.Dispose();
        }
        return [.. Enumerable.Range(0, n).Select(m => new EngineSample(prefill[m], decode[m]))];
    }
}
