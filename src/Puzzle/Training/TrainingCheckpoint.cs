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
        if (Valid() is not { } field) return null;
        var state = field.Object();
        if (field["fingerprint"].OptionalString() != fingerprint)
            throw new PuzzleException($"{StatePath}: the checkpoint was made with other settings or data; use another --out or delete {Dir}");
        return state;
    }

    /// <summary>False when a saved state exists but was made with other settings.</summary>
    public bool Matches() => Valid() is not { } state || state["fingerprint"].OptionalString() == fingerprint;

    /// <summary>state.json when it is whole and names files that exist; a torn one is discarded (loudly) and training restarts.</summary>
    JsonField? Valid() => JsonFile.ReadDerived(StatePath, s =>
        s["fingerprint"].String().Length > 0 && s["step"].Int() >= 0 && s["loader_epoch"].Int() >= 0 && s["loader_cursor"].Long() >= 0 &&
        File.Exists(Path.Combine(Dir, s["model_file"].String())) && File.Exists(Path.Combine(Dir, s["optimizer_file"].String())) &&
        s["finished"].OptionalBool() is not null);

    public static bool Finished(JsonObject? state) => state?["finished"]?.GetValue<bool>() == true;

    /// <summary>Restores masters, optimizer and loader from a state; returns the step.</summary>
    public int Restore(JsonObject state, MixedPrecisionOptimizer optimizer, TokenBatchLoader loader)
    {
        var s = new JsonField(state, StatePath, "");
        using (var file = SafeTensorsFile.Open(Path.Combine(Dir, s["model_file"].String())))
            optimizer.LoadMasters(file.Read);
        optimizer.LoadState(Path.Combine(Dir, s["optimizer_file"].String()));
        loader.State = new LoaderState(s["loader_epoch"].Int(), s["loader_cursor"].Long());
        return s["step"].Int();
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
        var state = JsonFile.ReadObject(StatePath);
        state["finished"] = true;
        foreach (var (k, v) in extra) state[k] = v?.DeepClone();
        AtomicFile.WriteJson(StatePath, state);
    }

    public static JsonNode? Number(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;
}
