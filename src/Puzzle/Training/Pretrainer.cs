using System.Diagnostics;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.IO;
using Puzzle.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Puzzle.Training;

/// <summary>The shape of a Llama trained from scratch.</summary>
public sealed record ModelShape(int Layers, int Hidden, int Heads, int KvHeads, int Intermediate, bool TiedEmbeddings = true)
{
    public static readonly IReadOnlyDictionary<string, ModelShape> Presets = new Dictionary<string, ModelShape>
    {
        // ~7M parameters: trains to a useful SOTU model in about 10 minutes on 2 CPU cores (bf16), and is big
        // enough that GQA width and FFN width dominate its serving cost at batch >= 16.
        ["demo"] = new(6, 256, 4, 2, 768),
        ["tiny"] = new(2, 64, 4, 2, 128),
    };

    public ModelConfig ToConfig(DataManifest data, int maxPositions) => new()
    {
        VocabSize = data.VocabSize,
        HiddenSize = Hidden,
        NumAttentionHeads = Heads,
        HeadDim = Hidden / Heads,
        Blocks = Enumerable.Repeat(BlockConfig.Llama(KvHeads, Intermediate), Layers).ToArray(),
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        MaxPositionEmbeddings = maxPositions,
        TieWordEmbeddings = TiedEmbeddings,
        BosTokenId = data.BosId,
        EosTokenIds = data.EosIds,
    };
}

public sealed record PretrainOptions
{
    public required string DataDir { get; init; }
    public required string OutDir { get; init; }
    public required ModelShape Shape { get; init; }
    public long Tokens { get; init; } = 2_000_000;
    public int Batch { get; init; } = 16;
    public double LearningRate { get; init; } = 3e-3;
    public double WarmupFraction { get; init; } = 0.05;
    public double MinLrRatio { get; init; } = 0.1;
    public AdamWSettings AdamW { get; init; } = new();
    public long Seed { get; init; }
    public int CheckpointEvery { get; init; } = 100;
    public int EvalEvery { get; init; } = 100;
    public int EvalBatches { get; init; } = 8;
    public int LogEvery { get; init; } = 10;
    public string Precision { get; init; } = "auto";
    public string Device { get; init; } = "cpu";
    /// <summary>Stop (as if killed) after this many steps of this process; for tests of resumption.</summary>
    public int? StopAfterSteps { get; init; }
}

public sealed record PretrainResult(int Steps, long TokensSeen, double TrainLoss, double ValidationLoss, double TokensPerSecond,
    double Seconds, bool Finished, bool Reused, long? LiveTensorsFirst = null, long? LiveTensorsLast = null);

/// <summary>
/// Trains a Llama from scratch on prepared data: AdamW, warm-up + cosine, clipping, bf16 compute with fp32 masters,
/// checkpoints every N steps and exact resumption (weights, optimizer, data position), HF Llama output.
/// </summary>
public static class Pretrainer
{
    /// <summary>Every option checked before anything is read or allocated; errors name the option and the value.</summary>
    public static void Validate(PretrainOptions o)
    {
        void Positive(string option, double value)
        {
            if (!double.IsFinite(value) || value <= 0) throw new PuzzleException($"{option} must be positive, got {value}");
        }
        Positive("--tokens", o.Tokens);
        Positive("--batch", o.Batch);
        Positive("--lr", o.LearningRate);
        Positive("--checkpoint-every", o.CheckpointEvery);
        Positive("--eval-every", o.EvalEvery);
        Positive("--eval-batches", o.EvalBatches);
        Positive("--log-every", o.LogEvery);
        Positive("--layers", o.Shape.Layers);
        Positive("--hidden", o.Shape.Hidden);
        Positive("--heads", o.Shape.Heads);
        Positive("--kv-heads", o.Shape.KvHeads);
        Positive("--intermediate", o.Shape.Intermediate);
        if (o.Shape.Heads % o.Shape.KvHeads != 0)
            throw new PuzzleException($"--kv-heads ({o.Shape.KvHeads}) must divide --heads ({o.Shape.Heads})");
        if (o.WarmupFraction is < 0 or > 1 || double.IsNaN(o.WarmupFraction)) throw new PuzzleException($"warm-up fraction must be in [0, 1], got {o.WarmupFraction}");
        if (o.MinLrRatio is < 0 or > 1 || double.IsNaN(o.MinLrRatio)) throw new PuzzleException($"minimum learning-rate ratio must be in [0, 1], got {o.MinLrRatio}");
    }

    public static PretrainResult Run(PretrainOptions o, Action<string>? log = null)
    {
        log ??= Log.Info;
        Validate(o);
        var device = Runtime.Devices.Parse(o.Device);
        var manifest = DataManifest.Read(o.DataDir);
        int seqLen = manifest.SeqLen;
        var compute = Training.Precision.Resolve(o.Precision, device);
        var config = o.Shape.ToConfig(manifest, Math.Max(seqLen, 2048));
        if (o.Shape.Hidden % o.Shape.Heads != 0)
            throw new PuzzleException($"--hidden ({o.Shape.Hidden}) is not divisible by --heads ({o.Shape.Heads})");
        config.Validate("pretrain shape");
        int steps = (int)Math.Max(1, o.Tokens / ((long)o.Batch * seqLen));
        var schedule = new LearningRateSchedule(o.LearningRate, Math.Max(1, (int)(steps * o.WarmupFraction)), steps, o.MinLrRatio);
        string fingerprint = $"{o.Shape}|{o.Tokens}|{o.Batch}|{o.LearningRate}|{o.WarmupFraction}|{o.MinLrRatio}|{o.AdamW}|{o.Seed}|{seqLen}|{manifest.TokenizerSha256}|{manifest.Splits["train"].Tokens}|{compute}";

        var checkpoint = new TrainingCheckpoint(o.OutDir, fingerprint);
        JsonObject? state = checkpoint.Read();
        if (TrainingCheckpoint.Finished(state) && File.Exists(Path.Combine(o.OutDir, "config.json")))
        {
            log($"pretrain: {o.OutDir} is already trained ({state!["step"]} steps); reusing it");
            return new PretrainResult(state["step"]!.GetValue<int>(), state["tokens_seen"]!.GetValue<long>(), state["train_loss"]?.GetValue<double>() ?? double.NaN,
                state["validation_loss"]?.GetValue<double>() ?? double.NaN, 0, 0, true, true);
        }

        using var master = new CausalLm(config, device, ScalarType.Float32).InitializeRandom(o.Seed);
        using var work = compute == ScalarType.Float32 ? null : new CausalLm(config, device, compute);
        var model = work ?? master;
        model.train();
        using var optimizer = new MixedPrecisionOptimizer(master, work, o.AdamW);
        using var trainData = new TokenDataset(o.DataDir, "train");
        var loader = new TokenBatchLoader(trainData, seqLen, o.Seed);
        bool hasValidation = manifest.Splits.TryGetValue("validation", out var v) && v.Tokens > seqLen;
        using var validationData = hasValidation ? new TokenDataset(o.DataDir, "validation") : null;

        int step = 0;
        var history = new JsonArray();
        if (state is not null)
        {
            step = checkpoint.Restore(state, optimizer, loader);
            history = state["history"]!.AsArray().DeepClone().AsArray();
            log($"pretrain: resuming {o.OutDir} at step {step}/{steps}");
        }
        else
        {
            log($"pretrain: {config.TotalParameters:N0} parameters ({o.Shape}), {steps} steps of {o.Batch}×{seqLen} tokens, " +
                $"{compute} compute on {Runtime.Devices.Describe(device)}");
        }

        var clock = Stopwatch.StartNew();
        int startStep = step, stepsThisRun = 0;
        double lossSum = 0, lastTrainLoss = double.NaN, lastValidation = double.NaN;
        int lossCount = 0;
        long? liveFirst = null, liveLast = null;
        using var threads = Runtime.WorkThreads.Enter("pretrain", log);
        while (step < steps)
        {
            threads.Step();
            double lr = schedule.At(step);
            double loss;
            using (var scope = NewDisposeScope())
            {
                var batch = tensor(loader.Next(o.Batch), [o.Batch, seqLen + 1], device: device);
                var logits = model.Forward(batch.narrow(1, 0, seqLen));
                var lossTensor = nn.functional.cross_entropy(logits.to(ScalarType.Float32).view(-1, config.VocabSize), batch.narrow(1, 1, seqLen).reshape(-1));
                lossTensor.backward();
                loss = lossTensor.item<float>();
            }
            if (!double.IsFinite(loss))
                throw new PuzzleException($"pretrain: the training loss is {loss} at step {step + 1} (learning rate {lr:E2}); lower --lr or check the data");
            optimizer.Step(lr);
            step++;
            stepsThisRun++;
            lossSum += loss;
            lossCount++;
            long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            if (stepsThisRun == 2) liveFirst = live;
            liveLast = live;

            if (step % o.LogEvery == 0 || step == steps)
            {
                lastTrainLoss = lossSum / lossCount;
                double tokensPerSecond = (step - startStep) * (double)o.Batch * seqLen / clock.Elapsed.TotalSeconds;
                double eta = (steps - step) * (double)o.Batch * seqLen / tokensPerSecond;
                log($"pretrain: step {step}/{steps} | loss {lastTrainLoss:F4} | lr {lr:E2} | {tokensPerSecond:N0} tokens/s | ETA {TimeSpan.FromSeconds(eta):hh\\:mm\\:ss}");
                lossSum = 0;
                lossCount = 0;
            }
            if (validationData is not null && (step % o.EvalEvery == 0 || step == steps))
            {
                optimizer.CopyMastersTo(master);
                lastValidation = Evaluate(model, validationData, seqLen, o.Batch, o.EvalBatches);
                log($"pretrain: step {step} | validation loss {lastValidation:F4} | perplexity {Math.Exp(lastValidation):F2}");
                history.Add(new JsonObject { ["step"] = step, ["train_loss"] = Number(lastTrainLoss), ["validation_loss"] = Number(lastValidation) });
            }
            if (step % o.CheckpointEvery == 0 || step == steps)
                checkpoint.Save(optimizer, loader, step, steps, (long)step * o.Batch * seqLen, new JsonObject
                {
                    ["train_loss"] = Number(lastTrainLoss), ["validation_loss"] = Number(lastValidation), ["history"] = history.DeepClone(),
                });
            if (o.StopAfterSteps is { } stop && stepsThisRun >= stop && step < steps)
                return new PretrainResult(step, (long)step * o.Batch * seqLen, lastTrainLoss, lastValidation, 0, clock.Elapsed.TotalSeconds, false, false, liveFirst, liveLast);
        }

        optimizer.CopyMastersTo(master);
        Checkpoint.SaveLlama(master, o.OutDir, ScalarType.Float32, Path.Combine(o.DataDir, DataManifest.TokenizerFolder));
        double seconds = clock.Elapsed.TotalSeconds;
        double rate = (step - startStep) * (double)o.Batch * seqLen / Math.Max(seconds, 1e-9);
        AtomicFile.WriteJson(Path.Combine(o.OutDir, "training.json"), new JsonObject
        {
            ["format_version"] = 1,
            ["parameters"] = config.TotalParameters,
            ["shape"] = o.Shape.ToString(),
            ["steps"] = step,
            ["tokens"] = (long)step * o.Batch * seqLen,
            ["train_loss"] = Number(lastTrainLoss),
            ["validation_loss"] = Number(lastValidation),
            ["validation_perplexity"] = Number(Math.Exp(lastValidation)),
            ["tokens_per_second"] = rate,
            ["compute_dtype"] = compute.ToString(),
            ["history"] = history.DeepClone(),
        });
        checkpoint.MarkFinished(new JsonObject());
        log($"pretrain: done: {step} steps, train loss {lastTrainLoss:F4}, validation loss {lastValidation:F4} (perplexity {Math.Exp(lastValidation):F2}), {rate:N0} tokens/s -> {o.OutDir}");
        return new PretrainResult(step, (long)step * o.Batch * seqLen, lastTrainLoss, lastValidation, rate, seconds, true, false, liveFirst, liveLast);
    }

    static JsonNode? Number(double value) => TrainingCheckpoint.Number(value);

    /// <summary>Mean next-token loss over the first <paramref name="batches"/> windows of a split, in order.</summary>
    public static double Evaluate(CausalLm model, TokenDataset data, int seqLen, int batch, int batches)
    {
        using var noGrad = no_grad();
        bool training = model.training;
        model.eval();
        var loader = new TokenBatchLoader(data, seqLen, 0, shuffle: false);
        int count = (int)Math.Min(batches, Math.Max(1, loader.Windows / batch));
        int rows = (int)Math.Min(batch, loader.Windows);
        double total = 0;
        for (int i = 0; i < count; i++)
        {
            using var scope = NewDisposeScope();
            var tokens = tensor(loader.Next(rows), [rows, seqLen + 1], device: model.Device);
            var logits = model.Forward(tokens.narrow(1, 0, seqLen)).to(ScalarType.Float32);
            total += nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), tokens.narrow(1, 1, seqLen).reshape(-1)).item<float>();
        }
        if (training) model.train();
        return total / count;
    }
}
