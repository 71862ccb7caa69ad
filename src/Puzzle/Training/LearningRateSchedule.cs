namespace Puzzle.Training;

/// <summary>Linear warm-up to the peak, then cosine decay to <c>peak × minRatio</c> at the last step.</summary>
public sealed record LearningRateSchedule(double Peak, int WarmupSteps, int TotalSteps, double MinRatio = 0.1)
{
    public double At(int step)                                                          // step is 0-based
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        if (TotalSteps <= WarmupSteps) return Peak;
        double progress = Math.Min(1.0, (step - WarmupSteps) / (double)Math.Max(1, TotalSteps - WarmupSteps - 1));
        double min = Peak * MinRatio;
        return min + 0.5 * (Peak - min) * (1 + Math.Cos(Math.PI * progress));
    }
}
