using TorchSharp;
using System.Diagnostics;
using Puzzle.Model;
using static TorchSharp.torch;

namespace Puzzle.Runtime;

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 128;
    /// <summary>0 = greedy.</summary>
    public double Temperature { get; init; }
    public double TopP { get; init; } = 1.0;
    public long Seed { get; init; }
    public bool StopAtEos { get; init; } = true;
    /// <summary>
    /// Intra-op threads of the decode steps on CPU: null = the process's threads (the default), 0 = choose by timing
    /// (<see cref="DecodeThreads"/>: helps on a machine busy with other processes; not yet measured on an idle one, so
    /// opt-in), else a fixed count. The prefill always runs on the process's threads.
    /// </summary>
    public int? DecodeThreads { get; init; }
}

/// <summary>New tokens per row (EOS included when it ended the row), and timings of the two phases.</summary>
public sealed record GenerationResult(int[][] NewTokens, double PrefillSeconds, double DecodeSeconds)
{
    public int GeneratedTokens => NewTokens.Sum(t => t.Length);
}

/// <summary>Batched autoregressive generation over a preallocated KV cache: one prefill, then one token per step.</summary>
public static class TextGenerator
{
    /// <param name="onStep">called after every step with the tokens just chosen, one per row (-1 for finished rows).</param>
    public static GenerationResult Generate(CausalLm model, IReadOnlyList<int[]> prompts, GenerationOptions options,
        IReadOnlyList<int> eosIds, Action<int[]>? onStep = null)
    {
        using var session = new GenerationSession(model, prompts, options, eosIds, onStep);
        session.Prefill();
        while (!session.Finished) session.Step();
        return session.Result;
    }

    /// <summary>Greedy at temperature 0; else temperature-scaled softmax, nucleus (top-p) filter, seeded draw.</summary>
    public static Tensor Sample(Tensor logits, GenerationOptions options, Generator generator)  // [B, V] -> [B] int64
    {
        using var scope = NewDisposeScope();
        // Greedy: max's indices, the first maximum as argmax gives, at a third of argmax's cost on bf16 logits.
        if (options.Temperature <= 0)
        {
            var (_, best) = logits.max(-1);
            return best.MoveToOuterDisposeScope();
        }
        var probs = (logits.to(ScalarType.Float32) / options.Temperature).softmax(-1).cpu();
        if (options.TopP < 1.0)
        {
            var (sorted, order) = probs.sort(-1, descending: true);
            var before = sorted.cumsum(-1) - sorted;                                         // mass of better tokens
            using (var zero = 0.0.ToScalar()) using (var topP = options.TopP.ToScalar())
                sorted = sorted.masked_fill(before.gt(topP), zero);                          // keeps at least the best
            probs = zeros_like(probs).scatter_(-1, order, sorted);
        }
        var drawn = multinomial(probs, 1, false, generator).squeeze(-1);
        return drawn.to(logits.device).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// One batched generation (what <see cref="TextGenerator.Generate"/> runs), a phase at a time: <see cref="Prefill"/>
/// runs the prompts and chooses the first tokens, each <see cref="Step"/> one decode step (a forward of the last
/// tokens, then the next tokens chosen), until every row has its tokens or ended at EOS (<see cref="Finished"/>).
/// Each call returns its own time (synchronised on CUDA). Timing loops run several sessions step by step, alternating
/// models (<see cref="Stages.Costs.EngineTimer"/>), so that a burst of interference hits every model alike.
/// The model stays fused for the session (unless the caller fused it already, <see cref="CausalLm.IsFused"/>).
/// </summary>
public sealed class GenerationSession : IDisposable
{
    readonly CausalLm _model;
    readonly GenerationOptions _options;
    readonly HashSet<int> _eos;
    readonly Action<int[]>? _onStep;
    readonly KvCache _cache;
    readonly Tensor? _fullMask;
    readonly long[] _ids;
    readonly int _batch, _longest;
    readonly List<int>[] _output;
    readonly bool[] _finished;
    readonly bool _fusedHere;
    readonly Generator _generator;
    readonly DecodeThreads _threads;
    readonly DeviceClock _clock;
    Tensor? _logits, _next;                                                              // the last logits; the tokens chosen from them
    int _step;
    bool _disposed;

    public GenerationSession(CausalLm model, IReadOnlyList<int[]> prompts, GenerationOptions options, IReadOnlyList<int> eosIds, Action<int[]>? onStep = null)
    {
        if (prompts.Count == 0) throw new PuzzleException("no prompts to generate from");
        if (prompts.Any(p => p.Length == 0)) throw new PuzzleException("every prompt needs at least one token (e.g. BOS)");
        if (!(options.Temperature >= 0) || double.IsInfinity(options.Temperature)) throw new PuzzleException($"temperature must be a finite number >= 0, got {options.Temperature}");
        if (!(options.TopP > 0 && options.TopP <= 1)) throw new PuzzleException($"top-p must be in (0, 1], got {options.TopP}");
        if (options.MaxNewTokens <= 0) throw new PuzzleException($"max new tokens must be positive, got {options.MaxNewTokens}");
        (_model, _options, _onStep) = (model, options, onStep);
        _batch = prompts.Count;
        _longest = prompts.Max(p => p.Length);
        if ((long)_longest + options.MaxNewTokens > model.Config.MaxPositionEmbeddings)
            throw new PuzzleException($"prompt ({_longest} tokens) + max new tokens ({options.MaxNewTokens}) = {(long)_longest + options.MaxNewTokens} positions is past the model's context (max_position_embeddings {model.Config.MaxPositionEmbeddings})");
        int capacity = _longest + options.MaxNewTokens;
        var device = model.Device;
        _eos = eosIds.ToHashSet();
        _cache = model.NewCache(_batch, capacity);
        _fusedHere = !model.IsFused;                                                         // a caller's fusion is kept
        if (_fusedHere) model.Fuse();
        _generator = new Generator((ulong)options.Seed, CPU);

        // Left-pad ragged prompts; the mask marks real tokens so padded rows see only their own positions.
        bool ragged = prompts.Any(p => p.Length != _longest);
        _ids = new long[_batch * _longest];
        var maskValues = new long[_batch * capacity];
        for (int r = 0; r < _batch; r++)
        {
            int pad = _longest - prompts[r].Length;
            for (int c = 0; c < prompts[r].Length; c++) _ids[r * _longest + pad + c] = prompts[r][c];
            for (int c = pad; c < capacity; c++) maskValues[r * capacity + c] = 1;
        }
        _fullMask = ragged ? tensor(maskValues, [_batch, capacity], device: device) : null;
        _output = Enumerable.Range(0, _batch).Select(_ => new List<int>()).ToArray();
        _finished = new bool[_batch];
        int processThreads = device.type == TorchSharp.DeviceType.CPU ? get_num_threads() : 1;
        _threads = new DecodeThreads(processThreads, options.DecodeThreads switch { null => processThreads, 0 => null, var n => n });
        _clock = new DeviceClock(device);                                                    // synchronised reads on CUDA
    }

    /// <summary>Every row has its tokens or ended at EOS (or the session has not been prefilled yet: false).</summary>
    public bool Finished { get; private set; }

    public double PrefillSeconds { get; private set; }

    public double DecodeSeconds { get; private set; }

    /// <summary>Decode steps run so far.</summary>
    public int Steps => Math.Max(0, _step - 1);

    public GenerationResult Result => new(_output.Select(o => o.ToArray()).ToArray(), PrefillSeconds, DecodeSeconds);

    /// <summary>The prompts' forward and the first tokens chosen; its time in seconds.</summary>
    public double Prefill()
    {
        if (_step != 0) throw new InvalidOperationException("the session is already prefilled");
        using var noGrad = no_grad();
        _clock.Restart();
        using (var input = tensor(_ids, [_batch, _longest], device: _model.Device))
        using (var mask = _fullMask?.narrow(1, 0, _longest))
            _logits = _model.Forward(input, _cache, mask, lastOnly: true);                   // [B, 1, V]
        var emitted = Choose();
        PrefillSeconds = _clock.ElapsedSeconds;
        _onStep?.Invoke(emitted);                                                           // the caller's time, not the engine's
        return PrefillSeconds;
    }

    /// <summary>One decode step: the forward of the tokens just chosen, then the next ones; its time in seconds.</summary>
    public double Step()
    {
        if (_step == 0) throw new InvalidOperationException("prefill the session first");
        if (Finished) throw new InvalidOperationException("the session is finished");
        using var noGrad = no_grad();
        _clock.Restart();
        using (var scope = NewDisposeScope())
        {
            var mask = _fullMask?.narrow(1, 0, _cache.Length + 1);
            _threads.Begin(_step - 1);
            var newLogits = _model.Forward(_next!.view(_batch, 1), _cache, mask, lastOnly: true);
            _threads.End(_step - 1);
            _logits!.Dispose();
            _logits = newLogits.MoveToOuterDisposeScope();
        }
        var emitted = Choose();
        double seconds = _clock.ElapsedSeconds;
        DecodeSeconds += seconds;
        _onStep?.Invoke(emitted);
        return seconds;
    }

    /// <summary>Samples from the last logits, records the tokens (-1 for finished rows), and decides whether the session is finished.</summary>
    int[] Choose()
    {
        _next?.Dispose();
        using var scope = NewDisposeScope();
        var next = TextGenerator.Sample(_logits!.select(1, 0), _options, _generator);        // [B]
        long[] chosen = next.cpu().data<long>().ToArray();
        var emitted = new int[_batch];
        for (int r = 0; r < _batch; r++)
        {
            if (_finished[r]) { emitted[r] = -1; continue; }
            emitted[r] = (int)chosen[r];
            _output[r].Add((int)chosen[r]);
            if (_options.StopAtEos && _eos.Contains((int)chosen[r])) _finished[r] = true;
        }
        _next = next.MoveToOuterDisposeScope();
        _step++;
        Finished = _finished.All(f => f) || _step == _options.MaxNewTokens;
        return emitted;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _logits?.Dispose();
        _next?.Dispose();
        _fullMask?.Dispose();
        _cache.Dispose();
        if (_fusedHere) _model.Unfuse();
        _threads.Restore();
    }
}

/// <summary>
/// How many intra-op threads the decode steps use on CPU. A decode step is many small kernels; each multi-threaded one
/// waits for every thread of the pool, so on a busy machine (other processes on the cores) one thread can be several
/// times faster than all of them, while on an idle one the threads win a little. With no fixed count this times the
/// candidates (the process's threads and one) on alternating steps, A B B A, picks the faster by median and probes
/// again every <see cref="ReprobeEvery"/> steps, as the load changes. Results do not depend on the choice (the kernels
/// split rows, not sums; tested), only the speed does. The process's count is restored at the end.
/// </summary>
public sealed class DecodeThreads
{
    public const int ProbeSteps = 8, ReprobeEvery = 48;
    readonly int _process;
    readonly int[] _candidates;
    readonly List<double>[] _samples;
    int _chosen, _current;
    long _start;

    public DecodeThreads(int processThreads, int? fixedThreads)
    {
        _process = processThreads;
        _candidates = fixedThreads is { } f ? [Math.Max(1, f)] : processThreads > 1 ? [processThreads, 1] : [processThreads];
        _samples = _candidates.Select(_ => new List<double>()).ToArray();
        _chosen = _current = processThreads;
    }

    /// <summary>The count the last step ran with (for tests and logs).</summary>
    public int Current => _current;

    int? ProbeCandidate(int step)
    {
        if (_candidates.Length == 1) return null;
        int phase = step % ReprobeEvery;
        if (phase >= ProbeSteps) return null;
        int[] order = [0, 1, 1, 0];                                                             // A B B A
        return order[phase % 4];
    }

    public void Begin(int step)
    {
        int threads = ProbeCandidate(step) is { } c ? _candidates[c] : _candidates.Length == 1 ? _candidates[0] : _chosen;
        if (threads != _current)                                                              // the process's count: nothing to set
        {
            set_num_threads(threads);
            _current = threads;
        }
        _start = System.Diagnostics.Stopwatch.GetTimestamp();
    }

    public void End(int step)
    {
        if (ProbeCandidate(step) is not { } c) return;
        _samples[c].Add(System.Diagnostics.Stopwatch.GetElapsedTime(_start).TotalSeconds);
        if (step % ReprobeEvery != ProbeSteps - 1) return;
        double Median(List<double> v) { var s = v.Order().ToArray(); return s[s.Length / 2]; }
        _chosen = _candidates[Enumerable.Range(0, _candidates.Length).MinBy(i => Median(_samples[i]))];
        foreach (var list in _samples) list.Clear();
    }

    public void Restore()
    {
        if (_current != _process) set_num_threads(_process);
        _current = _process;
    }
}
