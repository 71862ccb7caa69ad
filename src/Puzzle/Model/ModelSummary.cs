using System.Text.Json.Nodes;

namespace Puzzle.Model;

/// <summary>What `puzzle info` reports: per-layer variants, parameter counts, bytes, KV-cache bytes per token.</summary>
public static class ModelSummary
{
    public static string AttentionLabel(AttentionConfig a) => a.NoOp ? "no_op" : a.ReplaceWithLinear ? "linear" : "gqa";
    public static string FfnLabel(FfnConfig f) => f.NoOp ? "no_op" : f.ReplaceWithLinear ? "linear" : "swiglu";

    public static JsonObject ToJson(ModelConfig c, string modelType, int bytesPerParameter, long? checkpointParameters)
    {
        var layers = new JsonArray();
        for (int i = 0; i < c.NumLayers; i++)
        {
            var b = c.Blocks[i];
            layers.Add(new JsonObject
            {
                ["layer"] = i,
                ["attention"] = AttentionLabel(b.Attention),
                ["kv_heads"] = b.Attention.NumKeyValueHeads,
                ["ffn"] = FfnLabel(b.Ffn),
                ["intermediate_size"] = b.Ffn.IntermediateSize,
                ["parameters"] = c.BlockParameters(i),
                ["kv_bytes_per_token"] = c.KvBytesPerToken(b.Attention, bytesPerParameter),
            });
        }
        return new JsonObject
        {
            ["model_type"] = modelType,
            ["hidden_size"] = c.HiddenSize,
            ["num_layers"] = c.NumLayers,
            ["num_attention_heads"] = c.NumAttentionHeads,
            ["head_dim"] = c.HeadDim,
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.MaxPositionEmbeddings,
            ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["rope_theta"] = c.RopeTheta,
            ["rope_scaling"] = c.RopeScaling?.Type,
            ["dtype"] = c.TorchDtype,
            ["parameters"] = c.TotalParameters,
            ["non_block_parameters"] = c.NonBlockParameters,
            ["checkpoint_parameters"] = checkpointParameters,
            ["bytes"] = c.TotalParameters * bytesPerParameter,
            ["kv_bytes_per_token"] = c.KvBytesPerToken(bytesPerParameter),
            ["layers"] = layers,
        };
    }

    public static int BytesPerElement(string torchDtype) => torchDtype switch
    {
        "float32" => 4,
        "float64" => 8,
        _ => 2,
    };
}
