using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Training;

public sealed record DistillOptions
{
    public required string TeacherDir { get; init; }
    public required string StudentDir { get; init; }
    public required string DataDir { get; init; }
    public required string OutDir { get; init; }
    public long Tokens { get; init; } = 1_000_000;
    public int Batch { get; init; } = 16;
    public double LearningRate { get; init; } = 3e-4;
    public double WarmupFraction { get; init; } = 0.05;
    public double CosineWeight { get; init; } = 1.0;
    public double KlWeight { get; init; } = 1.0;
    /// <summary>Off by default: the paper found that the LM loss hurts GKD.</summary>
    public double LmWeight { get; init; }
    public double Temperature { get; init; } = 1.0;
    public AdamWSettings AdamW { get; init; } = new();
    public long Seed { get; init; }
    public int CheckpointEvery { get; init; } = DefaultCheckpointEvery;

    /// <summary>Steps between training checkpoints unless set (the pipeline's GKD keeps it; the planner counts its writes).</summary>
    public const int DefaultCheckpointEvery = 100;
    public int EvalEvery { get; init; } = 50;
    public long ValidationTokens { get; init; } = 16_384;
    public int LogEvery { get; init; } = 10;
    public string Precision { get; init; } = "auto";
    /// <summary>
    /// Train the token embeddings (and an untied LM head). Off, they stay the parent's and need no gradients or AdamW
    /// moments: 18 bytes less per embedding parameter (4.7 GB for Llama-3.2-1B's 262 M).
    /// </summary>
    public bool TrainEmbeddings { get; init; } = true;
    /// <summary>Tokens per log-softmax chunk of the KL / LM loss (null: <see cref="Runtime.TokenChunks.DefaultTokens"/>).</summary>
    public long? ChunkTokens { get; init; }
    public string Device { get; init; } = "cpu";
    public int? StopAfterSteps { get; init; }
    /// <summary>Start over (instead of refusing) when OUT holds a checkpoint made with other settings.</summary>
    public bool RestartOnChangedSettings { get; init; }
}

public sealed record DistillResult(int Steps, double InitialValidationKl, double BestValidationKl, int BestStep, bool Finished, bool Reused, double Seconds);

/// <summary>
/// Stage 8: global knowledge distillation of the assembled child (design.md 5):
/// L = w_cos · Σ_layers (1 − cos(h_child, h_parent)) + w_kl · T² · KL(p_parent || q_child) [+ w_lm · LM loss].
/// The teacher runs under no_grad; validation KL is tracked and the best student is what OUT holds.
/// </summary>
public static class Distiller
{
    /// <summary>Settings checked before any model is loaded; errors name the setting and the value.</summary>
    public static void Validate(DistillOptions o)
    {
        void Check(bool ok, string name, double value, string rule)
        {
            if (!ok) throw new PuzzleException($"distill: {name} must be {rule}, got {value}");
        }
        Check(o.Tokens > 0, "tokens (gkd.tokens)", o.Tokens, "positive");
        Check(o.Batch > 0, "batch (gkd.batch)", o.Batch, "positive");
        Check(double.IsFinite(o.LearningRate) && o.LearningRate > 0, "learning rate (gkd.lr)", o.LearningRate, "positive");
        Check(double.IsFinite(o.Temperature) && o.Temperature > 0, "temperature (gkd.temperature)", o.Temperature, "positive");
        foreach (var (name, w) in new[] { ("cosine weight", o.CosineWeight), ("KL weight", o.KlWeight), ("LM weight", o.LmWeight) })
            Check(double.IsFinite(w) && w >= 0, name, w, "a finite number >= 0");
        Check(o.CheckpointEvery > 0, "checkpoint interval", o.CheckpointEvery, "positive");
        Check(o.EvalEvery > 0, "evaluation interval", o.EvalEvery, "positive");
        Check(o.ValidationTokens > 0, "validation tokens", o.ValidationTokens, "positive");
        Check(o.LogEvery > 0, "log interval", o.LogEvery, "positive");
    }

    public static DistillResult Run(DistillOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        Validate(o);
        var clock = Stopwatch.StartNew();
        var device = Runtime.Devices.Parse(o.Device);
        var compute = Training.Precision.Resolve(o.Precision, device);
        var manifest = DataManifest.Read(o.DataDir);
        int seqLen = manifest.SeqLen;
        int steps = (int)Math.Max(1, o.Tokens / ((long)o.Batch * seqLen));
        var schedule = new LearningRateSchedule(o.LearningRate, Math.Max(1, (int)(steps * o.WarmupFraction)), steps);
        string fingerprint = IO.Fingerprint.Hash(
            $"{IO.Fingerprint.OfModel(o.TeacherDir)}|{IO.Fingerprint.OfModel(o.StudentDir)}|{manifest.TokenizerSha256}|" +
            $"{o with { TeacherDir = "", StudentDir = "", DataDir = "", OutDir = "", StopAfterSteps = null, Device = "", RestartOnChangedSettings = false, ChunkTokens = null }}|{compute}");   // contents, not paths: a moved run resumes
        var checkpoint = new TrainingCheckpoint(o.OutDir, fingerprint);
        if (o.RestartOnChangedSettings && !checkpoint.Matches())
        {
            log($"distill: {o.OutDir} was distilled with other settings or another student; starting over");
            Directory.Delete(o.OutDir, recursive: true);
        }
        var state = checkpoint.Read();
        if (TrainingCheckpoint.Finished(state) && File.Exists(Path.Combine(o.OutDir, "config.json")))
        {
            log($"distill: {o.OutDir} is already distilled; reusing it");
            return new DistillResult(state!["step"]!.GetValue<int>(), state["initial_validation_kl"]!.GetValue<double>(),
                state["best_validation_kl"]!.GetValue<double>(), state["best_step"]!.GetValue<int>(), true, true, 0);
        }

        using var teacher = Checkpoint.Load(o.TeacherDir, device, compute);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        using var master = Checkpoint.Load(o.StudentDir, device);
        if (master.Config.NumLayers != teacher.Config.NumLayers || master.Config.HiddenSize != teacher.Config.HiddenSize || master.Config.VocabSize != teacher.Config.VocabSize)
            throw new PuzzleException($"distill: student {o.StudentDir} ({master.Config.NumLayers} layers, hidden {master.Config.HiddenSize}, vocab {master.Config.VocabSize}) " +
                                      $"does not match teacher {o.TeacherDir} ({teacher.Config.NumLayers}, {teacher.Config.HiddenSize}, {teacher.Config.VocabSize})");
        using var work = compute == ScalarType.Float32 ? null : new CausalLm(master.Config, device, compute);
        var student = work ?? master;
        if (!o.TrainEmbeddings) FreezeEmbeddings(master, work);
        using var optimizer = new MixedPrecisionOptimizer(master, work, o.AdamW);
        using var train = new TokenDataset(o.DataDir, "train");
        var loader = new TokenBatchLoader(train, seqLen, o.Seed);
        // The best checkpoint is chosen on validation windows only; never on train or test text.
        manifest.RequireWindows("validation", o.ValidationTokens, "gkd validation (gkd.validation_tokens)");
        using var validation = new TokenDataset(o.DataDir, "validation");
        // The teacher is fixed: its final hidden states on the validation windows are computed once, then read back.
        long statesBytes = o.ValidationTokens * teacher.Config.HiddenSize * (compute == ScalarType.Float32 ? 4L : 2L);
        using var teacherValidation = statesBytes <= MaxTeacherStatesBytes ? ReferenceStates.InMemory() : null;

        int step = 0, bestStep = 0;
        double initialKl, bestKl;
        if (state is not null)
        {
            step = checkpoint.Restore(state, optimizer, loader);
            initialKl = state["initial_validation_kl"]!.GetValue<double>();
            bestKl = state["best_validation_kl"]!.GetValue<double>();
            bestStep = state["best_step"]!.GetValue<int>();
            log($"distill: resuming {o.OutDir} at step {step}/{steps} (best validation KL {bestKl:F4} at step {bestStep})");
        }
        else
        {
            initialKl = bestKl = ValidationKl(student, teacher, validation, seqLen, o.ValidationTokens, o.Batch, teacherValidation);
            if (!double.IsFinite(initialKl))
                throw new PuzzleException($"distill: the validation KL of {o.StudentDir} to {o.TeacherDir} is {initialKl} before training; a model produces non-finite logits");
            optimizer.CopyMastersTo(master);
            Checkpoint.SaveDeciLm(master, o.OutDir, ScalarType.Float32, o.StudentDir);           // step 0 is the best so far
            log($"distill: {steps} steps of {o.Batch}×{seqLen} tokens, {compute} compute; validation KL before GKD {initialKl:F4}");
        }

        student.train();
        int startStep = step;
        double lossSum = 0;
        int lossCount = 0;
        using var threads = Runtime.WorkThreads.Enter("distill", log);
        while (step < steps)
        {
            threads.Step();
            using (var scope = NewDisposeScope())
            {
                var batch = tensor(loader.Next(o.Batch), [o.Batch, seqLen + 1], device: device);
                var ids = batch.narrow(1, 0, seqLen);
                double value = StepLoss(o, student, teacher, ids, batch.narrow(1, 1, seqLen));     // forward + backward
                if (!double.IsFinite(value))
                    throw new PuzzleException($"distill: the loss is {value} at step {step + 1} (temperature {o.Temperature}, lr {o.LearningRate}); lower the learning rate or check the student");
                lossSum += value;
                lossCount++;
            }
            optimizer.Step(schedule.At(step));
            step++;
            if (step % o.LogEvery == 0 || step == steps)
            {
                double rate = (step - startStep) * (double)o.Batch * seqLen / clock.Elapsed.TotalSeconds;
                log($"distill: step {step}/{steps} | loss {lossSum / lossCount:F4} | {rate:N0} tokens/s | ETA {TimeSpan.FromSeconds((steps - step) * (double)o.Batch * seqLen / rate):hh\\:mm\\:ss}");
                lossSum = 0;
                lossCount = 0;
            }
            if (step % o.EvalEvery == 0 || step == steps)
            {
                double kl = ValidationKl(student, teacher, validation, seqLen, o.ValidationTokens, o.Batch, teacherValidation);
                if (!double.IsFinite(kl)) throw new PuzzleException($"distill: the validation KL is {kl} at step {step}; lower the learning rate");
                string mark = "";
                if (kl < bestKl)
                {
                    (bestKl, bestStep) = (kl, step);
                    optimizer.CopyMastersTo(master);
                    Checkpoint.SaveDeciLm(master, o.OutDir, ScalarType.Float32, o.StudentDir);
                    mark = " (best; saved)";
                }
                log($"distill: step {step} | validation KL {kl:F4}{mark}");
            }
            if (step % o.CheckpointEvery == 0 || step == steps)
                checkpoint.Save(optimizer, loader, step, steps, (long)step * o.Batch * seqLen, new JsonObject
                {
                    ["initial_validation_kl"] = initialKl, ["best_validation_kl"] = bestKl, ["best_step"] = bestStep,
                });
            if (o.StopAfterSteps is { } stop && step - startStep >= stop && step < steps)
                return new DistillResult(step, initialKl, bestKl, bestStep, false, false, clock.Elapsed.TotalSeconds);
        }
        AtomicFile.WriteJson(Path.Combine(o.OutDir, "distillation.json"), new JsonObject
        {
            ["format_version"] = 1, ["teacher"] = Path.GetFullPath(o.TeacherDir), ["student"] = Path.GetFullPath(o.StudentDir),
            ["steps"] = steps, ["tokens"] = (long)steps * o.Batch * seqLen, ["initial_validation_kl"] = initialKl,
            ["best_validation_kl"] = bestKl, ["best_step"] = bestStep, ["cosine_weight"] = o.CosineWeight, ["kl_weight"] = o.KlWeight,
            ["lm_weight"] = o.LmWeight, ["temperature"] = o.Temperature, ["compute_dtype"] = compute.ToString(),
        });
        checkpoint.MarkFinished(new JsonObject());
        log($"distill: done: validation KL {initialKl:F4} -> {bestKl:F4} (best at step {bestStep}) in {clock.Elapsed.TotalSeconds:F0} s -> {o.OutDir}");
        return new DistillResult(steps, initialKl, bestKl, bestStep, true, false, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// The embeddings (and an untied LM head) keep the student's values and get no gradient; the working copy, which the
    /// optimizer fills only for trained parameters, gets them here.
    /// </summary>
    static void FreezeEmbeddings(CausalLm master, CausalLm? work)
    {
        using var noGrad = no_grad();
        foreach (var model in new[] { master, work })
        {
            if (model is null) continue;
            model.Model.EmbedTokens.Weight!.requires_grad = false;
            model.LmHeadWeight.requires_grad = false;
        }
        if (work is null) return;
        work.Model.EmbedTokens.Weight!.copy_(master.Model.EmbedTokens.Weight!);
        if (!master.Config.TieWordEmbeddings) work.LmHeadWeight.copy_(master.LmHeadWeight);
    }

    /// <summary>
    /// One training step's forward and backward; returns the loss. The same loss as <see cref="Loss"/>, but the KL and
    /// LM terms never hold [B, T, V] tensors: the student's final hidden states are cut loose from the graph, each chunk
    /// of tokens takes its logits, log-softmax and loss and is backpropagated to the LM head and to that chunk's hidden
    /// states, and the collected hidden-state gradient is then backpropagated through the trunk once (with the
    /// cosine term). The cosine term is handled the same way, a layer at a time: its gradient with respect to the
    /// layer's output is taken on a detached fp32 copy and only that gradient (in the compute dtype) stays for the
    /// trunk's backward, not the fp32 copies of both models' states and cosine_similarity's normalised intermediates
    /// (≈ 16 bytes per hidden value and layer: ≈ 0.9 GiB of the SmolLM2-135M GKD step at batch 16 × 256 before).
    /// Peak memory: activations ([B, T, H] per layer) plus one chunk's [chunk, V].
    /// </summary>
    public static double StepLoss(DistillOptions o, CausalLm student, CausalLm teacher, Tensor ids, Tensor targets)
    {
        using var scope = NewDisposeScope();
        var teacherStates = new List<Tensor>();
        Tensor teacherHidden;
        using (no_grad()) teacherHidden = Runtime.TokenChunks.FinalHidden(teacher, ids, teacherStates);
        var studentStates = new List<Tensor>();
        var studentHidden = Runtime.TokenChunks.FinalHidden(student, ids, studentStates);
        var loss = zeros(1, dtype: ScalarType.Float32, device: studentHidden.device).squeeze();
        double value = 0;
        if (o.CosineWeight != 0)
            for (int i = 0; i < studentStates.Count; i++)
            {
                var (layerValue, gradient) = CosineGradient(o.CosineWeight, studentStates[i], teacherStates[i]);
                value += layerValue;
                teacherStates[i].Dispose();                                                          // not needed again
                loss = loss + (studentStates[i] * gradient).sum().to(ScalarType.Float32);            // d/d state = the gradient
            }
        if (o.KlWeight != 0 || o.LmWeight != 0)
        {
            long n = studentHidden.shape[0] * studentHidden.shape[1];
            var hidden = studentHidden.reshape(n, -1);
            var detached = hidden.detach();
            var teacherRows = teacherHidden.reshape(n, -1);
            var targetRows = targets.reshape(n);
            var gradient = zeros_like(detached);
            long chunk = Math.Max(1, o.ChunkTokens ?? Runtime.TokenChunks.DefaultTokens(student.Config.VocabSize));
            for (long start = 0; start < n; start += chunk)
            {
                using var chunkScope = NewDisposeScope();
                long c = Math.Min(chunk, n - start);
                var rows = detached.narrow(0, start, c).detach().requires_grad_(true);
                var part = HeadLoss(o, rows, student.LmHeadWeight, teacherRows.narrow(0, start, c), teacher.LmHeadWeight, targetRows.narrow(0, start, c)) / n;
                part.backward();                                                                     // into the LM head and these rows
                value += part.item<float>();
                gradient.narrow(0, start, c).copy_(rows.grad!);
            }
            loss = loss + (hidden * gradient).sum();                                                 // d/d hidden = the collected gradient
        }
        if (loss.requires_grad) loss.backward();
        return value;
    }

    /// <summary>
    /// One layer's cosine term w · mean(1 − cos(student, teacher)) over its tokens, and its gradient with respect to the
    /// student's state [B, T, H] in the state's dtype, taken on a detached fp32 copy: nothing of it stays in the graph.
    /// </summary>
    static (double Value, Tensor Gradient) CosineGradient(double weight, Tensor studentState, Tensor teacherState)
    {
        using var scope = NewDisposeScope();
        var rows = studentState.detach().to(ScalarType.Float32).requires_grad_(true);
        Tensor term;
        using (enable_grad())
        {
            var cos = nn.functional.cosine_similarity(rows, teacherState.detach().to(ScalarType.Float32), 2);
            term = weight * (1 - cos).mean();
            term.backward();
        }
        return (term.item<float>(), rows.grad!.to(studentState.dtype).MoveToOuterDisposeScope());
    }

    /// <summary>Summed (not averaged) KL and LM terms of some tokens' normed hidden rows [c, H].</summary>
    static Tensor HeadLoss(DistillOptions o, Tensor rows, Tensor head, Tensor teacherRows, Tensor teacherHead, Tensor targets)
    {
        var logits = nn.functional.linear(rows, head).to(ScalarType.Float32);
        var loss = zeros(1, dtype: ScalarType.Float32, device: rows.device).squeeze();
        Tensor? logq = null;
        if (o.KlWeight != 0)
        {
            logq = (o.Temperature == 1.0 ? logits : logits / o.Temperature).log_softmax(-1);
            Tensor logp;
            using (no_grad()) logp = Runtime.TokenChunks.LogProbs(teacherRows, teacherHead, o.Temperature);
            loss = loss + o.KlWeight * o.Temperature * o.Temperature * (logp.exp() * (logp - logq)).sum();
        }
        // At temperature 1 the KL term's log-softmax is the LM term's too: cross_entropy would compute (and
        // differentiate) another one over the [chunk, V] logits.
        if (o.LmWeight != 0)
            loss = loss + o.LmWeight * (logq is not null && o.Temperature == 1.0
                ? nn.functional.nll_loss(logq, targets, reduction: nn.Reduction.Sum)
                : nn.functional.cross_entropy(logits, targets, reduction: nn.Reduction.Sum));
        return loss;
    }

    /// <summary>The loss on whole [B, T, V] logits (the unchunked form of <see cref="StepLoss"/>; its reference in tests).</summary>
    public static Tensor Loss(DistillOptions o, Tensor studentLogits, Tensor teacherLogits, List<Tensor> studentStates, List<Tensor> teacherStates, Tensor targets)
    {
        var loss = zeros(1, dtype: ScalarType.Float32, device: studentLogits.device).squeeze();
        if (o.CosineWeight != 0)
            for (int i = 0; i < studentStates.Count; i++)
            {
                var cos = nn.functional.cosine_similarity(studentStates[i].to(ScalarType.Float32), teacherStates[i].to(ScalarType.Float32), 2);
                loss = loss + o.CosineWeight * (1 - cos).mean();
            }
        var logq = (studentLogits.to(ScalarType.Float32) / o.Temperature).log_softmax(-1);
        if (o.KlWeight != 0)
        {
            var logp = (teacherLogits.to(ScalarType.Float32) / o.Temperature).log_softmax(-1);
            var kl = (logp.exp() * (logp - logq)).sum(-1).mean();
            loss = loss + o.KlWeight * o.Temperature * o.Temperature * kl;
        }
        if (o.LmWeight != 0)
            loss = loss + o.LmWeight * nn.functional.cross_entropy(studentLogits.to(ScalarType.Float32).view(-1, studentLogits.shape[^1]), targets.reshape(-1));
        return loss;
    }

    /// <summary>Mean per-token KL(teacher || student) on the first validation windows.</summary>
    public static double ValidationKl(CausalLm student, CausalLm teacher, TokenDataset data, int seqLen, long tokens, int batch, ReferenceStates? teacherStates = null) =>
        Runtime.Evaluator.Tokens(student, teacher, data, seqLen, tokens, batch, "gkd validation (gkd.validation_tokens)", referenceStates: teacherStates).KlToReference!.Value;

    /// <summary>The teacher's validation states are kept in memory up to this size (tokens × hidden × element size), else recomputed.</summary>
    public const long MaxTeacherStatesBytes = 512L << 20;
}
