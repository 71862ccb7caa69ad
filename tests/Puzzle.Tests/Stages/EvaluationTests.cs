using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.Runtime;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Costs;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Library;
using Puzzle.Stages.Scoring;
using Puzzle.Stages.Search;
using Puzzle.Tokenization;
using Puzzle.Training;
using static TorchSharp.torch;

namespace Puzzle.Tests.Stages;

/// <summary>The evaluation protocol (issue 11): test split isolation, accuracy retention, paired intervals, tasks.</summary>
public sealed class EvaluationTests(RunFixture fixture) : IClassFixture<RunFixture>
{
    /// <summary>A copy of the parent with one FFN weight perturbed: a different model of the same shape.</summary>
    string PerturbedChild(double factor = 0.3)
    {
        string dir = TestSupport.TempDir();
        using var model = Checkpoint.Load(fixture.ParentDir);
        using (no_grad())
        {
            var weight = model.named_parameters().First(p => p.name.Contains("mlp.down_proj")).parameter;
            weight.mul_(factor);
        }
        Checkpoint.SaveDeciLm(model, dir, ScalarType.Float32, fixture.ParentDir);
        return dir;
    }

    static string TaskFile(IEnumerable<ChoiceItem> items)
    {
        string path = Path.Combine(TestSupport.TempDir(), "task.jsonl");
        ContinuationTask.Write(path, items);
        return path;
    }

    [Fact]
    public void Retention_IsTheMeanOfChildOverParentAccuracies_OnTheTestSplit_WithIntervalsAroundEachFigure()
    {
        // A task the parent cannot beat chance on (identical choices: the first always wins, the label is the second).
        string atChance = TaskFile(Enumerable.Range(0, 6).Select(i => new ChoiceItem($"Story number {i}.", [" the cat.", " the cat."], 1)));
        string child = PerturbedChild();
        var eval = EvalStage.Run(new EvalOptions
        {
            ModelDir = child, ReferenceDir = fixture.ParentDir, DataDir = fixture.DataDir, Tasks = [atChance], ContinuationItems = 12, BootstrapResamples = 200,
        }, _ => { });
        // Next-token accuracy: a second computation over every whole window of the test split.
        var manifest = DataManifest.Read(fixture.DataDir);
        int T = manifest.SeqLen;
        using var data = new TokenDataset(fixture.DataDir, "test");
        long windows = (data.Tokens - 1) / T;
        Assert.Equal(windows * T, eval["protocol"]!["tokens"]!.GetValue<long>());
        double Accuracy(string modelDir)
        {
            using var m = Checkpoint.Load(modelDir);
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var all = new long[windows * T + 1];
            data.Read(0, all);
            var inputs = Enumerable.Range(0, (int)windows).SelectMany(w => all[(w * T)..(w * T + T)]).ToArray();
            var targets = Enumerable.Range(0, (int)windows).SelectMany(w => all[(w * T + 1)..(w * T + T + 1)]).ToArray();
            var logits = m.Forward(tensor(inputs, [windows, T]));
            return logits.argmax(-1).eq(tensor(targets, [windows, T])).sum().item<long>() / (double)(windows * T);
        }
        double childAccuracy = Accuracy(child), parentAccuracy = Accuracy(fixture.ParentDir);
        Assert.Equal(childAccuracy, eval["metrics"]!["next_token_accuracy"]!.GetValue<double>(), tolerance: 1e-9);
        Assert.Equal(parentAccuracy, eval["reference_metrics"]!["next_token_accuracy"]!.GetValue<double>(), tolerance: 1e-9);
        var retention = eval["retention"]!;
        Assert.Equal("accuracy_retention", retention["metric"]!.GetValue<string>());
        var components = retention["components"]!.AsObject();
        Assert.Equal(childAccuracy / parentAccuracy, components["next_token_accuracy"]!["ratio"]!.GetValue<double>(), tolerance: 1e-9);
        Assert.False(components.ContainsKey("task.acc_norm"));                                        // parent at chance: left out, and said so
        Assert.Contains("not significantly above chance 0.5000", retention["excluded"]!["task.acc_norm"]!.GetValue<string>());
        Assert.False(components.ContainsKey("top1_agreement"));                                        // fidelity is never part of it
        double continuationParent = eval["reference_metrics"]!["tasks"]!["test_continuation"]!["acc_norm"]!.GetValue<double>();
        Assert.Equal(EvalStage.WilsonLower(continuationParent, 12) > 0.25, components.ContainsKey("test_continuation.acc_norm"));
        double mean = components.Select(kv => kv.Value!["ratio"]!.GetValue<double>()).Average();
        Assert.Equal(mean, retention["value"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(eval["metrics"]!["perplexity"]!.GetValue<double>() / eval["reference_metrics"]!["perplexity"]!.GetValue<double>(),
            eval["fidelity"]!["perplexity_ratio"]!["value"]!.GetValue<double>(), 9);

        void Brackets(JsonNode? ci, double value)
        {
            var a = Assert.IsType<JsonArray>(ci);
            Assert.InRange(value, a[0]!.GetValue<double>() - 1e-12, a[1]!.GetValue<double>() + 1e-12);
        }
        Brackets(retention["ci95"], retention["value"]!.GetValue<double>());
        foreach (var (_, c) in components) Brackets(c!["ci95"], c["ratio"]!.GetValue<double>());
        Brackets(eval["metrics"]!["ci95"]!["next_token_accuracy"], childAccuracy);
        Brackets(eval["reference_metrics"]!["ci95"]!["tasks"]!["test_continuation"]!["acc_norm"], continuationParent);
        Brackets(eval["fidelity"]!["kl_parent_child"]!["ci95"], eval["fidelity"]!["kl_parent_child"]!["value"]!.GetValue<double>());
        Assert.True(eval["metrics"]!["ci95"]!["next_token_accuracy"]![1]!.GetValue<double>() > eval["metrics"]!["ci95"]!["next_token_accuracy"]![0]!.GetValue<double>());
        Assert.Equal("documents", eval["protocol"]!["intervals"]!["token_units"]!.GetValue<string>());

        // The per-document sums kept for paired comparisons reproduce the totals, the retention and its interval exactly.
        var units = PairedRetention.Read(eval)!;
        Assert.Equal(eval["protocol"]!["documents"]!.GetValue<int>(), units.Tokens.Length);
        Assert.Equal(windows * T, units.Tokens.Sum());
        Assert.Equal(childAccuracy * windows * T, units.Model.Correct.Sum(), 6);
        Assert.Equal(parentAccuracy * windows * T, units.Reference.Correct.Sum(), 6);
        Assert.Equal(components.Select(kv => kv.Key), units.RetentionMetrics);
        var once = PairedRetention.Once(units.Tokens.Length, units.Tasks);
        Assert.Equal(retention["value"]!.GetValue<double>(), PairedRetention.Retention(units.Model, units.Reference, units.Tokens, units.RetentionTasks, once), tolerance: 1e-12);
        var replicates = PairedRetention.Resamples(units.Tokens.Length, units.Tasks, units.Resamples, units.Seed)
            .Select(r => PairedRetention.Retention(units.Model, units.Reference, units.Tokens, units.RetentionTasks, r)).Where(double.IsFinite).ToList();
        Assert.Equal(retention["ci95"]![0]!.GetValue<double>(), EvalStage.Interval(replicates)[0]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(retention["ci95"]![1]!.GetValue<double>(), EvalStage.Interval(replicates)[1]!.GetValue<double>(), tolerance: 1e-12);
        var zero = PairedRetention.Difference(units.Reference, units.Model, units.Model, units.Tokens, units.RetentionTasks,
            PairedRetention.Resamples(units.Tokens.Length, units.Tasks, units.Resamples, units.Seed));
        Assert.Equal((0.0, 0.0), (zero.Low, zero.High));

        // Paired: the parent against itself retains exactly 100% in every resample, so its interval has no width.
        var self = EvalStage.Run(new EvalOptions { ModelDir = fixture.ParentDir, ReferenceDir = fixture.ParentDir, DataDir = fixture.DataDir, BootstrapResamples = 20 }, _ => { });
        Assert.Equal(1.0, self["retention"]!["value"]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(1.0, self["retention"]!["ci95"]![0]!.GetValue<double>(), tolerance: 1e-12);
        Assert.Equal(1.0, self["retention"]!["ci95"]![1]!.GetValue<double>(), tolerance: 1e-12);
        // Asking for more test tokens than the split has is an error naming the split, not a silent clamp.
        string message = Assert.Throws<PuzzleException>(() => EvalStage.Run(new EvalOptions
        {
            ModelDir = fixture.ParentDir, DataDir = fixture.DataDir, MaxTokens = data.Tokens + 10 * T,
        }, _ => { })).Message;
        Assert.Contains($"split 'test' holds {data.Tokens:N0} tokens", message);
    }

    [Fact]
    public void ReferenceMetrics_AreMeasuredOncePerParentSplitAndTasks_AndReadBackExactly()
    {
        string atChance = TaskFile(Enumerable.Range(0, 6).Select(i => new ChoiceItem($"Story number {i}.", [" the cat.", " the dog."], 1)));
        string child = PerturbedChild();
        string cache = Path.Combine(TestSupport.TempDir(), "reference-metrics.json");
        JsonObject Eval(string model, string reference, List<string> log, string? task = null, string? cachePath = null) => EvalStage.Run(new EvalOptions
        {
            ModelDir = model, ReferenceDir = reference, DataDir = fixture.DataDir, Tasks = [task ?? atChance], ContinuationItems = 8, BootstrapResamples = 50,
            ReferenceCache = cachePath ?? cache,
        }, log.Add);
        var first = new List<string>();
        var measured = Eval(child, fixture.ParentDir, first);
        Assert.True(File.Exists(cache));
        Assert.Contains(first, l => l.StartsWith("eval: reference: perplexity") && !l.Contains("measured before"));

        // Read back: the same figures to the last bit, intervals included, without measuring the parent again.
        var second = new List<string>();
        var read = Eval(child, fixture.ParentDir, second);
        Assert.Contains(second, l => l.Contains("measured before"));
        Assert.Equal(measured["reference_metrics"]!.ToJsonString(), read["reference_metrics"]!.ToJsonString());
        Assert.Equal(measured["retention"]!.ToJsonString(), read["retention"]!.ToJsonString());
        Assert.Equal(measured["fidelity"]!.ToJsonString(), read["fidelity"]!.ToJsonString());
        // ...and equal to an evaluation that never had a cache.
        var fresh = Eval(child, fixture.ParentDir, [], cachePath: Path.Combine(TestSupport.TempDir(), "none.json"));
        Assert.Equal(fresh["retention"]!.ToJsonString(), read["retention"]!.ToJsonString());

        // Other task items, or another reference, are measured again, not read.
        string otherItems = TaskFile(Enumerable.Range(0, 6).Select(i => new ChoiceItem($"Story number {i}.", [" the cat.", " a dog."], 0)));
        var otherTask = new List<string>();
        Eval(child, fixture.ParentDir, otherTask, otherItems);
        Assert.DoesNotContain(otherTask, l => l.Contains("measured before"));
        var otherReference = new List<string>();
        var swapped = Eval(fixture.ParentDir, child, otherReference);
        Assert.DoesNotContain(otherReference, l => l.Contains("measured before"));
        Assert.Equal(measured["metrics"]!["perplexity"]!.GetValue<double>(), swapped["reference_metrics"]!["perplexity"]!.GetValue<double>(), tolerance: 1e-9);
    }

    [Fact]
    public void AParentAtZeroAccuracy_GivesUndefinedRetention_WithAClearLine_NotAnInternalError()
    {
        // Every weight zero: all logits are equal, so the parent always predicts token 0, which no test target is.
        string zero = TestSupport.TempDir();
        using (var model = Checkpoint.Load(fixture.ParentDir))
        {
            using (no_grad()) foreach (var p in model.parameters()) p.zero_();
            Checkpoint.SaveDeciLm(model, zero, ScalarType.Float32, fixture.ParentDir);
        }
        var log = new List<string>();
        var json = EvalStage.Run(new EvalOptions { ModelDir = fixture.ParentDir, ReferenceDir = zero, DataDir = fixture.DataDir, BootstrapResamples = 20 }, log.Add);
        Assert.Equal(0.0, json["reference_metrics"]!["next_token_accuracy"]!.GetValue<double>());
        Assert.True(json["metrics"]!["next_token_accuracy"]!.GetValue<double>() > 0);
        Assert.Null(json["retention"]!["value"]);
        Assert.Contains(log, l => l.StartsWith("eval: accuracy retention undefined: the reference's next-token accuracy is 0.00 %"));

        var (code, stdout, stderr) = TestSupport.RunCli("eval", fixture.ParentDir, "--reference", zero, "--data", fixture.DataDir, "--bootstrap", "20");
        Assert.True(code == 0, stderr);
        Assert.Contains("accuracy retention undefined: the parent's next-token accuracy is 0.00 %", stdout);
    }

    [Fact]
    public void ReferenceStates_AreWrittenByTheFirstEvaluation_AndLaterOnesRunTheModelAlone_WithTheSameResults()
    {
        string child = PerturbedChild(), other = PerturbedChild(0.6);
        string eval = TestSupport.TempDir();
        string states = Path.Combine(eval, "reference-states.bin");
        JsonObject Eval(string model, List<string> log, string? statesPath) => EvalStage.Run(new EvalOptions
        {
            ModelDir = model, ReferenceDir = fixture.ParentDir, DataDir = fixture.DataDir, BootstrapResamples = 50, ReferenceStatesPath = statesPath,
        }, log.Add);
        var plain = Eval(child, [], null);
        var first = new List<string>();
        var written = Eval(child, first, states);
        Assert.True(File.Exists(states));
        Assert.DoesNotContain(first, l => l.Contains("does not run"));
        var second = new List<string>();
        var read = Eval(child, second, states);
        Assert.Contains(second, l => l.Contains($"read from {states}") && l.Contains("the reference does not run"));
        foreach (var section in new[] { "metrics", "reference_metrics", "retention", "fidelity" })
        {
            Assert.Equal(plain[section]!.ToJsonString(), written[section]!.ToJsonString());
            Assert.Equal(plain[section]!.ToJsonString(), read[section]!.ToJsonString());
        }
        // Another model against the same parent reads them too, and gets what running the parent gives.
        var otherLog = new List<string>();
        var otherRead = Eval(other, otherLog, states);
        Assert.Contains(otherLog, l => l.Contains("the reference does not run"));
        Assert.Equal(Eval(other, [], null)["fidelity"]!.ToJsonString(), otherRead["fidelity"]!.ToJsonString());
    }

    [Theory]
    [InlineData(0.26, 300, 0.2136)]   // the demo's parent on its continuation task: 26% on 300 items is not above 25% chance
    [InlineData(0.40, 300, 0.3462)]
    [InlineData(0.5, 10, 0.2366)]
    [InlineData(1.0, 20, 0.8389)]
    public void WilsonLowerBound_MatchesTheClosedForm(double p, int n, double expected)
    {
        // Expected: the smallest π with (p − π)² ≤ z²·π(1 − π)/n (the score test's acceptance region), found by bisection
        // in a separate script, not from the closed form the code uses.
        Assert.Equal(expected, EvalStage.WilsonLower(p, n), 4);
    }

    [Fact]
    public void ContinuationTask_IsSeeded_AndItsAnswerIsTheTrueNextSentence()
    {
        using var tokenizer = TextTokenizer.Load(fixture.ParentDir);
        using var data = new TokenDataset(fixture.DataDir, "test");
        var a = ContinuationTask.Build(data, tokenizer, 10, seed: 3);
        var b = ContinuationTask.Build(data, tokenizer, 10, seed: 3);
        var c = ContinuationTask.Build(data, tokenizer, 10, seed: 4);
        Assert.Equal(a.Select(i => i.Context + string.Join("|", i.Choices) + i.Label), b.Select(i => i.Context + string.Join("|", i.Choices) + i.Label));
        Assert.NotEqual(a.Select(i => i.Context + string.Join("|", i.Choices)), c.Select(i => i.Context + string.Join("|", i.Choices)));
        // Documents of the test split as text: the context followed by the answer is in one of them.
        long[] starts = data.DocumentStarts();
        var documents = starts.Select((s, k) =>
        {
            var ids = new long[(k + 1 < starts.Length ? starts[k + 1] : data.Tokens) - s];
            data.Read(s, ids);
            return tokenizer.Decode(ids.Select(t => (int)t).ToArray());
        }).ToList();
        foreach (var item in a)
        {
            Assert.Equal(4, item.Choices.Count);
            string source = Assert.Single(documents, d => d.Contains(item.Context + item.Choices[item.Label]));
            for (int k = 0; k < 4; k++)
                if (k != item.Label) Assert.DoesNotContain(item.Context + item.Choices[k], source);
        }
        Assert.Contains("yields", Assert.Throws<PuzzleException>(() => ContinuationTask.Build(data, tokenizer, 100_000, seed: 3)).Message);
    }

    [Fact]
    public void EmptyContext_WithoutBos_IsConditionedOnEos_AndEveryChoiceTokenIsScored()
    {
        string dir = TestSupport.TempDir();
        foreach (string file in Directory.GetFiles(fixture.ParentDir)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!.AsObject();
        config["add_bos_token"] = false;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
        using var tokenizer = TextTokenizer.Load(dir);
        Assert.False(tokenizer.AddBos);
        int eos = tokenizer.EosIds[0];
        string[] choices = ["the cat sees the ball.", "a", "ball the sees cat the."];
        var sequences = Evaluator.Sequences(tokenizer, "", choices, 1000);
        for (int i = 0; i < choices.Length; i++)
        {
            Assert.Equal([eos, .. tokenizer.EncodeRaw(choices[i])], sequences[i].Ids);
            Assert.Equal(1, sequences[i].ContinuationStart);                                            // the first choice token is scored too
        }
        // acc matches an oracle that sums log p over all choice tokens after EOS.
        using var model = Checkpoint.Load(dir);
        var items = new List<ChoiceItem> { new("", choices, 0), new("", ["a", "the cat sees the ball."], 1) };
        var metrics = Evaluator.Task(model, tokenizer, "empty", items);
        using var noGrad = no_grad();
        var hits = new List<bool>();
        foreach (var item in items)
        {
            var scores = item.Choices.Select(choice =>
            {
                int[] ids = [eos, .. tokenizer.EncodeRaw(choice)];
                using var scope = NewDisposeScope();
                var logp = model.Forward(tensor(ids.Select(t => (long)t).ToArray(), [1, ids.Length])).log_softmax(-1);
                return Enumerable.Range(1, ids.Length - 1).Sum(k => (double)logp[0, k - 1, ids[k]].item<float>());
            }).ToArray();
            hits.Add(Array.IndexOf(scores, scores.Max()) == item.Label);
        }
        Assert.Equal(hits, metrics.Hits);
        Assert.Equal(hits.Count(h => h) / 2.0, metrics.Acc);
        Assert.Equal(0.5 * (1.0 / 3) + 0.5 * 0.5, metrics.Chance, tolerance: 1e-12);
    }

    [Fact]
    public void Bos_FollowsTokenizerConfig_ElseThePostProcessor()
    {
        string dir = Tokenization.TokenizerTests.ByteLevelTokenizerDir();                             // post-processor adds <|begin_of_text|>
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}""");
        using (var tokenizer = TextTokenizer.Load(dir))
        {
            Assert.True(tokenizer.AddBos);
            Assert.Equal(258, tokenizer.Encode("a")[0]);
        }
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer.json")))!.AsObject();
        json["post_processor"] = null;                                                               // no BOS from the tokenizer itself
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        using (var tokenizer = TextTokenizer.Load(dir))
        {
            Assert.False(tokenizer.AddBos);
            Assert.Equal(258, tokenizer.BosId);
            Assert.Equal(['a'], tokenizer.Encode("a"));
        }
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<|begin_of_text|>", "add_bos_token": true}""");
        using (var tokenizer = TextTokenizer.Load(dir)) Assert.Equal([258, 'a'], tokenizer.Encode("a"));   // the config says so
    }

    [Fact]
    public void Bench_AlternatesAbba()
    {
        Assert.Equal([[0, 1], [1, 0], [0, 1], [1, 0]], Enumerable.Range(0, 4).Select(r => BenchStage.RoundOrder(r, 2)));
        Assert.Equal([2, 1, 0], BenchStage.RoundOrder(1, 3));
    }

    /// <summary>
    /// The proof that nothing but eval reads the test split: the same run on a data directory whose test shard holds
    /// random tokens gives byte-identical block library, scores, search solution and distilled child.
    /// </summary>
    [Fact]
    public void GarbageTestShard_LeavesLibraryScoresSearchAndGkdUnchanged()
    {
        string garbage = TestSupport.TempDir();
        foreach (string file in Directory.GetFiles(fixture.DataDir)) File.Copy(file, Path.Combine(garbage, Path.GetFileName(file)));
        Directory.CreateDirectory(Path.Combine(garbage, DataManifest.TokenizerFolder));
        foreach (string file in Directory.GetFiles(Path.Combine(fixture.DataDir, DataManifest.TokenizerFolder)))
            File.Copy(file, Path.Combine(garbage, DataManifest.TokenizerFolder, Path.GetFileName(file)));
        var manifest = DataManifest.Read(garbage);
        var random = new Random(5);
        foreach (var shard in manifest.Splits["test"].Shards)
        {
            string path = Path.Combine(garbage, shard.File);
            var bytes = new byte[new FileInfo(path).Length];
            for (int i = 0; i < bytes.Length; i += 2) BitConverter.TryWriteBytes(bytes.AsSpan(i), (ushort)random.Next(manifest.VocabSize));
            File.WriteAllBytes(path, bytes);
        }
        using (var original = new TokenDataset(fixture.DataDir, "test"))
        using (var broken = new TokenDataset(garbage, "test"))
        {
            var (x, y) = (new long[original.Tokens], new long[broken.Tokens]);
            original.Read(0, x);
            broken.Read(0, y);
            Assert.NotEqual(x, y);
        }

        string Run(string dataDir)
        {
            string dir = fixture.NewRun(c =>
            {
                c["data"] = new JsonObject { ["path"] = dataDir };
                c["search_space"] = new JsonObject
                {
                    ["kv_heads"] = new JsonArray(1), ["ffn_fractions"] = new JsonArray(1.0, 0.5), ["ffn_linear"] = false, ["attention_linear"] = false,
                    ["ffn_no_op"] = false,
                };
                c["bld"]!["tokens_per_variant"] = 8 * 32 * 2;
                c["scenario"] = new JsonObject { ["batch"] = 2, ["prompt_length"] = 8, ["generation_length"] = 8, ["repeats"] = 1, ["warmup_runs"] = 1 };
                c["scoring"] = new JsonObject { ["validation_tokens"] = 32 * 8, ["batch"] = 8 };
            });
            var run = new RunDirectory(dir);
            BlockLibraryBuilder.Run(run, new LogProgress(), _ => { });
            BlockScorer.Run(run, new LogProgress(), _ => { });
            return dir;
        }
        string a = Run(fixture.DataDir), b = Run(garbage);
        // Costs read no data (measured block times); share them so the search sees the same numbers.
        BlockCosts.Run(new RunDirectory(a), _ => { });
        File.Copy(Path.Combine(a, "costs.json"), Path.Combine(b, "costs.json"));
        foreach (string dir in new[] { a, b })
        {
            var run = new RunDirectory(dir);
            SearchStage.Run(run, new SearchRequest { Target = "h100", MinThroughputRatio = 1.3, Name = "child" }, _ => { });
            ChildAssembler.Run(run, "child", Path.Combine(dir, "child"), _ => { });
            Distiller.Run(new DistillOptions
            {
                TeacherDir = fixture.ParentDir, StudentDir = Path.Combine(dir, "child"), DataDir = run.DataDir, OutDir = Path.Combine(dir, "child-gkd"),
                Tokens = 8 * 32 * 3, Batch = 8, EvalEvery = 2, ValidationTokens = 32 * 8, Precision = "fp32",
            }, _ => { });
        }
        var weights = Directory.GetFiles(Path.Combine(a, "library"), "*.safetensors").Select(Path.GetFileName).Order().ToList();
        Assert.NotEmpty(weights);
        Assert.Equal(weights, Directory.GetFiles(Path.Combine(b, "library"), "*.safetensors").Select(Path.GetFileName).Order());
        foreach (string? file in weights) Assert.Equal(File.ReadAllBytes(Path.Combine(a, "library", file!)), File.ReadAllBytes(Path.Combine(b, "library", file!)));
        string Entries(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "scores.json")))!["entries"]!.ToJsonString();
        Assert.Equal(Entries(a), Entries(b));
        string Layers(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "solutions", "child.json")))!["layers"]!.ToJsonString();
        Assert.Equal(Layers(a), Layers(b));
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "child-gkd", "model.safetensors")), File.ReadAllBytes(Path.Combine(b, "child-gkd", "model.safetensors")));
        string Kl(string dir)
        {
            var d = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "child-gkd", "distillation.json")))!;
            return $"{d["initial_validation_kl"]} {d["best_validation_kl"]} {d["best_step"]}";
        }
        Assert.Equal(Kl(a), Kl(b));

        // ... while eval, which reads the test split, sees the garbage.
        double Perplexity(string dataDir) => EvalStage.Run(new EvalOptions { ModelDir = fixture.ParentDir, DataDir = dataDir, BootstrapResamples = 10 }, _ => { })["metrics"]!["perplexity"]!.GetValue<double>();
        Assert.True(Perplexity(garbage) > 2 * Perplexity(fixture.DataDir));
    }
}
