using System.Text.Json.Nodes;
using Puzzle.Checkpoints;

namespace Puzzle.Tests.Cli;

/// <summary>The real `puzzle` program, run as a process, as a user runs it.</summary>
public sealed class CliTests
{
    static (int Code, string Stdout, string Stderr) Puzzle(params string[] args) => TestSupport.RunCli(args);

    [Fact]
    public void Info_Json_DescribesHeterogeneousChild()
    {
        string dir = TestSupport.TempDir();
        var config = TestSupport.TinyChildConfig();
        using (var child = TestSupport.Build(config)) Checkpoint.SaveDeciLm(child, dir);
        var (code, stdout, stderr) = Puzzle("info", dir, "--json");
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("nemotron-nas", json["model_type"]!.GetValue<string>());
        Assert.Equal(config.TotalParameters, json["parameters"]!.GetValue<long>());
        Assert.Equal(config.TotalParameters, json["checkpoint_parameters"]!.GetValue<long>());
        Assert.Equal(config.KvBytesPerToken(4), json["kv_bytes_per_token"]!.GetValue<long>());
        var layers = json["layers"]!.AsArray();
        Assert.Equal("linear", layers[2]!["attention"]!.GetValue<string>());
        Assert.Equal("no_op", layers[5]!["ffn"]!.GetValue<string>());
        Assert.Equal(1, layers[1]!["kv_heads"]!.GetValue<int>());
        Assert.Equal(48, layers[1]!["intermediate_size"]!.GetValue<int>());
    }

    [SkippableFact]
    public void Generate_And_Perplexity_RunOnARealModel()
    {
        string stories = TestSupport.Stories260K();
        var (code, stdout, stderr) = Puzzle("generate", stories, "--prompt", "Once upon a time", "--max-new-tokens", "20");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("Once upon a time", stdout);
        Assert.Contains("tokens/s", stderr);
        string text = Path.Combine(TestSupport.TempDir(), "t.txt");
        File.WriteAllText(text, "Once upon a time, there was a little girl named Lily. She loved to play outside.");
        (code, stdout, stderr) = Puzzle("perplexity", stories, "--text", text, "--json");
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.InRange(json["mean_nll"]!.GetValue<double>(), 0.1, 3.0);
        Assert.Equal(Math.Exp(json["mean_nll"]!.GetValue<double>()), json["perplexity"]!.GetValue<double>(), 6);
    }

    [Fact]
    public void Errors_ExitNonZero_WithOneClearLine()
    {
        var (code, stdout, stderr) = Puzzle("info", "/nonexistent/model");
        Assert.NotEqual(0, code);
        Assert.Equal("error: /nonexistent/model/config.json: not found (is /nonexistent/model a Hugging Face model directory?)", stderr.Trim());
        Assert.Equal("", stdout);
    }

    [Fact]
    public void Demo_RejectsAParentBudgetBelowOneBatch_BeforeTouchingTheRun()
    {
        string run = Path.Combine(Path.GetTempPath(), $"puzzle-demo-{Guid.NewGuid():N}");
        var (code, stdout, stderr) = Puzzle("demo", "--run", run, "--parent-tokens", "1000", "--parent-seed", "0");
        Assert.NotEqual(0, code);
        Assert.Equal("error: demo: --parent-tokens 1,000 is less than one pretraining batch (16 × 256 = 4,096 tokens)", stderr.Trim());
        Assert.False(Directory.Exists(run));
        (code, stdout, _) = Puzzle("demo", "--help");
        Assert.Equal(0, code);
        foreach (var option in new[] { "--seed", "--parent-tokens", "--parent-seed", "--gkd-tokens" }) Assert.Contains(option, stdout);
        (code, _, stderr) = Puzzle("demo", "--run", run, "--gkd-tokens", "1000");
        Assert.NotEqual(0, code);
        Assert.Equal("error: demo: --gkd-tokens 1,000 is less than one distillation batch (8 × 256 = 2,048 tokens)", stderr.Trim());
        Assert.False(Directory.Exists(run));
        // The budget reaches the run's config; the rest of the demo's config is unchanged.
        var config = global::Puzzle.Demo.ConfigFor(3, 1_200_000);
        Assert.Equal((1_200_000L, 8, 3L), (config.Gkd.Tokens, config.Gkd.Batch, config.Gkd.Seed));
        Assert.Equal(global::Puzzle.Demo.ConfigFor(3).ToJson().ToJsonString(), (config with { Gkd = config.Gkd with { Tokens = global::Puzzle.Demo.GkdTokens } }).ToJson().ToJsonString());
    }

    [Fact]
    public void Help_ListsTheStableCommands()
    {
        var (code, stdout, _) = Puzzle("--help");
        Assert.Equal(0, code);
        foreach (var command in new[] { "info", "generate", "perplexity" }) Assert.Contains(command, stdout);
        (code, stdout, _) = Puzzle("generate", "--help");
        Assert.Equal(0, code);
        foreach (var option in new[] { "--prompt", "--max-new-tokens", "--temperature", "--top-p", "--seed" }) Assert.Contains(option, stdout);
    }
}
