using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.Data;
using Puzzle.IO;

namespace Puzzle.Training;

/// <summary>
/// A resumable training state in OUT/checkpoint/: fp32 masters, optimizer state, data position, step, history.
/// state.json is written last and names the files, so a crash never leaves a state that points at half a checkpoint.
/// </summary>
public sealed class TrainingCheckpoint(string outDir, string fingerprint)
{
    public const string Folder = "checkpoint";
    public string Dir { get; } = Path.Combine(outDir, Folder);
    string StatePath => Path.Combine(Dir, "state.json");

    /// <summary>The saved state, or null; refuses a state made with other settings.</summary>
    public JsonObject? Read()
    {
        if (!File.Exists(StatePath)) return null;
        var state = JsonNode.Parse(File.ReadAllText(StatePath))!.AsObject();
        if (state["fingerprint"]?.GetValue<string>() != fingerprint)
            throw new PuzzleException($"{StatePath}: the checkpoint was made with other settings or data; use another --out or delete {Dir}");
        return state;
    }

    /// <summary>False when a saved state exists but was made with other settings.</summary>
    public bool Matches() => !File.Exists(StatePath) || JsonNode.Parse(File.ReadAllText(StatePath))?["fingerprint"]?.GetValue<string>() == fingerprint;

    public static bool Finished(JsonObject? state) => state?["finished"]?.GetValue<bool>() == true;

    /// <summary>Restores masters, optimizer and loader from a state; returns the step.</summary>
    public int Restore(JsonObject state, MixedPrecisionOptimizer optimizer, TokenBatchLoader loader)
    {
        using (var file = SafeTensorsFile.Open(Path.Combine(Dir, state["model_file"]!.GetValue<string>())))
            optimizer.LoadMasters(file.Read);
        optimizer.LoadState(Path.Combine(Dir, state["optimizer_file"]!.GetValue<string>()));
        loader.State = new LoaderState(state["loader_epoch"]!.GetValue<int>(), state["loader_cursor"]!.GetValue<long>());
        return state["step"]!.GetValue<int>();
    }

    public void Save(MixedPrecisionOptimizer optimizer, TokenBatchLoader loader, int step, int steps, long tokensSeen, JsonObject extra)
    {
        Directory.CreateDirectory(Dir);
        string modelFile = $"model-step{step:D7}.safetensors", optimizerFile = $"optimizer-step{step:D7}.bin";
        SafeTensorsWriter.Write(Path.Combine(Dir, modelFile), optimizer.Masters.Select(m => (m.Name, (TorchSharp.torch.Tensor)m.Master)).ToList());
        optimizer.SaveState(Path.Combine(Dir, optimizerFile));
        var state = new JsonObject
        {
            ["format_version"] = 1,
            ["fingerprint"] = fingerprint,
            ["step"] = step,
            ["steps"] = steps,
            ["tokens_seen"] = tokensSeen,
            ["loader_epoch"] = loader.State.Epoch,
            ["loader_cursor"] = loader.State.Cursor,
            ["model_file"] = modelFile,
            ["optimizer_file"] = optimizerFile,
            ["finished"] = false,
        };
        foreach (var (k, v) in extra) state[k] = v?.DeepClone();
        AtomicFile.WriteJson(StatePath, state);
        // The state now names the new files: older checkpoints can go.
        foreach (var old in Directory.GetFiles(Dir, "*-step*.*").Where(f => !f.EndsWith(modelFile) && !f.EndsWith(optimizerFile)))
            File.Delete(old);
    }

    public void MarkFinished(JsonObject extra)
    {
        var state = JsonNode.Parse(File.ReadAllText(StatePath))!.AsObject();
        state["finished"] = true;
        foreach (var (k, v) in extra) state[k] = v?.DeepClone();
        AtomicFile.WriteJson(StatePath, state);
    }

    public static JsonNode? Number(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;
}
