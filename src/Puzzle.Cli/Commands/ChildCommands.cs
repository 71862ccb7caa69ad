using System.CommandLine;
using System.Text.Json.Nodes;
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
        var solution = new Option<string>("--solution") { Description = "solution name (RUN/solutions/NAME.json)", Required = true };
        var output = new Option<string>("--out") { Description = "child directory to write (DeciLM)", Required = true };
        var command = new Command("assemble", "Assemble the child of a solution from the parent and the block library.") { run, solution, output };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var result = ChildAssembler.Run(new RunDirectory(r.GetValue(run)!), r.GetValue(solution)!, r.GetValue(output)!);
            Console.WriteLine($"{result.OutDir}: {result.Parameters:N0} parameters (estimate {result.EstimatedParameters:N0})");
            return 0;
        }));
        return command;
    }

    public static Command Distill()
    {
        var teacher = new Option<string>("--teacher") { Description = "parent model directory", Required = true };
        var student = new Option<string>("--student") { Description = "child model directory", Required = true };
        var data = new Option<string>("--data") { Description = "prepared data directory", Required = true };
        var output = new Option<string>("--out") { Description = "distilled child directory (the best checkpoint)", Required = true };
        var tokens = new Option<long>("--tokens") { DefaultValueFactory = _ => 1_000_000 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 16 };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 3e-4 };
        var cosine = new Option<double>("--cosine-weight") { Description = "weight of Σ_layers (1 − cos)", DefaultValueFactory = _ => 1.0 };
        var kl = new Option<double>("--kl-weight") { Description = "weight of KL(parent || child)", DefaultValueFactory = _ => 1.0 };
        var lm = new Option<double>("--lm-weight") { Description = "weight of the LM loss (off by default)", DefaultValueFactory = _ => 0.0 };
        var temperature = new Option<double>("--temperature") { DefaultValueFactory = _ => 1.0 };
        var precision = new Option<string>("--precision") { DefaultValueFactory = _ => "auto" };
        var validationTokens = new Option<long>("--validation-tokens") { Description = "validation tokens the best checkpoint is chosen on", DefaultValueFactory = _ => 16_384 };
        var device = CliSupport.DeviceOption();
        var command = new Command("distill", "Global knowledge distillation of a child from its parent (cosine on hidden states + KL on logits).")
            { teacher, student, data, output, tokens, batch, lr, cosine, kl, lm, temperature, precision, validationTokens, device };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var result = Distiller.Run(new DistillOptions
            {
                TeacherDir = r.GetValue(teacher)!, StudentDir = r.GetValue(student)!, DataDir = r.GetValue(data)!, OutDir = r.GetValue(output)!,
                Tokens = r.GetValue(tokens), Batch = r.GetValue(batch), LearningRate = r.GetValue(lr), CosineWeight = r.GetValue(cosine),
                KlWeight = r.GetValue(kl), LmWeight = r.GetValue(lm), Temperature = r.GetValue(temperature), Precision = r.GetValue(precision)!,
                ValidationTokens = r.GetValue(validationTokens),
                Device = r.GetValue(device)!,
            });
            Console.WriteLine($"{r.GetValue(output)}: validation KL {result.InitialValidationKl:F4} -> {result.BestValidationKl:F4} (best at step {result.BestStep})");
            return 0;
        }));
        return command;
    }

    public static Command Eval()
    {
        var model = CliSupport.ModelArgument();
        var reference = new Option<string?>("--reference") { Description = "parent: adds accuracy retention (child / parent), fidelity (perplexity ratio, KL, top-1 agreement)" };
        var data = new Option<string>("--data") { Description = "prepared data directory (its held-out test split)", Required = true };
        var split = new Option<string>("--split") { Description = "split to evaluate: test (held out from every stage that trains or selects); validation only to compare", DefaultValueFactory = _ => "test" };
        var tasks = new Option<string[]>("--tasks") { Description = "multiple-choice jsonl files", AllowMultipleArgumentsPerToken = true };
        var limit = new Option<int?>("--limit") { Description = "items per task", DefaultValueFactory = _ => 500 };
        var fewShot = new Option<int>("--few-shot") { Description = "examples prefixed from the task file", DefaultValueFactory = _ => 0 };
        var maxTokens = new Option<long?>("--max-tokens") { Description = "tokens of the split (its first windows); default: the whole split" };
        var continuation = new Option<int>("--continuation-items") { Description = "items of an in-domain task built from the split: the true next sentence among 4", DefaultValueFactory = _ => 0 };
        var resamples = new Option<int>("--bootstrap") { Description = "bootstrap resamples for the 95% intervals", DefaultValueFactory = _ => 1000 };
        var seed = new Option<long>("--seed") { Description = "seed of the bootstrap and the continuation task", DefaultValueFactory = _ => 0 };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = CliSupport.DeviceOption();
        var command = new Command("eval", "Next-token accuracy, perplexity and tasks on the held-out test split; with a reference: accuracy retention, fidelity, 95% intervals.")
            { model, reference, data, split, tasks, limit, fewShot, maxTokens, continuation, resamples, seed, json, device };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var result = EvalStage.Run(new EvalOptions
            {
                ModelDir = r.GetValue(model)!, ReferenceDir = r.GetValue(reference), DataDir = r.GetValue(data)!, Split = r.GetValue(split)!, Tasks = r.GetValue(tasks) ?? [],
                TaskLimit = r.GetValue(limit) is { } l ? CliSupport.Positive("--limit", l) : null, FewShot = r.GetValue(fewShot) >= 0 ? r.GetValue(fewShot) : throw new PuzzleException($"--few-shot must be >= 0, got {r.GetValue(fewShot)}"),
                MaxTokens = r.GetValue(maxTokens) is { } m ? CliSupport.Positive("--max-tokens", m) : null, ContinuationItems = r.GetValue(continuation),
                BootstrapResamples = CliSupport.Positive("--bootstrap", r.GetValue(resamples)), Seed = r.GetValue(seed), Device = r.GetValue(device)!,
            }, r.GetValue(json) ? _ => { } : null);
            if (r.GetValue(json)) Console.WriteLine(result.ToJsonString(AtomicFile.Indented));
            else if (result["retention"] is { } retention)
                Console.WriteLine($"accuracy retention {retention["value"]!.GetValue<double>():P1} {EvalStage.FormatInterval(retention["ci95"], percent: true)} " +
                                  $"({string.Join(", ", retention["components"]!.AsObject().Select(kv => $"{kv.Key} {kv.Value!["ratio"]!.GetValue<double>():F3}"))}); " +
                                  $"perplexity ratio {result["fidelity"]!["perplexity_ratio"]!["value"]!.GetValue<double>():F3}");
            return 0;
        }));
        return command;
    }

    public static Command Bench()
    {
        var models = new Option<string[]>("--models") { Description = "model directories; ratios are to the first", Required = true, AllowMultipleArgumentsPerToken = true };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 16 };
        var prompt = new Option<int>("--prompt-len") { DefaultValueFactory = _ => 128 };
        var gen = new Option<int>("--gen-len") { DefaultValueFactory = _ => 128 };
        var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 5 };
        var dtype = new Option<string>("--dtype") { Description = "compute dtype (bfloat16 is ~2x faster on CPUs with bf16 units)", DefaultValueFactory = _ => "bfloat16" };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var device = CliSupport.DeviceOption();
        var engine = new Option<string>("--engine") { Description = "puzzle (this engine) or llama.cpp (GGUF + llama-batched-bench; scripts/install-llama-cpp.sh)", DefaultValueFactory = _ => "puzzle" };
        var threads = new Option<int>("--threads") { Description = "llama.cpp threads", DefaultValueFactory = _ => Environment.ProcessorCount };
        var command = new Command("bench", "Side-by-side generation benchmark in one process: prefill, decode and end-to-end tokens/s, TTFT, memory.")
            { models, batch, prompt, gen, repeats, dtype, json, device, engine, threads };
        command.SetAction(r => CliSupport.Run(() =>
        {
            var options = new BenchOptions
            {
                Models = r.GetValue(models)!, Batch = CliSupport.Positive("--batch", r.GetValue(batch)), PromptLength = CliSupport.Positive("--prompt-len", r.GetValue(prompt)),
                GenerationLength = CliSupport.Positive("--gen-len", r.GetValue(gen)), Repeats = CliSupport.Positive("--repeats", r.GetValue(repeats)), Dtype = r.GetValue(dtype)!, Device = r.GetValue(device)!,
            };
            var result = r.GetValue(engine) switch
            {
                "puzzle" => BenchStage.Run(options, r.GetValue(json) ? _ => { } : null),
                "llama.cpp" => InTempDir(dir => LlamaCppBench.Run(options, dir, CliSupport.Positive("--threads", r.GetValue(threads)), r.GetValue(json) ? _ => { } : null)),
                var other => throw new PuzzleException($"--engine '{other}' is not an engine (expected puzzle or llama.cpp)"),
            };
            if (r.GetValue(json)) Console.WriteLine(result.ToJsonString(AtomicFile.Indented));
            return 0;
        }));
        return command;
    }

    static T InTempDir<T>(Func<string, T> action)
    {
        var dir = Directory.CreateTempSubdirectory("puzzle-llama-bench-");
        try { return action(dir.FullName); }
        finally { dir.Delete(recursive: true); }
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
        var solution = new Option<string>("--solution") { Required = true };
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
