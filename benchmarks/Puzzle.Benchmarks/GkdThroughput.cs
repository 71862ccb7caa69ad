using System.Diagnostics;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Model;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// Where a GKD step's time goes (issue 12: the demo distils three children; its GKD ran at ~1/3 of the matmul peak while
/// pretraining ran near it): per step, the teacher's forward, the whole <see cref="Distiller.StepLoss"/> (teacher and
/// student forward, cosine, KL and LM terms, backward), the optimizer step, and for comparison a plain LM step of the
/// student (forward + cross-entropy backward) and one validation pass; tokens/s and FLOP/s of each.
/// Run: dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- gkd-step TEACHER STUDENT DATA [batch] [steps]
/// </summary>
public static class GkdThroughput
{
    public static void Run(string teacherDir, string studentDir, string dataDir, int batch, int steps)
    {
        var compute = Precision.Resolve("auto", CPU);
        var manifest = DataManifest.Read(dataDir);
        int seqLen = manifest.SeqLen;
        using var teacher = Checkpoint.Load(teacherDir, CPU, compute);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        using var master = Checkpoint.Load(studentDir, CPU);
        using var work = compute == ScalarType.Float32 ? null : new CausalLm(master.Config, CPU, compute);
        var student = work ?? master;
        using var optimizer = new MixedPrecisionOptimizer(master, work, new AdamWSettings());
        optimizer.CopyMastersTo(master);
        using var train = new TokenDataset(dataDir, "train");
        var loader = new TokenBatchLoader(train, seqLen, 0);
        var o = new DistillOptions { TeacherDir = teacherDir, StudentDir = studentDir, DataDir = dataDir, OutDir = "", Batch = batch, LmWeight = 1 };
        long pt = teacher.Config.TotalParameters, ps = master.Config.TotalParameters;
        long tokensPerStep = (long)batch * seqLen;
        Console.WriteLine($"teacher {pt:N0} parameters, student {ps:N0}, {compute} compute, batch {batch}×{seqLen}, {get_num_threads()} torch threads");

        var phases = new Dictionary<string, double> { ["teacher forward"] = 0, ["step loss (all)"] = 0, ["optimizer"] = 0, ["student LM step"] = 0 };
        student.train();
        for (int step = 0; step < steps + 2; step++)
        {
            bool timed = step >= 2;                                                             // two warm-up steps
            var clock = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                var data = tensor(loader.Next(batch), [batch, seqLen + 1], device: CPU);
                var ids = data.narrow(1, 0, seqLen);
                using (no_grad()) Runtime.TokenChunks.FinalHidden(teacher, ids);
                if (timed) phases["teacher forward"] += clock.Elapsed.TotalSeconds;
                clock.Restart();
                Distiller.StepLoss(o, student, teacher, ids, data.narrow(1, 1, seqLen));
                if (timed) phases["step loss (all)"] += clock.Elapsed.TotalSeconds;
            }
            clock.Restart();
            optimizer.Step(1e-5);
            if (timed) phases["optimizer"] += clock.Elapsed.TotalSeconds;
            clock.Restart();
            using (var scope = NewDisposeScope())
            {
                var data = tensor(loader.Next(batch), [batch, seqLen + 1], device: CPU);
                var logits = student.Forward(data.narrow(1, 0, seqLen));
                nn.functional.cross_entropy(logits.to(ScalarType.Float32).view(-1, logits.shape[^1]), data.narrow(1, 1, seqLen).reshape(-1)).backward();
            }
            foreach (var p in student.parameters()) p.grad?.zero_();
            if (timed) phases["student LM step"] += clock.Elapsed.TotalSeconds;
        }
        double Rate(string phase) => steps * (double)tokensPerStep / phases[phase];
        Console.WriteLine($"{"phase",-22} {"s/step",8} {"tokens/s",10} {"GFLOP/s",8}");
        foreach (var (phase, flopsPerToken) in new[] { ("teacher forward", 2.0 * pt), ("step loss (all)", 2.0 * pt + 6.0 * ps), ("optimizer", 0), ("student LM step", 6.0 * ps) })
            Console.WriteLine($"{phase,-22} {phases[phase] / steps,8:F3} {Rate(phase),10:N0} {(flopsPerToken > 0 ? flopsPerToken * Rate(phase) / 1e9 : 0),8:F1}");
        double stepSeconds = (phases["step loss (all)"] + phases["optimizer"]) / steps;
        Console.WriteLine($"GKD step (loss + optimizer): {stepSeconds:F3} s = {tokensPerStep / stepSeconds:N0} tokens/s");

        using var validation = new TokenDataset(dataDir, "validation");
        var vclock = Stopwatch.StartNew();
        Distiller.ValidationKl(student, teacher, validation, seqLen, 16_384, batch);
        Console.WriteLine($"validation KL pass, 16,384 tokens: {vclock.Elapsed.TotalSeconds:F2} s (the demo's GKD runs it 5 times)");
    }
}
