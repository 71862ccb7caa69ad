using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;

namespace Puzzle.Stages;

/// <summary>Stage 1: RUN/parent.json, what the parent is (layers, width, parameters, KV bytes per token, fingerprint).</summary>
public static class ParentStage
{
    public static void Run(RunDirectory run)
    {
        var config = HfConfig.Read(run.ParentDir);
        AtomicFile.WriteJson(run.ParentInfo, new JsonObject
        {
            ["format_version"] = 1, ["path"] = run.ParentDir, ["fingerprint"] = Fingerprint.OfModel(run.ParentDir),
            ["layers"] = config.NumLayers, ["hidden_size"] = config.HiddenSize, ["parameters"] = config.TotalParameters,
            ["kv_bytes_per_token_bf16"] = config.KvBytesPerToken(2),
        });
    }
}
