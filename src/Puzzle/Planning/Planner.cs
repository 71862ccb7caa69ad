using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Domain;
using Puzzle.Model;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using static TorchSharp.torch;

namespace Puzzle.Planning;

/// <summary>One stage's estimate: wall time, peak resident memory (host RAM, or device memory per GPU), disk written.</summary>
public sealed record StagePlan(string Stage, double Seconds, long PeakBytes, long DiskBytes, string Note, bool Host = false)
{
    /// <summary>Of <see cref="Seconds"/>: starting the stage's processes (.NET and libtorch; evaluation starts a second one for the bench).</summary>
    public double StartupSeconds { get; init; }

    /// <summary>Of <see cref="Seconds"/>: loading its models (read from safetensors, checked, converted to the dtype held).</summary>
    public double LoadSeconds { get; init; }

    /// <summary>Of <see cref="Seconds"/>: writing its checkpoints (flushed to disk).</summary>
    public double WriteSeconds { get; init; }
}

/// <summary>
/// What the time estimates rest on: the rate (FLOP/s) a decoder layer of the parent's shape reaches in fp32 and in the
/// training dtype, and the resident memory of the runtime itself. From a short calibration here or from a GPU roofline.
/// </summary>
public sealed record Calibration(string Source, double Fp32Rate, double ComputeRate, ScalarType Compute, long BaselineBytes, int Gpus, double? GpuMemoryBytes)
{
    /// <summary>Seconds to build (allocate and initialise) one decoder block of the parent's shape: per scored candidate, per BLD unit.</summary>
    public double BlockBuildSeconds { get; init; }

    /// <summary>Seconds per logit of the vocabulary work (log-softmaxes and KL over [tokens, V] in fp32) in scoring, GKD and evaluation.</summary>
    public double LogitSeconds { get; init; }

    /// <summary>Seconds of one decode step through one decoder layer (batch 1, one token; latency, not FLOPs).</summary>
    public double DecodeLayerSeconds { get; init; }

    /// <summary>Seconds per weight element of a matrix-vector product (the LM head in a decode step).</summary>
    public double MatVecSecondsPerWeight { get; init; }

    /// <summary>FLOP/s of training (forward + backward, counted as 3 forwards) of a decoder layer in the compute dtype; 0: the compute rate.</summary>
    public double TrainRate { get; init; }

    public double Training => TrainRate > 0 ? TrainRate : ComputeRate;

    /// <summary>Seconds per trained parameter of one optimizer step (gradient moved to fp32, clipped, AdamW, master copied back).</summary>
    public double StepSecondsPerParameter { get; init; }

    /// <summary>Seconds per weight of a random initialisation (the engine's timing models in costs).</summary>
    public double InitSecondsPerWeight { get; init; }

    /// <summary>Seconds to start a stage's process (.NET and libtorch loaded, configs read): the plan's own, measured from its process start.</summary>
    public double StartupSeconds { get; init; }

    /// <summary>Seconds per parameter of loading a model into fp32 (read from safetensors, checked, converted: <c>Checkpoint.LoadWeights</c>).</summary>
    public double LoadFp32SecondsPerParameter { get; init; } = 4 / 1e9;

    /// <summary>Seconds per parameter of loading a model into the compute dtype (bf16 on a CPU).</summary>
    public double LoadComputeSecondsPerParameter { get; init; } = 2 / 1e9;

    /// <summary>Bytes per second at which a stage writes a checkpoint (flushed to disk).</summary>
    public double WriteBytesPerSecond { get; init; } = 1e9;

    /// <summary>
    /// Resident bytes of a stage's process that has started (.NET, libtorch and OR-Tools loaded, configs read) but done no
    /// tensor work: the plan's own, read before its calibration; 0: <see cref="BaselineBytes"/>. The floor of a stage
    /// that builds no model (the search without measured checks or probes: the MIP over scores.json and costs.json).
    /// </summary>
    public long StartupBytes { get; init; }

    /// <summary>The floor of a stage that does no tensor work: <see cref="StartupBytes"/>, at most <see cref="BaselineBytes"/>.</summary>
    public long IdleFloorBytes => StartupBytes > 0 ? Math.Min(StartupBytes, BaselineBytes > 0 ? BaselineBytes : StartupBytes) : BaselineBytes;


    public bool OnGpu => Gpus > 0;
}

/// <summary>
/// `puzzle plan`: time, peak memory and disk of every stage for a parent and a run config, before running anything.
/// The memory model (bytes as a function of layers L, hidden H, vocabulary V, FFN width I, tokens, batch) is the one
/// in docs/memory.md; every term below names its counterpart there.
/// </summary>
public static partial class Planner
{
    /// <summary>Test-split size assumed when evaluation.max_tokens is null (the whole split; the demo's is ~195k tokens).</summary>
    const long AssumedTestTokens = 200_000;

    public const double GpuUtilisation = 0.4;

    /// <summary>Forward FLOPs of layer <paramref name="layer"/> for <paramref name="batch"/> sequences of <paramref name="t"/> tokens.</summary>
    public static double LayerForwardFlops(ModelConfig c, int layer, int t, int batch)
    {
        double tokens = (double)batch * t;
        var a = c.Blocks[layer].Attention;
        double attention = a.IsGqa ? 2.0 * 2 * c.NumAttentionHeads * c.HeadDim * batch * (t * (t + 1.0) / 2) : 0;
        return 2 * tokens * c.BlockParameters(layer) + attention;
    }

    static double BlocksForwardFlops(ModelConfig c, int from, int to, int t, int batch)
    {
        double sum = 0;
        for (int i = from; i < to; i++) sum += LayerForwardFlops(c, i, t, batch);
        return sum;
    }

    /// <summary>
    /// The tokens the evaluation reads of the whole test split (its whole windows) where data.path is prepared; null
    /// where it is not (yet): the pipeline prepares it from data.inputs, and the plan assumes <see cref="AssumedTestTokens"/>.
    /// </summary>
    public static long? PreparedTestTokens(DataSection data)
    {
        if (string.IsNullOrEmpty(data.Path) || !File.Exists(Path.Combine(data.Path, Data.DataManifest.FileName))) return null;
        try
        {
            var manifest = Data.DataManifest.Read(data.Path);
            return Math.Max(0, (manifest.Split("test").Tokens - 1) / manifest.SeqLen) * manifest.SeqLen;
        }
        catch (PuzzleException)
        {
            return null;                                                                          // no test split: the evaluation will say so
        }
    }

    public static List<StagePlan> Plan(ModelConfig parent, RunConfig run, Calibration cal)
    {
        var c = parent;
        int L = c.NumLayers, H = c.HiddenSize, V = c.VocabSize, T = run.Data.SeqLen;
        int I = c.Blocks.Max(b => b.Ffn.IntermediateSize ?? 0);
        long P = c.TotalParameters;
        double gpus = Math.Max(1, cal.Gpus);
        long R0 = cal.BaselineBytes;
        // Weights as the stages hold them: fp32 on the CPU; the compute dtype (bf16) on GPUs, split over the GPUs.
        int wb = cal.OnGpu ? 2 : 4;
        long Weights(long parameters) => (long)(parameters * (double)wb / gpus);
        long PerGpu(double bytes) => (long)(bytes / gpus);
        int cb = cal.Compute == ScalarType.Float32 ? 4 : 2;
        var variants = SearchSpace.Expand(c, run.SearchSpace);
        var plans = new List<StagePlan>();
        // What every stage does besides its computation (docs/memory.md, Time): start its process, load its models (read,
        // checked, converted to the dtype held: per parameter, as calibrated), write its checkpoints (flushed to disk).
        double Load(long parameters, int dtypeBytes) => cal.OnGpu ? 0 : parameters * (dtypeBytes == 4 ? cal.LoadFp32SecondsPerParameter : cal.LoadComputeSecondsPerParameter);
        // The load is calibrated from a bf16 source (a parent layer): bf16 → fp32 moves 6 bytes a parameter, bf16 → bf16 4.
        // From an fp32 source (GKD's child) the bytes read and written scale the fp32 rate: fp32 → bf16 6, fp32 → fp32 8.
        double ExportLoad(long parameters, int sourceBytes, int dtypeBytes) =>
            sourceBytes == 2 ? Load(parameters, dtypeBytes) : Load(parameters, 4) * (sourceBytes + dtypeBytes) / 6.0;
        double Logits(double tokens) => tokens * V * cal.LogitSeconds;                             // log-softmax / KL work over [tokens, V]
        double Write(long bytes) => cal.OnGpu ? 0 : bytes / cal.WriteBytesPerSecond;
        double startup = cal.StartupSeconds;                                                       // 0 on a roofline
        StagePlan Stage(string name, double compute, long peak, long disk, string note, double load = 0, double write = 0, int processes = 1, bool host = false) =>
            new(name, compute + processes * startup + load + write, peak, disk, note, host) { StartupSeconds = processes * startup, LoadSeconds = load, WriteSeconds = write };

        // 3. BLD: parent + the largest layer's units (fp32 master, compute copy, grads, AdamW moments) + one step's activations.
        var bld = run.Bld;
        int steps = (int)Math.Max(1, bld.TokensPerVariant / ((long)bld.Batch * T));
        long Params(SubblockVariant v) => v.Kind == SubblockKind.Attention ? c.AttentionParameters(v.Attention!) : c.FfnParameters(v.Ffn!);
        var trained = variants.Where(v => v.NeedsTraining).ToList();
        var trainingLayers = trained.Select(v => v.Layer).Distinct().ToList();
        // Every unit of a layer is alive at once: a whole block as fp32 master (+ a compute copy when not fp32), and for a
        // trained unit its own sublayer's gradients (fp32 + compute) and AdamW moments.
        int copy = cb == 4 ? 0 : cb;
        long Other(SubblockVariant v) => v.Kind == SubblockKind.Attention ? c.FfnParameters(c.Blocks[v.Layer].Ffn) : c.AttentionParameters(c.Blocks[v.Layer].Attention);
        long unitsBytes = trainingLayers.Count == 0 ? 0 : trainingLayers.Max(l => variants.Where(v => v.Layer == l)
            .Sum(v => (4L + copy) * (Other(v) + Params(v)) + (v.NeedsTraining ? (4L + copy + 8) * Params(v) : 0)));
        long stepTokens = (long)bld.Batch * T;
        long unitActivations = stepTokens * (12L * H + 4L * I) * 4 + (long)bld.Batch * c.NumAttentionHeads * T * T * 4 * 3;
        long validation = 2 * Math.Max(T, bld.ValidationTokens / T * T) * (long)H * 4 + Math.Max(T, bld.CalibrationTokens / T * T) * (long)I * 4;
        long cacheDisk = trainingLayers.Count == 0 ? 0 : ActivationCache.Bytes(steps, bld.Batch, T, H, trainingLayers.SelectMany(l => new[] { l, l + 1 }).Distinct().Count());
        long libraryDisk = trained.Sum(v => 4 * Params(v));
        // fp32 work (the parent is held in fp32): the cache's parent pass per step, and per layer the parent's pass up to
        // it over the validation windows (and the calibration windows where an FFN is narrowed), and every unit's NMSE
        // before and after training; compute-dtype work: forward + backward of the trained units.
        long valRows = Math.Max(1, bld.ValidationTokens / T), calRows = Math.Max(1, bld.CalibrationTokens / T);
        var narrowed = variants.Where(v => v.Ffn is { IsSwiGlu: true } f && f.IntermediateSize != c.Blocks[v.Layer].Ffn.IntermediateSize).Select(v => v.Layer).Distinct();
        double parentFlops = (trainingLayers.Count > 0 ? BlocksForwardFlops(c, 0, L, T, bld.Batch) * steps : 0)
                             + variants.Select(v => v.Layer).Distinct().Sum(l => BlocksForwardFlops(c, 0, l + 1, T, 1) * valRows)
                             + narrowed.Sum(l => BlocksForwardFlops(c, 0, l + 1, T, 1) * calRows);
        double bldFp32 = variants.Sum(v => 2 * 2.0 * c.BlockParameters(v.Layer) * valRows * T);
        // The frozen other sublayer: the parent's FFN after each attention unit; the parent's attention before a layer's
        // FFN units once per step for all of them (BlockTraining.TrainLayer shares it).
        double bldCompute = trained.Sum(v => 3 * (2.0 * Params(v) * stepTokens) * steps                           // forward + backward of the unit
                                             + (v.Kind == SubblockKind.Attention ? 2.0 * stepTokens * Other(v) * steps : 0))
                            + trained.Where(v => v.Kind == SubblockKind.Ffn).Select(v => v.Layer).Distinct()
                                     .Sum(l => 2.0 * stepTokens * c.AttentionParameters(c.Blocks[l].Attention) * steps);
        // The parent: in bf16 where it is stored in bf16 and the units compute in bf16 (BlockLibraryBuilder.ParentDtype),
        // its passes then at the compute rate; else fp32.
        bool bf16Parent = BlockLibraryBuilder.ParentDtype(c, cal.Compute) == ScalarType.BFloat16;
        long parentWeights = cal.OnGpu ? Weights(P) : P * (bf16Parent ? 2L : 4L);
        double bldSeconds = parentFlops / (bf16Parent ? cal.ComputeRate : cal.Fp32Rate) + bldFp32 / cal.Fp32Rate + bldCompute / cal.Training
                            + variants.Count * 2 * cal.BlockBuildSeconds;                                      // each unit's master and working copy
        // The C heap's slack (CPU; docs/memory.md, "The C heap's slack"): the heap, never trimmed, keeps one more step's
        // activations resident beyond what is live (their freed pages, which the next placement did not reuse).
        long bldSlack = cal.OnGpu ? 0 : unitActivations;
        plans.Add(Stage("3 library (BLD)", bldSeconds,
            R0 + parentWeights + PerGpu(unitsBytes + unitActivations + validation) + bldSlack,                      // units train one after another
            cacheDisk + libraryDisk,
            $"{trained.Count} variants × {bld.TokensPerVariant:N0} tokens; parent in {(bf16Parent || cal.OnGpu ? "bf16" : "fp32")}; activation cache {Gib(cacheDisk)} GiB bf16 on disk",
            load: Load(P, bf16Parent ? 2 : 4), write: Write(cacheDisk + libraryDisk)));

        // 4. Scoring: parent + ParentCache (bf16 layer inputs, the parent's float64 summary) + one batch's forward + vocabulary chunks.
        var sc = run.Scoring;
        long rows = Math.Max(1, sc.ValidationTokens / T), tokens = rows * T;
        int cacheBytes = sc.CacheDtype is "float32" or "fp32" ? 4 : 2;
        long batchTokens = Math.Min(sc.Batch, rows) * (long)T;
        long chunk = ParentCache.DefaultVocabChunk(batchTokens, V);
        long scoringPeak = R0 + (cal.OnGpu ? Weights(P) : P * cacheBytes) + PerGpu(ParentCache.Bytes(L, H, tokens, cacheBytes) + batchTokens * (8L * H + 3L * I) * 4
                           + (long)Math.Min(sc.Batch, rows) * c.NumAttentionHeads * T * T * 4 * 2 + 6 * batchTokens * chunk * 4
                           + chunk * H * 4L);                                                     // the LM head's chunk converted to fp32 (VocabularyChunks)
        var candidates = BlockScorer.Candidates(c, variants, sc.Mode);
        double headFlops = 2.0 * H * V * tokens;
        double scoringFlops = BlocksForwardFlops(c, 0, L, T, 1) * rows
                              + candidates.Sum(k => BlocksForwardFlops(c, k.Layer + 1, L, T, 1) * rows + 2.0 * (Params(k.Attention) + Params(k.Ffn)) * tokens);
        // The LM head runs in fp32 (VocabularyChunks: each chunk of the head converted to fp32): twice for the parent (its
        // logits, then its softmax times the head rows: E_p[w]), once per candidate, plus the conversion of V × H weights
        // per candidate.
        double headSeconds = (2 + 1.0 * candidates.Count) * headFlops / cal.Fp32Rate + candidates.Count * (double)V * H * cal.LogitSeconds;
        double scoringSeconds = scoringFlops / (cacheBytes == 4 ? cal.Fp32Rate : cal.ComputeRate)
                                + headSeconds + candidates.Count * (cal.BlockBuildSeconds + 1.5 * Logits(tokens));   // per candidate: its block built, KL over the vocabulary
        plans.Add(Stage("4 score", scoringSeconds, scoringPeak, 0,
            $"{candidates.Count} candidates × {tokens:N0} tokens; cache {Gib(ParentCache.Bytes(L, H, tokens, cacheBytes))} GiB, vocabulary chunks of {chunk}",
            load: Load(P, cacheBytes)));

        // 5. Costs: the parent in the measurement dtype, one block at a time, a KV cache of the scenario.
        var s = run.Scenario;
        int mb = s.MeasureDtype is "float32" or "fp32" ? 4 : 2;
        int repeats = s.WarmupRuns + s.Repeats;
        var unique = variants.GroupBy(v => v.Kind == SubblockKind.Attention ? $"a{v.Attention}" : $"f{v.Ffn}").Select(g => g.First()).ToList();
        // Engine timing (BlockTimings.InEngine): a uniform model of `depth` layers per distinct sublayer, one with no
        // blocks, and the parent, all alive, the timing models sharing the parent's embedding and head (their own: a final
        // norm); every round runs each model's prefill and decode steps. A decode step costs its layers' latency and the LM head's matrix-vector, not FLOPs.
        var distinct = unique.Where(v => !v.IsNoOp).ToList();
        // And a model of the parent's layer 0 whole (its interaction: BlockTimings.Result.Interaction).
        bool fullModel = c.Blocks[0].KeepsBoth;
        long fullBlock = fullModel ? c.BlockParameters(0) : 0;
        int timingModels = 1 + distinct.Count + (fullModel ? 1 : 0);
        long perLayer = distinct.Sum(Params) + fullBlock;
        int depth = Math.Min(L, BlockTimings.MaxContextDepth);
        while (depth > 1 && depth * perLayer > Math.Max(P, (2L << 30) / 2)) depth--;
        long nonBlock = (long)V * H * (c.TieWordEmbeddings ? 1 : 2) + H;
        double prefillTokens = (double)s.Batch * s.PromptLength;
        int decodeSteps = Math.Max(0, s.GenerationLength - 1);
        double ModelSeconds(long blockParameters, double layers) => 2.0 * (blockParameters + (long)V * H) * prefillTokens / cal.ComputeRate
            + decodeSteps * (layers * cal.DecodeLayerSeconds + (double)V * H * cal.MatVecSecondsPerWeight);
        double round = ModelSeconds(0, 0) + distinct.Sum(v => ModelSeconds(depth * Params(v), depth / 2.0)) + ModelSeconds(P - nonBlock, L)
                       + (fullModel ? ModelSeconds(depth * fullBlock, depth) : 0);
        long kv = c.KvBytesPerToken(mb) * s.Batch * (long)(s.PromptLength + s.GenerationLength);
        // The engine fuses q/k/v and gate/up into copies (CausalLm.Fuse): every model's and the parent's blocks hold them too.
        long FusedAttention(AttentionConfig a) => a.IsGqa ? c.AttentionParameters(a) - (long)H * c.NumAttentionHeads * c.HeadDim - H : 0;
        long FusedFfn(FfnConfig f) => f.IsSwiGlu ? (c.FfnParameters(f) - H) * 2 / 3 : 0;
        long Fused(SubblockVariant v) => v.Kind == SubblockKind.Attention ? FusedAttention(v.Attention!) : FusedFfn(v.Ffn!);
        long parentFused = c.Blocks.Sum(b => FusedAttention(b.Attention) + FusedFfn(b.Ffn));
        long fullFused = fullModel ? FusedAttention(c.Blocks[0].Attention) + FusedFfn(c.Blocks[0].Ffn) : 0;
        long engineModels = (timingModels * (long)H + depth * (perLayer + distinct.Sum(Fused) + fullFused) + parentFused) * (long)mb;
        // Building the timing models: their layers initialised at random (the embedding and head are the parent's).
        double buildModels = (depth * (double)perLayer + timingModels * (double)H) * cal.InitSecondsPerWeight;
        // One engine request's transients: its KV cache and the prefill's activations; on the CPU the C heap keeps one
        // more request's worth resident (docs/memory.md, "The C heap's slack").
        long request = kv + (long)s.Batch * s.PromptLength * (4L * H + I) * mb;
        long engineSlack = cal.OnGpu ? 0 : request;
        plans.Add(Stage("5 costs", cal.OnGpu ? 0 : repeats * round + buildModels,
            R0 + PerGpu(P * (long)mb + (cal.OnGpu ? 0 : engineModels) + request) + engineSlack, 0,
            cal.OnGpu ? "roofline: nothing measured" : $"{distinct.Count} distinct sublayers{(fullModel ? " and the parent's layer" : "")} in {timingModels} models of {depth} layers and the parent, {repeats} rounds each, in {s.MeasureDtype}",
            load: Load(P, mb)));

        // 8. GKD (counted here: stage 6 probes the search's candidates with short GKDs): teacher (compute dtype) + student (fp32 master, compute copy, AdamW moments of the trained parameters,
        // then their gradients: compute-dtype ones in the backward, fp32 ones in the step) + activations + one chunk of logits.
        var g = run.Gkd;
        long child = ChildParameters(c, run);
        long assembled = child * 2;                                                             // stage 7's child, in the parent's stored dtype
        long embeddings = (long)V * H * (c.TieWordEmbeddings ? 1 : 2);
        long trainable = g.TrainEmbeddings ? child : Math.Max(0, child - embeddings);             // a bound below the embeddings trains nothing
        long gkdTokens = (long)g.Batch * T;
        long gkdChunk = Math.Min(gkdTokens, Runtime.TokenChunks.DefaultTokens(V));
        long headChunk = gkdChunk * V * 4 * 6;                                                  // logits, log-softmaxes, their product and gradient
        long activations = gkdTokens * L * GkdActivationBytesPerToken(c, cb) + (long)g.Batch * L * c.NumAttentionHeads * T * T * GkdScoreBytes(cb);
        // The step: fp32 gradients (4) and TorchSharp AdamW's temporaries (exp_avg_sq.sqrt() and its quotient, 8 bytes per
        // element of the chunk being stepped: MixedPrecisionOptimizer steps chunks of at most DefaultChunkElements, a
        // larger parameter alone).
        long largestTrained = Math.Max(g.TrainEmbeddings ? (long)V * H : 0, c.Blocks.Max(b => Math.Max((long)H * (b.Ffn.IntermediateSize ?? 0), (long)H * c.NumAttentionHeads * c.HeadDim)));
        long stepTemporaries = 8 * Math.Min(trainable, Math.Max(Training.MixedPrecisionOptimizer.DefaultChunkElements, largestTrained));
        long studentBytes = child * (4L + copy) + trainable * 8 + Math.Max(trainable * (long)cb + activations + headChunk, trainable * 4L + stepTemporaries);
        // Training: teacher forward + student forward and backward per token; validation KL (teacher and student forwards)
        // before training, every 50 steps (DistillOptions.EvalEvery) and at the end.
        int gkdSteps = (int)Math.Max(1, g.Tokens / gkdTokens);
        double GkdSeconds(long tokens)
        {
            int steps = (int)Math.Max(1, tokens / gkdTokens);
            double validations = 1 + Math.Ceiling(steps / 50.0);
            double flops = tokens * (2.0 * P + 6.0 * child) + validations * Math.Max(T, g.ValidationTokens) * 2.0 * (P + child);
            // Vocabulary work: teacher and student log-softmaxes, KL and its gradient per training token (about 3 passes);
            // the same forward work per validation token. Reading the teacher and the student.
            // The optimizer step per trained parameter and step.
            return flops / cal.ComputeRate + tokens * 6.0 * child * (1 / cal.Training - 1 / cal.ComputeRate) + Logits(3.0 * tokens + validations * Math.Max(T, g.ValidationTokens))
                   + steps * (double)trainable * cal.StepSecondsPerParameter;
        }
        double gkdSeconds = GkdSeconds(g.Tokens);
        long gkdPeak = R0 + PerGpu(P * (long)cb + studentBytes);
        // 6. Search: the MIP (seconds), then measured checks: generation of parent and candidate child (4 rounds each),
        // per solution; with search.probe_tokens, each of the search.solutions candidates assembled and given a short GKD
        // (CandidateProbe): GKD's peak and time at the probe's tokens, its child and checkpoint written and deleted.
        double generateSeconds = ModelSeconds(P - nonBlock, L);                                  // one generation of the scenario by the parent
        bool measuredChecks = run.Search.Target == "measured" && !cal.OnGpu;
        int solutions = Math.Max(1, run.Search.Solutions);
        bool probes = solutions > 1 && run.Search.ProbeTokens > 0;
        long probeTokens = Math.Max(run.Search.ProbeTokens, gkdTokens);
        int probeSteps = (int)(probeTokens / gkdTokens);
        double probeSeconds = probes ? solutions * GkdSeconds(probeTokens) : 0;
        // The measured checks run in the engine timer as in costs: both models (the child at most the parent) with their
        // fused copies, one request live and the C heap's slack of one more.
        // Without them (a roofline target, or a GPU) the stage builds no model: the MIP over scores.json
        // and costs.json (a few thousand binaries even at 80 layers) in a process that has only started.
        long searchPeak = measuredChecks ? R0 + 2 * (P + parentFused) * (long)mb + request + engineSlack : cal.IdleFloorBytes;
        // The MIP: SCIP solves a demo-sized problem (16–30 layers, a few options per group) in 0.01 s; each solve, the
        // sweep's points and the request's solutions, counted at 0.02 s per 16 layers, plus reading scores and costs and
        // drawing the Pareto front (0.3 s). Measured on the 1B (16 layers, 9 sweep points and the child): 1.1 s with the
        // process's start-up, against the 5 s this term used to be.
        int solves = solutions + (string.IsNullOrWhiteSpace(run.Search.Sweep) ? 0 : Stages.Search.SearchStage.ParseSweep(run.Search.Sweep).Values.Length);
        double mipSeconds = 0.3 + 0.02 * solves * Math.Max(1, L / 16.0);
        double checkSeconds = 8 * generateSeconds;                                               // one measured check: 4 rounds of parent and child
        var search = Stage("6 search", mipSeconds + (measuredChecks ? solutions * 4 * checkSeconds : 0) + probeSeconds,
            probes ? Math.Max(searchPeak, gkdPeak) : searchPeak, probes ? assembled + child * 4L + trainable * 12L : 1 << 20,
            (measuredChecks ? $"MIP + up to 4 measured checks per solution ({solutions})" : "MIP only") +
            (probes ? $"; {solutions} candidates probed by {probeTokens:N0} tokens of GKD each ({probeSeconds:F0} s)" : ""),
            load: (measuredChecks ? Load(P, mb) : 0) + (probes ? solutions * (Load(P, cb) + Load(child, 4)) : 0),
            write: probes ? solutions * (Write(assembled) + Write(GkdWrittenBytes(child, trainable, probeSteps))) : 0);
        plans.Add(search);

        // 7. Assemble: streamed; the largest tensor read and converted.
        long largest = (long)V * H;
        // Each child tensor read from the parent's or the library's safetensors, converted to the parent's stored dtype and written.
        // With assembly.coupled_bld_tokens: coupled BLD first (CoupledBld), bounded by every layer trained at the parent's
        // block size (layers kept as the parent's are skipped; the child's blocks are smaller): BLD's terms for one whole
        // block per layer, trained at a time, each saved in fp32; the parent's activations the library's cache where it
        // holds the same batches (the same tokens), else a cache of its own at every boundary.
        long coupledTokens = run.Assembly.CoupledBldTokens;
        double coupledSeconds = 0, coupledLoad = 0, coupledWrite = 0;
        long coupledPeak = 0, coupledDisk = 0;
        if (coupledTokens > 0)
        {
            int cSteps = (int)Math.Max(1, coupledTokens / stepTokens);
            bool libraryCache = cSteps == steps && bld.Activations != "recompute" && trainingLayers.Count == L;
            long blockMax = Enumerable.Range(0, L).Max(c.BlockParameters);
            long blocks = Enumerable.Range(0, L).Sum(c.BlockParameters);
            long ownCache = libraryCache || bld.Activations == "recompute" ? 0 : ActivationCache.Bytes(cSteps, bld.Batch, T, H, L + 1);
            double cParent = (ownCache > 0 ? BlocksForwardFlops(c, 0, L, T, bld.Batch) * cSteps : 0)
                             + Enumerable.Range(0, L).Sum(l => BlocksForwardFlops(c, 0, l + 1, T, 1) * valRows);   // each layer's validation inputs
            double cFp32 = 2 * 2.0 * blocks * valRows * T;                                              // NMSE before and after
            double cCompute = 3 * 2.0 * blocks * stepTokens * cSteps;                                   // forward + backward of the whole block
            coupledSeconds = cParent / (bf16Parent ? cal.ComputeRate : cal.Fp32Rate) + cFp32 / cal.Fp32Rate + cCompute / cal.Training
                             + cSteps * (double)blocks * cal.StepSecondsPerParameter + L * 2 * cal.BlockBuildSeconds;
            coupledPeak = R0 + parentWeights + PerGpu((4L + copy) * blockMax + (4L + copy + 8) * blockMax + unitActivations + validation) + bldSlack;
            coupledDisk = ownCache + 4 * blocks;
            coupledLoad = Load(P, bf16Parent ? 2 : 4);
            coupledWrite = Write(coupledDisk);
        }
        plans.Add(Stage("7 assemble", coupledSeconds, Math.Max(cal.IdleFloorBytes + largest * (4 + 2), coupledPeak), assembled + coupledDisk,
            "host RAM; streamed; the child is at most the parent's size" +
            (coupledTokens > 0 ? $"; coupled BLD: up to {L} layers × {coupledTokens:N0} tokens" : ""),
            load: Load(child, 2) + coupledLoad, write: Write(assembled) + coupledWrite, host: coupledTokens == 0 || !cal.OnGpu));

        plans.Add(Stage("8 distill (GKD)", gkdSeconds,
            gkdPeak, child * 4L + trainable * (4L + 8),
            $"{g.Tokens:N0} tokens, batch {g.Batch}; child ≤ {child / 1e6:F0} M parameters, {trainable / 1e6:F0} M trained; logits in chunks of {gkdChunk} tokens",
            load: Load(P, cb) + Load(child, 4), write: Write(GkdWrittenBytes(child, trainable, gkdSteps))));

        // The evaluation's and the bench's terms (stage 9, and each baseline's in 8b). Evaluation: child and parent in fp32,
        // one batch's activations and a chunk of logits; bench (a fresh process): both in the measurement dtype with KV caches.
        var e = run.Evaluation;
        long? testTokens = e.MaxTokens is null ? PreparedTestTokens(run.Data) : null;
        long evalTokens = e.MaxTokens ?? testTokens ?? AssumedTestTokens;                       // null: the whole test split
        double evalFlops = evalTokens * 2.0 * (P + child);
        double benchSeconds = (e.BenchRepeats + 1) * 2 * generateSeconds;                          // parent and child, warm-up + rounds
        long evalBatchTokens = 8L * T;
        // The C heap does not reuse a forward's attention scores from layer to layer: one [8, h, T, T] fp32 tensor per layer
        // stays resident until the evaluator trims the heap after the forward (Runtime.NativeHeap; CPU only).
        long retainedScores = cal.OnGpu ? 0 : L * 8L * c.NumAttentionHeads * T * T * 4;
        long evalPeak = R0 + Weights(P + child) + PerGpu(evalBatchTokens * (8L * H + 3L * I) * 4 + 8L * c.NumAttentionHeads * T * T * 4 * 2
                                                       + Math.Min(evalBatchTokens, Runtime.TokenChunks.DefaultTokens(V)) * V * 4 * 6) + retainedScores;
        // llama.cpp's side of the bench (evaluation.bench_engine resolving to both or llama.cpp; CPU only): in the bench's
        // process, after our models are disposed, each model exported to GGUF once (streamed: one tensor read in its
        // stored dtype and converted in chunks), then llama-batched-bench per model and round (docs/memory.md, 9).
        string benchEngine = Stages.Benchmark.BenchEngine.Resolve(e.BenchEngine, out _);
        bool ours = benchEngine != Stages.Benchmark.BenchEngine.LlamaCpp, llamaCpp = benchEngine != Stages.Benchmark.BenchEngine.Puzzle && !cal.OnGpu;
        var gguf = llamaCpp ? LlamaCppBenchPlan(c, child, s, e.BenchRepeats + 1, cal) : default;
        long benchPeak = Math.Max(ours ? R0 + PerGpu((P + child) * (long)mb + 2 * kv) : 0, llamaCpp ? gguf.ExportPeak + R0 : 0);

        // 8b. Baselines (BaselinesStage): each rule baseline is chosen with up to BaselineContext.MaxMeasurements measured
        // checks, then assembled, distilled, evaluated and benched as the Puzzle child is (ChildRecipe); its evaluation
        // runs the child alone against the parent's kept final hidden states (ReferenceStates; the parent is still loaded
        // for its head), its bench is a fresh process. `matched` repeats the Puzzle search (checks and probes) at each
        // rule baseline's speed, then the same recipe. An upper bound: every rule reaching the target and every matched
        // child needed (a baseline within 3% of the Puzzle child's speed needs none); baselines_gkd_fractions add, per
        // child and for the Puzzle child, each point's GKD and evaluation.
        // The first evaluation against the parent (both models' passes), and a later one against its kept states (the
        // child's pass and the parent's head).
        double firstEvalCompute = evalFlops / cal.Fp32Rate + Logits(2.0 * evalTokens);
        double evalCompute = evalTokens * 2.0 * (child + (long)H * V) / cal.Fp32Rate + Logits(2.0 * evalTokens);
        long referenceStates = evalTokens * H * 4L;
        var rules = run.Baselines.Where(n => n != Stages.Baselines.BaselinesStage.MatchedName).Distinct().ToList();
        int matchedChildren = run.Baselines.Contains(Stages.Baselines.BaselinesStage.MatchedName) ? rules.Count : 0;
        int baselineChildren = rules.Count + matchedChildren;
        var sweep = run.BaselinesGkdFractions.Where(f => f < 1).Distinct().ToList();
        if (baselineChildren > 0 || sweep.Count > 0)
        {
            // Per child: compute, loads (assembly's read; GKD's teacher and student; the evaluation's parent and child in fp32;
            // the bench's both in the measurement dtype and llama.cpp's GGUF export) and writes (the assembled child, GKD's).
            double childCompute = gkdSeconds + evalCompute + (ours ? benchSeconds : 0) + gguf.BenchSeconds;
            double childLoad = Load(child, 2) + Load(P, cb) + Load(child, 4) + Load(P + child, 4) + (ours ? Load(P + child, mb) : 0) + gguf.ExportLoadSeconds;
            double childWrite = Write(assembled) + Write(GkdWrittenBytes(child, trainable, gkdSteps)) + gguf.ExportWriteSeconds;
            bool ruleChecks = measuredChecks && rules.Count > 0;
            // The first evaluation (a baseline's or a sweep point's, before stage 9) runs the parent too and writes its states.
            double compute = firstEvalCompute - evalCompute + baselineChildren * childCompute + (ruleChecks ? rules.Count * Stages.Baselines.BaselineContext.DefaultMaxMeasurements * checkSeconds : 0)
                             + matchedChildren * (search.Seconds - search.StartupSeconds - search.LoadSeconds - search.WriteSeconds);
            double load = baselineChildren * childLoad + (ruleChecks ? Load(P, mb) : 0) + matchedChildren * search.LoadSeconds;
            double write = Write(referenceStates) + baselineChildren * childWrite + matchedChildren * search.WriteSeconds;
            foreach (double f in sweep)                                                          // every child and the Puzzle child's
            {
                long pointTokens = (long)Math.Round(f * g.Tokens);
                compute += (baselineChildren + 1) * (evalCompute + (f > 0 ? GkdSeconds(pointTokens) : 0));
                load += (baselineChildren + 1) * (Load(P + child, 4) + (f > 0 ? Load(P, cb) + Load(child, 4) : 0));
                write += (baselineChildren + 1) * (f > 0 ? Write(GkdWrittenBytes(child, trainable, (int)Math.Max(1, pointTokens / gkdTokens))) : 0);
            }
            long baselinesPeak = new[] { gkdPeak, evalPeak, benchPeak, matchedChildren > 0 ? search.PeakBytes : 0, ruleChecks ? searchPeak : 0 }.Max();
            long distilled = child * 4L + trainable * 12L;
            long baselinesDisk = referenceStates + baselineChildren * (assembled + distilled) + (baselineChildren + 1) * sweep.Count(f => f > 0) * distilled;
            plans.Add(Stage("8b baselines", compute, baselinesPeak, baselinesDisk,
                $"{string.Join(", ", run.Baselines)}: up to {baselineChildren} children, each assembled, distilled on {g.Tokens:N0} tokens, evaluated and benched" +
                (ruleChecks ? $"; up to {Stages.Baselines.BaselineContext.DefaultMaxMeasurements} measured checks per rule" : "") +
                (matchedChildren > 0 ? $"; {matchedChildren} matched search(es) as stage 6" : "") +
                (sweep.Count > 0 ? $"; GKD sweep at {string.Join(", ", sweep)} of the tokens for {baselineChildren + 1} children" : ""),
                load: load, write: write, processes: 1 + baselineChildren));
        }

        // 9. Evaluate + bench. The parent's final hidden states on the evaluated tokens (fp32), kept in RUN/eval for every later evaluation
        // against it (Runtime.ReferenceStates): written here when stage 8b evaluated nothing against the parent before; else
        // this evaluation runs the child and the parent's head only.
        bool statesKept = baselineChildren > 0 || sweep.Count > 0;
        // Two processes: the evaluation (parent and child in fp32) and the bench (both in the measurement dtype).
        plans.Add(Stage("9 evaluate + bench", (statesKept ? evalCompute : firstEvalCompute) + (ours ? benchSeconds : 0) + gguf.BenchSeconds, Math.Max(evalPeak, benchPeak),
            (1 << 20) + (statesKept ? 0 : referenceStates),
            $"{evalTokens:N0} tokens of KL/perplexity{(e.MaxTokens is null ? testTokens is null ? " (whole test split; assumed)" : " (whole test split)" : "")}, {e.BenchRepeats} bench rounds in {benchEngine}" +
            (llamaCpp ? $" (GGUF export {Gib(gguf.ExportPeak + R0)} GiB, {gguf.ExportLoadSeconds + gguf.ExportWriteSeconds:F1} s; llama.cpp {gguf.BenchSeconds:F1} s)" : ""),
            load: Load(P + child, 4) + (ours ? Load(P + child, mb) : 0) + gguf.ExportLoadSeconds, write: gguf.ExportWriteSeconds + (statesKept ? 0 : Write(referenceStates)), processes: 2));

        // 10. Export: the child read from its checkpoint (GKD's, fp32, where GKD ran; else the assembled child in the
        // parent's bf16), held in the export dtype and written once per format (HF safetensors, GGUF).
        int xb = run.Export.Dtype is "float32" or "fp32" ? 4 : 2;
        int sourceBytes = g.Tokens > 0 ? 4 : 2;
        long exported = child * xb * Math.Max(1, run.Export.Formats.Length);
        plans.Add(Stage("10 export", 0, R0 + child * (long)xb + largest * 4, exported, $"host RAM; the child read in {(sourceBytes == 4 ? "fp32" : "bf16")}, held in {run.Export.Dtype}",
            load: ExportLoad(child, sourceBytes, xb), write: Write(exported), host: true));
        return plans;
    }

    /// <summary>
    /// What GKD writes (Distiller.Run; docs/memory.md, Time): the fp32 student once at step 0 (the best so far,
    /// <c>P_c·4</c>) and the training checkpoint every <c>CheckpointEvery</c> steps and at the end (TrainingCheckpoint.Save:
    /// the fp32 masters and AdamW's two moments of the trained parameters, <c>P_t·(4 + 8)</c>; each save replaces the
    /// last). A validation that improves on the best rewrites the student (<c>P_c·4</c> more each time, at most one per
    /// validation): not counted, since it depends on the run (on the 1B's 2-step run the best stayed step 0).
    /// </summary>
    public static long GkdWrittenBytes(long child, long trainable, int steps)
    {
        const int every = Training.DistillOptions.DefaultCheckpointEvery;
        long checkpoints = (Math.Max(1, steps) + every - 1) / every;
        return child * 4L + checkpoints * trainable * (4L + 8);
    }

    /// <summary>llama.cpp's side of the evaluation's bench (docs/memory.md, 9 eval + bench).</summary>
    public readonly record struct LlamaCppPlan(long ExportPeak, double ExportLoadSeconds, double ExportWriteSeconds, double BenchSeconds);

    /// <summary>
    /// The GGUF export of parent and child (<c>GgufExporter.Export</c> from their directories: nothing loaded, one tensor
    /// at a time read from its memory map in its stored dtype, up to 4 bytes for GKD's fp32 child, and converted in
    /// chunks): peak above the runtime <c>2·V·H·4</c> (the embedding's mapped pages and its copy) plus a chunk in fp32
    /// and the measurement dtype; time: each tensor read and checked (per parameter, as a load into the compute dtype)
    /// and written in the measurement dtype at the write rate. llama-batched-bench: one run per model and round
    /// (warm-up included), each the scenario's prefill and decode steps at the rate this plan gives our engine
    /// (<c>ModelSeconds</c>: not calibrated on llama.cpp itself), for the parent and for the child at its size.
    /// </summary>
    static LlamaCppPlan LlamaCppBenchPlan(ModelConfig c, long child, ScenarioSection s, int rounds, Calibration cal)
    {
        long P = c.TotalParameters, V = c.VocabSize, H = c.HiddenSize;
        int mb = s.MeasureDtype is "float32" or "fp32" ? 4 : 2;
        long chunk = Gguf.GgufExporter.ChunkElements * (4L + mb);
        long peak = 2 * V * H * 4 + chunk;
        double load = (P + child) * cal.LoadComputeSecondsPerParameter;
        double write = (P + child) * (double)mb / cal.WriteBytesPerSecond;
        long nonBlock = V * H * (c.TieWordEmbeddings ? 1 : 2) + H;
        double prefillTokens = (double)s.Batch * s.PromptLength;
        int decodeSteps = Math.Max(0, s.GenerationLength - 1);
        double Generate(long blocks) => 2.0 * (blocks + V * H) * prefillTokens / cal.ComputeRate
            + decodeSteps * (c.NumLayers * (double)blocks / Math.Max(1, P - nonBlock) * cal.DecodeLayerSeconds + (double)V * H * cal.MatVecSecondsPerWeight);
        double bench = rounds * (Generate(P - nonBlock) + Generate(Math.Max(0, child - nonBlock)));
        return new LlamaCppPlan(peak, load, write, bench);
    }

    /// <summary>
    /// What the GKD step's autograd graph holds per token and layer, besides the attention scores (docs/memory.md, 8 GKD;
    /// the parent's shape bounds the child's), in bytes, for the compute dtype's size <paramref name="cb"/>:
    /// each RMSNorm its fp32 input (4H; Model/Layers.cs converts to fp32) and, in the compute dtype, its normalised row and
    /// its output (the projections' input); attention the rotated queries, their grouped copy and the context (3 × heads ×
    /// head_dim) and the rotated keys and the values (2 × kv heads × head_dim); SwiGLU the gate before and after SiLU,
    /// the up projection and their product (4I); the layer's output kept for the cosine term and the teacher's state (or
    /// the cosine term's gradient that replaces it: Distiller.StepLoss), 2H.
    /// </summary>
    public static long GkdActivationBytesPerToken(ModelConfig c, int cb)
    {
        long H = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDim;
        long kv = c.Blocks.Max(b => b.Attention.IsGqa ? b.Attention.NumKeyValueHeads!.Value : 0) * (long)c.HeadDim;
        long I = c.Blocks.Max(b => b.Ffn.IntermediateSize ?? 0);
        return 2 * (4 * H + 2 * cb * H) + cb * (3 * q + 2 * kv) + 4 * cb * I + 2 * cb * H;
    }

    /// <summary>
    /// Bytes per attention score element the GKD step's graph holds: the softmax's fp32 output (Model/Attention.cs takes the
    /// softmax in fp32) and, in a 16-bit compute dtype, its copy in that dtype that multiplies the values.
    /// </summary>
    public static int GkdScoreBytes(int cb) => cb == 4 ? 4 : 4 + cb;

    /// <summary>The child's size bound before the search: the parent's, or search.max_params when smaller.</summary>
    static long ChildParameters(ModelConfig parent, RunConfig run) =>
        run.Search.MaxParams is { } max ? Math.Min(parent.TotalParameters, max) : parent.TotalParameters;

    public static JsonObject ToJson(ModelConfig parent, Calibration cal, IReadOnlyList<StagePlan> plans) => new()
    {
        ["parameters"] = parent.TotalParameters,
        ["calibration"] = new JsonObject
        {
            ["source"] = cal.Source, ["fp32_flops_per_s"] = cal.Fp32Rate, ["compute_flops_per_s"] = cal.ComputeRate,
            ["compute_dtype"] = cal.Compute.ToString(), ["baseline_bytes"] = cal.BaselineBytes, ["startup_bytes"] = cal.StartupBytes, ["gpus"] = cal.Gpus,
            ["startup_seconds"] = Math.Round(cal.StartupSeconds, 2), ["decode_layer_seconds"] = cal.DecodeLayerSeconds, ["load_fp32_seconds_per_parameter"] = cal.LoadFp32SecondsPerParameter,
            ["load_compute_seconds_per_parameter"] = cal.LoadComputeSecondsPerParameter, ["write_bytes_per_second"] = cal.WriteBytesPerSecond,
        },
        ["stages"] = new JsonArray(plans.Select(p => (JsonNode)new JsonObject
        {
            ["stage"] = p.Stage, ["seconds"] = Math.Round(p.Seconds, 1), ["startup_seconds"] = Math.Round(p.StartupSeconds, 2),
            ["load_seconds"] = Math.Round(p.LoadSeconds, 2), ["write_seconds"] = Math.Round(p.WriteSeconds, 2), ["peak_bytes"] = p.PeakBytes, ["disk_bytes"] = p.DiskBytes, ["note"] = p.Note,
            ["host"] = p.Host, ["fits"] = cal.GpuMemoryBytes is { } m && !p.Host ? p.PeakBytes <= m : null,
        }).ToArray()),
    };

    static string Gib(long bytes) => (bytes / (double)(1L << 30)).ToString("F2", System.Globalization.CultureInfo.InvariantCulture);
}
