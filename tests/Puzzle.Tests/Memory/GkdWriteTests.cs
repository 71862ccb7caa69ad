using Puzzle.Checkpoints;
using Puzzle.Planning;
using Puzzle.Tests.Stages;
using Puzzle.Training;
using Xunit;

namespace Puzzle.Tests.Memory;

/// <summary>
/// The plan's GKD write term (<see cref="Planner.GkdWrittenBytes"/>) is what the distillation writes: on a tiny run
/// whose best student stays at step 0 (the teacher distilled into a copy of itself: its validation KL starts at 0), the
/// bytes in OUT are the fp32 student once and one training checkpoint (masters and AdamW moments of the trained
/// parameters), headers aside.
/// </summary>
public sealed class GkdWriteTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gkd_writes_the_student_once_and_a_checkpoint_per_interval(bool trainEmbeddings)
    {
        string outDir = TestSupport.TempDir();
        var options = new DistillOptions
        {
            TeacherDir = fixture.ParentDir, StudentDir = fixture.ParentDir, DataDir = fixture.DataDir, OutDir = outDir,
            Tokens = 8 * 32 * 3, Batch = 8, LearningRate = 1e-3, ValidationTokens = 32 * 8, Precision = "fp32", TrainEmbeddings = trainEmbeddings,
        };
        var result = Distiller.Run(options, _ => { });
        Assert.Equal(0, result.BestStep);
        var config = HfConfig.Read(fixture.ParentDir);
        long child = config.TotalParameters;
        long embeddings = (long)config.VocabSize * config.HiddenSize * (config.TieWordEmbeddings ? 1 : 2);
        long trainable = trainEmbeddings ? child : child - embeddings;
        long planned = Planner.GkdWrittenBytes(child, trainable, result.Steps);

        long written = new FileInfo(Path.Combine(outDir, Checkpoint.SingleFile)).Length
                       + Directory.GetFiles(Path.Combine(outDir, TrainingCheckpoint.Folder), "*-step*.*").Sum(f => new FileInfo(f).Length);
        Assert.InRange(written - planned, 0, 64 << 10);                                   // safetensors and optimizer headers
        Assert.Equal(child * 4 + trainable * 12, planned);

        // One checkpoint per CheckpointEvery steps and one at the end (TrainingCheckpoint.Save's condition in Distiller).
        int every = options.CheckpointEvery;
        Assert.Equal(child * 4 + 2 * trainable * 12, Planner.GkdWrittenBytes(child, trainable, every + 1));
        Assert.Equal(child * 4 + trainable * 12, Planner.GkdWrittenBytes(child, trainable, every));
        Assert.Equal(child * 4 + 3 * trainable * 12, Planner.GkdWrittenBytes(child, trainable, 2 * every + 1));
    }
}
