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
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    public static TorchSharp.torch.Device Device(string name) => Devices.Parse(name);
}
