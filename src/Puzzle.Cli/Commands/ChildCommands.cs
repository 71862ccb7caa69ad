using System.CommandLine;
using System.Text.Json.Nodes;
using Puzzle.Config;
using Puzzle.Gguf;
using Puzzle.IO;
using Puzzle.Stages;
using Puzzle.Stages.Assembly;
using Puzzle.Stages.Benchmark;
using Puzzle.Stages.Evaluation;
using Puzzle.Stages.Report;
using Puzzle.Training;

namespace Puzzle.Cli.Commands;

/// <summary>assemble, distill, eval, bench, export, report: from a solution to a measured, exported child.</summary>
internal static class ChildCommands
{
    public static Command Assemble()
    {
        var run = CliSupport.RunOption();
        var solution = new Option<string>("--solution") { Description = "solution name (RUN/solutions/NAME.json)", DefaultValueFactory = _ => ChildRecipe.Solution };
        var output = new Option<string?>("--out") { Description = "child directory to write (DeciLM); default RUN/child for the child solution, else RUN/NAME" };
        var command = new Command("assemble", "Assemble the child of a solution from the parent and the block library (with coupled BLD first where assembly.coupled_bld_tokens is set).") { run, solution, output };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var runDir = new RunDirectory(r.GetValue(run)!);
            string name = r.GetValue(solution)!;
            var result = AssemblyStage.Assemble(runDir, name, r.GetValue(output) ?? runDir.Artifact(name));
            Console.WriteLine($"{result.OutDir}: {result.Parameters:N0} parameters (estimate {result.EstimatedParameters:N0})");
            return 0;
        }));
        return command;
    }

    /// <summary>`--run RUN`: the run's settings for a command that also works without one; its flags override them.</summary>
    static Option<string?> RunSettingsOption(string what) => new("--run") { Description = $"run directory: {what} from its config (flags override them); without it, the config defaults" };

    public static Command Distill()
    {
        var runOption = RunSettingsOption("teacher, data, RUN/child -> RUN/child-gkd and the gkd section");
        var teacher = new Option<string?>("--teacher") { Description = "parent model directory (required without --run)" };
        var student = new Option<string?>("--student") { Description = "child model directory (required without --run)" };
        var data = new Option<string?>("--data") { Description = "prepared data directory (required without --run)" };
        var output = new Option<string?>("--out") { Description = "distilled child directory (the best checkpoint; required without --run)" };
        var tokens = new Option<long?>("--tokens") { Description = "gkd.tokens" };
        var batch = new Option<int?>("--batch") { Description = "gkd.batch" };
        var lr = new Option<double?>("--lr") { Description = "gkd.lr" };
        var cosine = new Option<double?>("--cosine-weight") { Description = "weight of Σ_layers (1 − cos) (gkd.cosine_weight)" };
        var kl = new Option<double?>("--kl-weight") { Description = "weight of KL(parent || child) (gkd.kl_weight)" };
        var lm = new Option<double?>("--lm-weight") { Description = "weight of the LM loss, off by default (gkd.lm_weight)" };
        var temperature = new Option<double?>("--temperature") { Description = "gkd.temperature" };
        var precision = new Option<string?>("--precision") { Description = "gkd.precision" };
        var validationTokens = new Option<long?>("--validation-tokens") { Description = "validation tokens the best checkpoint is chosen on (gkd.validation_tokens)" };
        var device = new Option<string?>("--device") { Description = "cpu, cuda or cuda:N (scenario.device)" };
        var command = new Command("distill", "Global knowledge distillation of a child from its parent (cosine on hidden states + KL on logits).")
            { runOption, teacher, student, data, output, tokens, batch, lr, cosine, kl, lm, temperature, precision, validationTokens, device };
        command.SetAction(r => CliSupport.Run(() =>
        {
            string Required(Option<string?> option) => r.GetValue(option) ?? throw new PuzzleException($"{option.Name} is required without --run");
            DistillOptions options;
            if (r.GetValue(runOption) is { } runPath)
            {
                var runDir = new RunDirectory(runPath);
                options = ChildRecipe.DistillOptionsFor(runDir, r.GetValue(student) ?? runDir.Artifact(ChildRecipe.Solution),
                    r.GetValue(output) ?? runDir.Artifact(ChildRecipe.Solution + "-gkd"), runDir.Config.Gkd.Tokens);
            }
            else
            {
                var g = RunConfig.Defaults.Gkd;
                options = new DistillOptions
                {
                    TeacherDir = Required(teacher), StudentDir = Required(student), DataDir = Required(data), OutDir = Required(output),
                    Tokens = g.Tokens, Batch = g.Batch, LearningRate = g.Lr, CosineWeight = g.CosineWeight, KlWeight = g.KlWeight, LmWeight = g.LmWeight,
                    Temperature = g.Temperature, Precision = g.Precision, ValidationTokens = g.ValidationTokens, Device = RunConfig.Defaults.Scenario.Device,
                };
            }
            options = options with
            {
                TeacherDir = r.GetValue(teacher) ?? options.TeacherDir, DataDir = r.GetValue(data) ?? options.DataDir,
                Tokens = r.GetValue(tokens) is { } t ? CliSupport.Positive("--tokens", t) : options.Tokens,
                Batch = r.GetValue(batch) is { } b ? CliSupport.Positive("--batch", b) : options.Batch,
                LearningRate = r.GetValue(lr) ?? options.LearningRate, CosineWeight = r.GetValue(cosine) ?? options.CosineWeight,
                KlWeight = r.GetValue(kl) ?? options.KlWeight, LmWeight = r.GetValue(lm) ?? options.LmWeight,
                Temperature = r.GetValue(temperature) ?? options.Temperature, Precision = r.GetValue(precision) ?? options.Precision,
                ValidationTokens = r.GetValue(validationTokens) ?? options.ValidationTokens, Device = r.GetValue(device) ?? options.Device,
            };
            var result = Distiller.Run(options);
            Console.WriteLine($"{options.OutDir}: validation KL {result.InitialValidationKl:F4} -> {result.BestValidationKl:F4} (best at step {result.BestStep})");
            return 0;
        }));
        return command;
    }

    public static Command Eval()
    {
        var model = CliSupport.ModelArgument();
        var runOption = RunSettingsOption("parent as reference, data, the evaluation section and scenario.device");
        var reference = new Option<string?>("--reference") { Description = "parent: adds accuracy retention (child / parent), fidelity (perplexity ratio, KL, top-1 agreement)" };
        var data = new Option<string?>("--data") { Description = "prepared data directory (its held-out test split; required without --run)" };
        var split = new Option<string>("--split") { Description = "split to evaluate: test (held out from every stage that trains or selects); validation only to compare", DefaultValueFactory = _ => "test" };
        var tasks = new Option<string[]>("--tasks") { Description = "multiple-choice jsonl files (evaluation.tasks)", AllowMultipleArgumentsPerToken = true };
        var limit = new Option<int?>("--limit") { Description = $"items per task (evaluation.task_limit, default {RunConfig.Defaults.Evaluation.TaskLimit})" };
        var fewShot = new Option<int>("--few-shot") { Description = "examples prefixed from the task file", DefaultValueFactory = _ => 0 };
        var maxTokens = new Option<long?>("--max-tokens") { Description = "tokens of the split (its first windows); default: the whole split (evaluation.max_tokens)" };
        var continuation = new Option<int?>("--continuation-items") { Description = "items of an in-domain task built from the split: the true next sentence among 4 (evaluation.continuation_items)" };
        var resamples = new Option<int?>("--bootstrap") { Description = $"bootstrap resamples for the 95% intervals (evaluation.bootstrap_resamples, default {RunConfig.Defaults.Evaluation.BootstrapResamples})" };
        var seed = new Option<long?>("--seed") { Description = "seed of the bootstrap and the continuation task (evaluation.seed)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = new Option<string?>("--device") { Description = "cpu, cuda or cuda:N (scenario.device)" };
        var command = new Command("eval", "Next-token accuracy, perplexity and tasks on the held-out test split; with a reference: accuracy retention, fidelity, 95% intervals.")
            { model, runOption, reference, data, split, tasks, limit, fewShot, maxTokens, continuation, resamples, seed, json, device };
        command.SetAction(r => CliSupport.Run(() =>
        {
            string modelDir = r.GetValue(model)!;
            var options = r.GetValue(runOption) is { } runPath
                ? ChildRecipe.EvalOptionsFor(new RunDirectory(runPath), modelDir) with { ContinuationTaskPath = null }
                : new EvalOptions { ModelDir = modelDir, DataDir = r.GetValue(data) ?? throw new PuzzleException("--data is required without --run") };
            options = options with
            {
                ReferenceDir = r.GetValue(reference) ?? options.ReferenceDir, DataDir = r.GetValue(data) ?? options.DataDir, Split = r.GetValue(split)!,
                Tasks = r.GetValue(tasks) is { Length: > 0 } t ? t : options.Tasks,
                TaskLimit = r.GetValue(limit) is { } l ? CliSupport.Positive("--limit", l) : options.TaskLimit,
                FewShot = r.GetValue(fewShot) >= 0 ? r.GetValue(fewShot) : throw new PuzzleException($"--few-shot must be >= 0, got {r.GetValue(fewShot)}"),
                MaxTokens = r.GetValue(maxTokens) is { } m ? CliSupport.Positive("--max-tokens", m) : options.MaxTokens,
                ContinuationItems = r.GetValue(continuation) ?? options.ContinuationItems,
                BootstrapResamples = r.GetValue(resamples) is { } b ? CliSupport.Positive("--bootstrap", b) : options.BootstrapResamples,
                Seed = r.GetValue(seed) ?? options.Seed, Device = r.GetValue(device) ?? options.Device,
            };
            var result = EvalStage.Run(options, r.GetValue(json) ? _ => { } : null);
            if (r.GetValue(json)) Console.WriteLine(result.ToJsonString(AtomicFile.Indented));
            else if (result["retention"] is { } retention && retention["value"] is null)
                Console.WriteLine($"accuracy retention undefined: the parent's next-token accuracy is " +
                                  $"{result["reference_metrics"]!["next_token_accuracy"]!.GetValue<double>():P2} (no accuracy to retain); " +
                                  $"KL to the parent {result["fidelity"]!["kl_parent_child"]!["value"]!.GetValue<double>():F4}");
            else if (result["retention"] is { } retention2)
                Console.WriteLine($"accuracy retention {retention2["value"]!.GetValue<double>():P1} {EvalStage.FormatInterval(retention2["ci95"], percent: true)} " +
                                  $"({string.Join(", ", retention2["components"]!.AsObject().Select(kv => $"{kv.Key} {kv.Value!["ratio"]!.GetValue<double>():F3}"))}); " +
                                  $"perplexity ratio {result["fidelity"]!["perplexity_ratio"]!["value"]!.GetValue<double>():F3}");
            return 0;
        }));
        return command;
    }

    public static Command Bench()
    {
        var runOption = RunSettingsOption("the parent and RUN/child-gkd, the scenario, evaluation.bench_repeats");
        var models = new Option<string[]>("--models") { Description = "model directories; ratios are to the first (required without --run)", AllowMultipleArgumentsPerToken = true };
        var d = RunConfig.Defaults;
        var batch = new Option<int?>("--batch") { Description = $"scenario.batch (default {d.Scenario.Batch})" };
        var prompt = new Option<int?>("--prompt-len") { Description = $"scenario.prompt_length (default {d.Scenario.PromptLength})" };
        var gen = new Option<int?>("--gen-len") { Description = $"scenario.generation_length (default {d.Scenario.GenerationLength})" };
        var repeats = new Option<int?>("--repeats") { Description = $"evaluation.bench_repeats (default {d.Evaluation.BenchRepeats})" };
        var dtype = new Option<string?>("--dtype") { Description = $"compute dtype, scenario.measure_dtype (default {d.Scenario.MeasureDtype}; bfloat16 is ~2x faster on CPUs with bf16 units)" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = new Option<string?>("--device") { Description = $"cpu, cuda or cuda:N (scenario.device, default {d.Scenario.Device})" };
        var engine = new Option<string?>("--engine") { Description = "puzzle (this engine), llama.cpp (GGUF + llama-batched-bench; scripts/install-llama-cpp.sh) or both (ours, with llama.cpp's figures and ratios beside); default puzzle, or with --run evaluation.bench_engine" };
        var threads = new Option<int?>("--threads") { Description = "llama.cpp threads (default: ours, TorchSharp's intra-op threads)" };
        var ggufDir = new Option<string?>("--gguf-dir") { Description = "keep llama.cpp's GGUF exports here and reuse them (default: a temporary folder; with --run, RUN/gguf)" };
        var command = new Command("bench", "Side-by-side generation benchmark in one process: prefill, decode and end-to-end tokens/s, TTFT, memory.")
            { runOption, models, batch, prompt, gen, repeats, dtype, json, device, engine, threads, ggufDir };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var options = r.GetValue(runOption) is { } runPath
                ? ChildRecipe.BenchOptionsFor(new RunDirectory(runPath), new RunDirectory(runPath).Artifact(ChildRecipe.Solution + "-gkd"), r.GetValue(engine))
                : new BenchOptions { Models = r.GetValue(models) is { Length: > 0 } given ? given : throw new PuzzleException("--models is required without --run") };
            options = options with
            {
                Models = r.GetValue(models) is { Length: > 0 } m ? m : options.Models,
                Batch = r.GetValue(batch) is { } b ? CliSupport.Positive("--batch", b) : options.Batch,
                PromptLength = r.GetValue(prompt) is { } p ? CliSupport.Positive("--prompt-len", p) : options.PromptLength,
                GenerationLength = r.GetValue(gen) is { } g ? CliSupport.Positive("--gen-len", g) : options.GenerationLength,
                Repeats = r.GetValue(repeats) is { } n ? CliSupport.Positive("--repeats", n) : options.Repeats,
                Dtype = r.GetValue(dtype) ?? options.Dtype, Device = r.GetValue(device) ?? options.Device,
                Engine = r.GetValue(engine) ?? options.Engine, GgufDir = r.GetValue(ggufDir) ?? options.GgufDir,
                LlamaCppThreads = r.GetValue(threads) is { } t ? CliSupport.Positive("--threads", t) : options.LlamaCppThreads,
            };
            BenchEngine.Check(options.Engine, "--engine");
            var result = BenchStage.Run(options, r.GetValue(json) ? _ => { } : null);
            if (r.GetValue(json)) Console.WriteLine(result.ToJsonString(AtomicFile.Indented));
            return 0;
        }));
        return command;
    }

    public static Command Export()
    {
        var child = new Argument<string>("CHILD") { Description = "child model directory" };
        var output = new Option<string>("--out") { Description = "export directory (hf) or .gguf file (gguf)", Required = true };
        var format = new Option<string>("--format") { Description = "hf: DeciLM directory with a model card; gguf: one GGUF v3 file for llama.cpp", DefaultValueFactory = _ => "hf" };
        var dtype = new Option<string>("--dtype") { Description = "hf: float32|bfloat16|float16; gguf: f32|f16|bf16|q8_0", DefaultValueFactory = _ => "bfloat16" };
        var report = new Option<string?>("--report") { Description = "RUN/report.json, for the model card's measured figures" };
        var noPad = new Option<bool>("--no-pad-ffn") { Description = "keep FFN widths that engines cannot rebuild from ffn_mult (they then need intermediate_size)" };
        var command = new Command("export", "Write the child as a Hugging Face DeciLM (nemotron-nas) directory with a model card, or as GGUF for llama.cpp.")
            { child, output, format, dtype, report, noPad };
        command.SetAction(r => CliSupport.Run(() =>
        {
            switch (r.GetValue(format))
            {
                case "hf":
                    Console.WriteLine(ExportStage.Run(r.GetValue(child)!, r.GetValue(output)!, r.GetValue(dtype)!, r.GetValue(report), !r.GetValue(noPad)));
                    break;
                case "gguf":
                    var result = GgufExporter.Export(r.GetValue(child)!, r.GetValue(output)!, GgufExporter.ParseType(r.GetValue(dtype)!));
                    Console.WriteLine($"{result.Path}: GGUF {result.Architecture}, {result.Layers} layers, {result.Type}, {result.Bytes:N0} bytes");
                    break;
                case var other:
                    throw new PuzzleException($"--format '{other}' is not a format (expected hf or gguf)");
            }
            return 0;
        }));
        return command;
    }

    public static Command Report()
    {
        var run = CliSupport.RunOption();
        var solution = new Option<string>("--solution") { Description = "solution name (RUN/solutions/NAME.json)", DefaultValueFactory = _ => ChildRecipe.Solution };
        var child = new Option<string>("--child") { Description = "the (distilled) child directory", Required = true };
        var eval = new Option<string>("--eval") { Description = "JSON of `puzzle eval CHILD --reference PARENT --json`", Required = true };
        var bench = new Option<string>("--bench") { Description = "JSON of `puzzle bench --models PARENT CHILD --json`", Required = true };
        var command = new Command("report", "Write RUN/report.md, report.json and plots from measured eval and bench results.") { run, solution, child, eval, bench };
        command.SetAction(r => CliSupport.Run(() =>
        {
            JsonNode Read(string path) => JsonFile.ReadObject(path);
            string childDir = r.GetValue(child)!;
            string distillation = Path.Combine(childDir, "distillation.json");
            ReportStage.Write(new RunDirectory(r.GetValue(run)!), r.GetValue(solution)!, childDir, Read(r.GetValue(eval)!), Read(r.GetValue(bench)!),
                File.Exists(distillation) ? Read(distillation) : null);
            return 0;
        }));
        return command;
    }
}
