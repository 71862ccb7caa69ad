using System.CommandLine;
using Puzzle.Runtime;

namespace Puzzle.Cli.Commands;

/// <summary>Shared options and the error convention: one clear line on stderr, non-zero exit.</summary>
internal static class CliSupport
{
    public static Option<string> DeviceOption() => new("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };

    public static Option<string> DtypeOption() => new("--dtype") { Description = "compute dtype: float32 or bfloat16", DefaultValueFactory = _ => "float32" };

    public static Option<string> RunOption() => new("--run") { Description = "run directory (holds config.json and the stages' artifacts)", Required = true };

    public static Option<string?> ShardOption() => new("--shard") { Description = "i/n: do only this process's share of the work units (e.g. 0/2)" };

    public static Argument<string> ModelArgument() => new("MODEL_DIR") { Description = "Hugging Face model directory (Llama or DeciLM)" };

    public static int Run(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (PuzzleException e)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {OneLine(e.Message)}");
            return 1;
        }
        catch (OutOfMemoryException e)
        {
            Console.Error.WriteLine($"error: out of memory ({OneLine(e.Message)}); use smaller sizes");
            return 1;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("PUZZLE_DEBUG") is null)
        {
            // A defect, not bad input: still one line (set PUZZLE_DEBUG=1 for the stack trace).
            var inner = e is AggregateException { InnerExceptions.Count: 1 } a ? a.InnerExceptions[0] : e;
            if (inner is PuzzleException p)
            {
                Console.Error.WriteLine($"error: {OneLine(p.Message)}");
                return 1;
            }
            Console.Error.WriteLine($"error: internal error {inner.GetType().Name}: {OneLine(inner.Message)} (PUZZLE_DEBUG=1 shows where)");
            return 70;
        }
    }

    static string OneLine(string message) => string.Join(" ", message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>A positive option value, or an error naming the option and the value.</summary>
    public static T Positive<T>(string option, T value) where T : System.Numerics.INumber<T> =>
        T.IsNaN(value) || value <= T.Zero ? throw new PuzzleException($"{option} must be positive, got {value}") : value;

    public static TorchSharp.torch.Device Device(string name) => Devices.Parse(name);
}
