using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Xunit;

namespace Puzzle.Tests.Memory;

/// <summary>`puzzle plan --config`: relative paths are the config folder's, as `puzzle run` reads them.</summary>
public class PlanCommandTests
{
    [Fact]
    public void A_run_config_with_a_relative_data_path_plans_its_prepared_test_split_from_any_working_directory()
    {
        string root = TestSupport.TempDir();
        string parent = Path.Combine(root, "parent");
        Directory.CreateDirectory(parent);
        HfConfig.WriteAtomically(Path.Combine(parent, "config.json"), HfConfig.ToLlama(TestSupport.TinyParentConfig(), "float32"));
        string corpus = Puzzle.Tests.Data.CorpusFixtures.TextFolder(60);
        Puzzle.Data.DataPreparer.Prepare(new Puzzle.Data.DataPrepareOptions
        {
            TokenizerDir = Puzzle.Tests.Data.CorpusFixtures.Tokenizer(corpus, 320), Inputs = [corpus], OutDir = Path.Combine(root, "data"), SeqLen = 32,
            ValidationFraction = 0.15, TestFraction = 0.1,
        }, log: _ => { });
        long windows = (Puzzle.Data.DataManifest.Read(Path.Combine(root, "data")).Split("test").Tokens - 1) / 32;
        Assert.True(windows > 0);
        File.WriteAllText(Path.Combine(root, "config.json"),
            """{ "parent": { "path": "parent" }, "data": { "path": "data", "seq_len": 32 }, "evaluation": { "bench_engine": "puzzle" } }""");

        // The test process's working directory is not root: "data" there does not exist.
        Assert.False(File.Exists(Path.Combine(Directory.GetCurrentDirectory(), "data", Puzzle.Data.DataManifest.FileName)));
        var (code, stdout, stderr) = TestSupport.RunCli("plan", parent, "--config", Path.Combine(root, "config.json"), "--gpu", "h100", "--json");
        Assert.True(code == 0, stderr);
        var eval = JsonNode.Parse(stdout)!["stages"]!.AsArray().Single(s => s!["stage"]!.GetValue<string>() == "9 evaluate + bench")!;
        Assert.Contains($"{windows * 32:N0} tokens of KL/perplexity (whole test split)", eval["note"]!.GetValue<string>());
    }
}
