using System.Diagnostics;
using Puzzle.Checkpoints;
using Puzzle.Model;
using Puzzle.Stages.Costs;
using static TorchSharp.torch;

namespace Puzzle.Planning;

/// <summary>The planner's calibration: one layer of the parent timed on this machine (CPU seconds × threads), or a named GPU's roofline.</summary>
public static partial class Planner
{
    /// <summary>
    /// Times one decoder layer of the parent's shape (batch 1 × seq_len tokens) in fp32 and in the training dtype, and the
    /// work every stage's process does besides: its start-up (<paramref name="startupSeconds"/>: the caller's own, from
    /// <see cref="ProcessStartupSeconds"/>), loading weights (layer 0 read from the parent's own safetensors in
    /// <paramref name="parentDir"/>, checked and converted, as <see cref="Checkpoint.LoadWeights"/> does) and writing a
    /// checkpoint (through the stages' own <see cref="SafeTensorsWriter"/>, to the temporary folder, flushed to disk).
    /// </summary>
    /// <param name="decodeBatch">the scenario's batch (scenario.batch), at which a decode step is timed.</param>
    /// <param name="decodeContext">the positions a decode step attends to on average (prompt + generation / 2).</param>
    public static Calibration Calibrate(ModelConfig parent, int seqLen, ScalarType compute, double seconds = 1.5, string? parentDir = null, double startupSeconds = 0,
        int decodeBatch = 1, int decodeContext = 1)
    {
        // The runtime before any tensor work (libtorch is loaded by the first torch call, no_grad below, if not before);
        // with what OR-Tools' SCIP adds (measured at the end, so the other stages' R0 does not count it): what the
        // search holds when it builds no model.
        using var noGrad = no_grad();
        long startup = Process.GetCurrentProcess().WorkingSet64;
        var one = parent with { Blocks = [parent.Blocks[0]], VocabSize = Math.Min(parent.VocabSize, 1024), BosTokenId = null, EosTokenIds = [], PadTokenId = null, MaxPositionEmbeddings = Math.Max(parent.MaxPositionEmbeddings, Math.Max(seqLen, decodeContext + 1)) };
        double Rate(ScalarType dtype)
        {
            using var model = new CausalLm(one, CPU, dtype).InitializeRandom(1);
            using var scope = NewDisposeScope();
            var inputs = model.PrefillInputs(seqLen, 0, dtype);
            var x = randn([1, seqLen, parent.HiddenSize], dtype: dtype);
            for (int i = 0; i < 3; i++)
            {
                using var warm = NewDisposeScope();
                model.Layer(0).Forward(x, inputs);                                                 // warm-up: first calls allocate and pick kernels
            }
            double flops = LayerForwardFlops(parent, 0, seqLen, 1);
            // Timed in this process's CPU seconds over the torch threads, not in wall time: on a shared machine the wall
            // time of a run is mostly other sessions' (a load of 10 on 2 cores made the old wall-clock median 20x
            // slow), the CPU time is this work's. The plan is then the time on this machine unloaded; compare a stage
            // run under load by its CPU seconds / threads (benchmarks/real-parents/stage_table.py).
            var process = Process.GetCurrentProcess();
            TimeSpan Cpu()
            {
                process.Refresh();
                return process.TotalProcessorTime;
            }
            var clock = Stopwatch.StartNew();
            var cpu0 = Cpu();
            int runs = 0;
            do
            {
                using var s = NewDisposeScope();
                model.Layer(0).Forward(x, inputs);
                runs++;
            } while ((Cpu() - cpu0).TotalSeconds < seconds / 2 && clock.Elapsed.TotalSeconds < 20 * seconds && runs < 100_000);
            double busy = (Cpu() - cpu0).TotalSeconds;
            return flops * runs / Math.Max(busy, 1e-3);
        }
        // One thread, scaled by the thread count: with several, a thread preempted by another session leaves the others
        // spinning at the next barrier, and that spin is CPU time too (a load of 15 made the 2-thread CPU-time rate 10-30x
        // low); one thread's CPU seconds are its work. Linear scaling over the cores is the assumption (2 here).
        int threads = get_num_threads();
        double fp32, computeRate, train, build, logit, decode, matvec, step, init;
        long baseline;
        set_num_threads(1);
        try
        {
            fp32 = Rate(ScalarType.Float32) * threads;
            computeRate = compute == ScalarType.Float32 ? fp32 : Rate(compute) * threads;
            // Forward + backward: on this CPU a bf16 backward runs well below the forward's rate (BLD measured 2.4x the
            // forward-rate estimate before this term).
            using (enable_grad())
            using (var model = new CausalLm(one, CPU, compute).InitializeRandom(1))
            using (NewDisposeScope())
            {
                var inputs = model.PrefillInputs(seqLen, 0, compute);
                var x = randn([1, seqLen, parent.HiddenSize], dtype: compute);
                train = 3 * LayerForwardFlops(parent, 0, seqLen, 1) / CpuSeconds(() => model.Layer(0).Forward(x, inputs).sum().backward(), seconds / 4) * threads;
            }
            // The work that is not matmul FLOPs, on one thread too: building a block (per scored candidate and BLD unit),
            // the vocabulary work per logit, and a decode step's latency (per layer, and the LM head's matrix-vector).
            var dtype = compute;
            build = CpuSeconds(() => new DecoderLayer(one, parent.Blocks[0], CPU, dtype).Dispose(), seconds / 4);
            const int rows = 64, width = 8192;
            using var a = randn([rows, width]);
            using var b = randn([rows, width]);
            logit = CpuSeconds(() =>
            {
                var lp = a.log_softmax(-1);
                var lq = b.log_softmax(-1);
                (lp.exp() * (lp - lq)).sum().item<float>();
            }, seconds / 8) / (rows * width) / threads;
            // A decode step as the engine takes it (costs, measured checks, bench): the scenario's batch, one new token
            // each, attending to a KV cache of the scenario's mean decode context. At batch 1 and no context this was
            // 3-5x short of the SmolLM2-shaped parent's step at batch 16 over 191 positions (costs stage 1.53x its plan).
            using (var model = new CausalLm(one, CPU, compute).InitializeRandom(1))
            using (NewDisposeScope())
            {
                int batch = Math.Max(1, decodeBatch), context = Math.Max(1, decodeContext);
                using var cache = model.NewCache(batch, context + 1);
                using var prompt = zeros([batch, context], dtype: ScalarType.Int64);
                using (NewDisposeScope()) model.ForwardTrunk(prompt, cache);
                using var next = zeros([batch, 1], dtype: ScalarType.Int64);
                decode = CpuSeconds(() =>
                {
                    cache.Length = context;
                    model.ForwardTrunk(next, cache);
                }, seconds / 8);
            }
            using var w = randn([parent.HiddenSize, 16384], dtype: compute);
            using var v = randn([1, parent.HiddenSize], dtype: compute);
            matvec = CpuSeconds(() => v.matmul(w), seconds / 8) / (parent.HiddenSize * 16384.0) / threads;
            // The runtime's resident size after the layer work above (what a stage's process holds besides its tensors),
            // taken before the optimizer's and initialisation's calibration below adds its own heap.
            baseline = Process.GetCurrentProcess().WorkingSet64;
            // Memory-bound work per element: the optimizer step (MixedPrecisionOptimizer: the bf16 gradient moved to fp32,
            // clipped, TorchSharp's AdamW, the master copied back) per trained parameter, and a random initialisation
            // (normal_) per weight of a model built to be timed.
            const int stepRows = 512, stepCols = 4096;
            using (var master = new Projection(stepCols, stepRows, CPU, ScalarType.Float32))
            using (var work = compute == ScalarType.Float32 ? null : new Projection(stepCols, stepRows, CPU, compute))
            using (var optimizer = new Training.MixedPrecisionOptimizer(master, work, new Training.AdamWSettings()))
            using (var gradient = randn([stepRows, stepCols], dtype: compute))
            {
                master.Weight.normal_(0, 0.02);
                var trained = work ?? master;
                step = CpuSeconds(() =>
                {
                    trained.Weight.grad = gradient.clone();
                    optimizer.Step(1e-4);
                }, seconds / 8) / ((double)stepRows * stepCols) / threads;
            }
            using (var weights = empty([stepRows, stepCols], dtype: compute))
                init = CpuSeconds(() => weights.normal_(0, 0.02), seconds / 16) / ((double)stepRows * stepCols) / threads;
        }
        finally
        {
            set_num_threads(threads);
        }
        long beforeMip = Process.GetCurrentProcess().WorkingSet64;
        using (var solver = Google.OrTools.LinearSolver.Solver.CreateSolver("SCIP"))
        {
            var x = solver?.MakeBoolVar("x");
            if (solver is not null && x is not null)
            {
                solver.Objective().SetCoefficient(x, 1);
                solver.Objective().SetMaximization();
                solver.Solve();
            }
        }
        startup += Math.Max(0, Process.GetCurrentProcess().WorkingSet64 - beforeMip);
        var (loadFp32, loadCompute) = LoadSecondsPerParameter(parent, parentDir, compute);
        double write = WriteBytesPerSecond(parent);
        return new Calibration($"calibrated on this machine ({Environment.ProcessorCount} cores, {threads} torch threads; one thread's CPU seconds × {threads}: unloaded)", fp32, computeRate, compute, baseline, 0, null)
        {
            TrainRate = train, BlockBuildSeconds = build, LogitSeconds = logit, DecodeLayerSeconds = decode, MatVecSecondsPerWeight = matvec,
            StepSecondsPerParameter = step, InitSecondsPerWeight = init,
            StartupSeconds = startupSeconds, StartupBytes = startup, LoadFp32SecondsPerParameter = loadFp32, LoadComputeSecondsPerParameter = loadCompute, WriteBytesPerSecond = write,
        };
    }

    /// <summary>Seconds from this process's start to now (.NET and libtorch loaded, the command line and configs read).</summary>
    public static double ProcessStartupSeconds()
    {
        using var self = Process.GetCurrentProcess();
        return Math.Max(0, (DateTime.Now - self.StartTime).TotalSeconds);
    }

    /// <summary>
    /// Seconds per parameter of loading a model as every stage does (<see cref="Checkpoint.LoadWeights"/>: the stored
    /// tensor copied out of the memory map, checked for NaN/∞, copied into a fresh parameter of the model's dtype), into
    /// fp32 and into <paramref name="compute"/>: layer 0 of the parent read from its own safetensors (the page cache's
    /// state as it is; a parent not in the page cache reads at the disk's rate), else from a copy written here. The
    /// fastest of three passes, in this process's CPU seconds on one torch thread (user + system: the page faults of the
    /// fresh parameters count), not scaled by the thread count: the copies are memory-bound and gained little from a
    /// second thread here, and CPU seconds do not count other sessions' work on a shared machine.
    /// </summary>
    static (double Fp32, double Compute) LoadSecondsPerParameter(ModelConfig parent, string? parentDir, ScalarType compute)
    {
        using var noGrad = no_grad();
        var one = parent with { Blocks = [parent.Blocks[0]] };
        string? temp = null;
        try
        {
            Dictionary<string, string>? map = null;
            if (parentDir is not null)
                try { map = Checkpoint.WeightMap(parentDir); }
                catch (PuzzleException) { map = null; }
            using var template = new DecoderLayer(one, parent.Blocks[0], CPU, compute);
            var names = template.named_parameters().Select(p => "model.layers.0." + p.name).ToList();
            if (map is null || names.Any(n => !map.ContainsKey(n)))
            {
                // No readable parent (a config alone): a copy of layer 0 in bf16 (how parents are stored), written here.
                temp = Path.Combine(Path.GetTempPath(), $"puzzle-plan-{Environment.ProcessId}-{Guid.NewGuid():N}.safetensors");
                using var scope = NewDisposeScope();
                SafeTensorsWriter.Write(temp, template.named_parameters().Select(p => ("model.layers.0." + p.name, randn(p.parameter.shape, dtype: ScalarType.BFloat16))).ToList());
                map = names.ToDictionary(n => n, _ => temp);
            }
            long parameters = template.parameters().Sum(p => p.numel());
            var process = Process.GetCurrentProcess();
            double Cpu()
            {
                process.Refresh();
                return process.TotalProcessorTime.TotalSeconds;
            }
            double Pass(ScalarType dtype)
            {
                double best = double.MaxValue;
                for (int pass = 0; pass < 3; pass++)
                {
                    var files = new Dictionary<string, SafeTensorsFile>();
                    try
                    {
                        double start = Cpu();
                        using var layer = new DecoderLayer(one, parent.Blocks[0], CPU, dtype);
                        foreach (var (name, parameter) in layer.named_parameters())
                        {
                            string key = "model.layers.0." + name, path = map![key];
                            if (!files.TryGetValue(path, out var file)) files[path] = file = SafeTensorsFile.Open(path);
                            using var value = Checkpoint.ReadWeight(file, key, parameter.shape);
                            parameter.copy_(value);
                        }
                        best = Math.Min(best, Math.Max(Cpu() - start, 1e-4));
                    }
                    finally
                    {
                        foreach (var f in files.Values) f.Dispose();
                    }
                }
                return best / parameters;
            }
            int threads = get_num_threads();
            set_num_threads(1);
            try
            {
                double fp32 = Pass(ScalarType.Float32);
                return (fp32, compute == ScalarType.Float32 ? fp32 : Pass(compute));
            }
            finally
            {
                set_num_threads(threads);
            }
        }
        finally
        {
            if (temp is not null) File.Delete(temp);
        }
    }

    /// <summary>
    /// Bytes per second of writing a checkpoint as the stages do (<see cref="SafeTensorsWriter"/>: tensor by tensor through
    /// <c>AtomicFile</c>, flushed to disk): a bf16 layer of the parent's shape, repeated to at least 128 MiB, written to the
    /// temporary folder after an untimed write of the layer alone; the faster of two writes, wall time.
    /// </summary>
    static double WriteBytesPerSecond(ModelConfig parent)
    {
        string path = Path.Combine(Path.GetTempPath(), $"puzzle-plan-{Environment.ProcessId}-{Guid.NewGuid():N}.safetensors");
        try
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var one = parent with { Blocks = [parent.Blocks[0]] };
            using var layer = new DecoderLayer(one, parent.Blocks[0], CPU, ScalarType.BFloat16);
            var weights = layer.named_parameters().Select(p => (p.name, (Tensor)p.parameter.normal_(0, 0.02))).ToList();
            long layerBytes = weights.Sum(w => w.Item2.numel() * 2);
            int copies = (int)Math.Max(1, (128L << 20) / Math.Max(1, layerBytes));
            var tensors = Enumerable.Range(0, copies).SelectMany(i => weights.Select(w => ($"model.layers.{i}.{w.name}", w.Item2))).ToList();
            // One untimed write of the layer first: the writer's first call in a process compiles its code and creates
            // the file system's first extents, ~0.1 s that a stage pays once at start-up, not per byte (with it counted,
            // the 1B parent's 1.2 GB assembly and export were planned at 1.6x their measured time). Then the faster of
            // two timed writes.
            SafeTensorsWriter.Write(path, weights);
            double best = double.MaxValue;
            for (int pass = 0; pass < 2; pass++)
            {
                var clock = Stopwatch.StartNew();
                SafeTensorsWriter.Write(path, tensors);
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return copies * (double)layerBytes / Math.Max(best, 1e-3);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>This process's CPU seconds per call of <paramref name="action"/> (in a dispose scope), after one warm-up call.</summary>
    static double CpuSeconds(Action action, double seconds)
    {
        var process = Process.GetCurrentProcess();
        TimeSpan Cpu()
        {
            process.Refresh();
            return process.TotalProcessorTime;
        }
        using (NewDisposeScope()) action();
        var clock = Stopwatch.StartNew();
        var start = Cpu();
        int runs = 0;
        do
        {
            using var scope = NewDisposeScope();
            action();
            runs++;
        } while ((Cpu() - start).TotalSeconds < seconds && clock.Elapsed.TotalSeconds < 20 * seconds && runs < 100_000);
        return Math.Max((Cpu() - start).TotalSeconds, 1e-3) / runs;
    }

    /// <summary>The roofline of <paramref name="gpus"/> accelerators at <see cref="GpuUtilisation"/> of their bf16 peak.</summary>
    public static Calibration Roofline(AcceleratorSpec gpu, int gpus)
    {
        if (gpus <= 0) throw new PuzzleException($"--gpus must be positive, got {gpus}");
        double rate = gpu.Bf16Flops * GpuUtilisation * gpus;
        return new Calibration($"{gpus} × {gpu.Name} roofline at {GpuUtilisation:P0} of the bf16 peak", rate, rate, ScalarType.BFloat16, 0, gpus, gpu.MemoryBytes);
    }
}
