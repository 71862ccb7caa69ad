using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Puzzle.Checkpoints;
using Puzzle.IO;
using Puzzle.Model;
using Puzzle.Tokenization;
using static TorchSharp.torch;

namespace Puzzle.Parents;

public sealed record RandomParentResult(string OutDir, ModelConfig Config, long Parameters, long Bytes, int Files, double Seconds);

/// <summary>
/// Test parents of real shapes without downloading anything (`puzzle init-random`): an HF Llama directory with the
/// shapes of a named model (or of a given config.json), HF-style random weights written tensor by tensor (an 8B
/// parent never sits in memory whole) and a byte-level BPE tokenizer.json of exactly the model's vocabulary size.
/// </summary>
public static class RandomParent
{
    /// <summary>The published shapes (config.json of the HF repositories) of the parents users bring.</summary>
    public static readonly IReadOnlyDictionary<string, ModelConfig> Presets = new Dictionary<string, ModelConfig>
    {
        ["llama-3.2-1b"] = Llama(vocab: 128_256, hidden: 2048, intermediate: 8192, layers: 16, heads: 32, kv: 8, headDim: 64,
            theta: 500_000, scaling: new RopeScaling("llama3", 32, 1, 4, 8192), maxPositions: 131_072, tied: true),
        ["llama-3.1-8b"] = Llama(vocab: 128_256, hidden: 4096, intermediate: 14_336, layers: 32, heads: 32, kv: 8, headDim: 128,
            theta: 500_000, scaling: new RopeScaling("llama3", 8, 1, 4, 8192), maxPositions: 131_072, tied: false),
        ["smollm2-135m"] = Llama(vocab: 49_152, hidden: 576, intermediate: 1536, layers: 30, heads: 9, kv: 3, headDim: 64,
            theta: 100_000, scaling: null, maxPositions: 8192, tied: true),
        ["llama-3.1-70b"] = Llama(vocab: 128_256, hidden: 8192, intermediate: 28_672, layers: 80, heads: 64, kv: 8, headDim: 128,
            theta: 500_000, scaling: new RopeScaling("llama3", 8, 1, 4, 8192), maxPositions: 131_072, tied: false),
    };

    static ModelConfig Llama(int vocab, int hidden, int intermediate, int layers, int heads, int kv, int headDim, double theta,
        RopeScaling? scaling, int maxPositions, bool tied) => new()
    {
        VocabSize = vocab, HiddenSize = hidden, NumAttentionHeads = heads, HeadDim = headDim,
        Blocks = Enumerable.Repeat(BlockConfig.Llama(kv, intermediate), layers).ToArray(),
        RmsNormEps = 1e-5, RopeTheta = theta, RopeScaling = scaling, MaxPositionEmbeddings = maxPositions, TieWordEmbeddings = tied,
    };

    /// <summary>A preset by name, or an error listing the known ones.</summary>
    public static ModelConfig Preset(string name) => Presets.TryGetValue(name.ToLowerInvariant(), out var c) ? c
        : throw new PuzzleException($"--like '{name}' is not a known model (known: {string.Join(", ", Presets.Keys)})");

    /// <summary>The architecture in an HF config.json file (Llama or DeciLM), validated.</summary>
    public static ModelConfig FromConfigFile(string path)
    {
        if (!File.Exists(path)) throw new PuzzleException($"{path}: config file not found");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new PuzzleException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new PuzzleException($"{path}: malformed JSON: {e.Message}");
        }
        var config = HfConfig.Parse(root, path);
        config.Validate(path);
        return config;
    }

    /// <summary>Writes config.json, generation_config.json, the weights and the tokenizer into <paramref name="outDir"/>.</summary>
    public static RandomParentResult Write(ModelConfig shape, string outDir, ScalarType dtype = ScalarType.BFloat16, long seed = 0,
        long maxShardBytes = 5L << 30, Action<string>? log = null)
    {
        log ??= Log.Info;
        var clock = Stopwatch.StartNew();
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new PuzzleException($"--dtype must be float32, bfloat16 or float16, not {dtype}");
        if (shape.VocabSize < 256 + 2 + 1)
            throw new PuzzleException($"vocab_size ({shape.VocabSize}) must exceed the tokenizer's 256 byte tokens and 2 special tokens");
        // The tokenizer's special tokens sit at the end of its vocabulary; the config names them.
        var config = shape with
        {
            BosTokenId = shape.VocabSize - 2, EosTokenIds = [shape.VocabSize - 1], PadTokenId = null,
            TorchDtype = Checkpoint.TorchDtypeName(dtype),
        };
        config.Validate($"{outDir}/config.json");
        Directory.CreateDirectory(outDir);
        // config.json last: its presence marks a complete checkpoint.
        string configPath = Path.Combine(outDir, "config.json");
        if (File.Exists(configPath)) File.Delete(configPath);

        var merges = SyntheticMerges(config.VocabSize - 256 - 2);
        BpeTrainer.Write(outDir, merges);

        var specs = StreamingWeights.Specs(config, dtype);
        var files = StreamingWeights.WriteWeights(outDir, specs, spec => Values(spec, seed), maxShardBytes,
            new Dictionary<string, string> { ["puzzle_init_random_seed"] = seed.ToString(System.Globalization.CultureInfo.InvariantCulture) });

        string dtypeName = Checkpoint.TorchDtypeName(dtype);
        var json = config.IsHomogeneousLlama ? HfConfig.ToLlama(config, dtypeName) : HfConfig.ToDeciLm(config, dtypeName);
        AtomicFile.WriteJson(Path.Combine(outDir, "generation_config.json"), new JsonObject
        {
            ["bos_token_id"] = config.BosTokenId, ["eos_token_id"] = config.EosTokenIds[0], ["do_sample"] = false,
        });
        AtomicFile.WriteJson(configPath, json);
        long parameters = specs.Sum(s => s.Elements), bytes = specs.Sum(s => s.Bytes);
        log($"init-random: {config.NumLayers} layers, hidden {config.HiddenSize}, vocab {config.VocabSize}: {parameters:N0} parameters " +
            $"({bytes / (double)(1L << 30):F2} GiB {dtypeName}) in {files.Count} file(s) in {clock.Elapsed.TotalSeconds:F1} s -> {outDir}");
        return new RandomParentResult(outDir, config, parameters, bytes, files.Count, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// HF-style init per tensor: ones for norms, normal(0, 0.02) for matrices, from a generator seeded by the seed and
    /// the tensor's name (so a tensor's values do not depend on the others), made in row chunks.
    /// </summary>
    static IEnumerable<Tensor> Values(TensorSpec spec, long seed)
    {
        if (spec.Name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            yield return ones(spec.Shape, dtype: spec.Dtype);
            yield break;
        }
        ulong tensorSeed = BitConverter.ToUInt64(SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}|{spec.Name}")), 0);
        using var generator = new Generator(tensorSeed);
        foreach (var (_, rows) in StreamingWeights.RowChunks(spec))
        {
            long[] shape = [rows, .. spec.Shape.Skip(1)];
            using var fp32 = empty(shape, dtype: ScalarType.Float32).normal_(0, 0.02, generator);
            yield return spec.Dtype == ScalarType.Float32 ? fp32.alias() : fp32.to(spec.Dtype);
        }
    }

    /// <summary>
    /// <paramref name="count"/> distinct byte-level BPE merges: pairs of common characters (space-led first, then
    /// letters, digits, punctuation), then those pairs extended by one more character, and so on. Every merge's parts
    /// exist before it, so the merge list is a valid BPE model; the tokens are 2–4 bytes long like real ones.
    /// </summary>
    public static List<(int Left, int Right)> SyntheticMerges(int count)
    {
        const string common = " etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'-\"!?;:()/&$%*+=<>@#[]_`{|}~\\^\n\t";
        var alphabet = common.Select(ch => (int)(byte)ch).Distinct().ToList();
        var rights = alphabet.Where(b => b != ' ' && b != '\n' && b != '\t').ToList();
        var tokens = BpeTrainer.ByteToUnicode.ToList();
        var seen = new HashSet<string>(tokens, StringComparer.Ordinal);
        var merges = new List<(int, int)>(count);
        var frontier = alphabet.ToList();
        while (merges.Count < count)
        {
            var next = new List<int>();
            foreach (int left in frontier)
                foreach (int right in rights)
                {
                    if (merges.Count == count) return merges;
                    string s = tokens[left] + tokens[right];
                    if (!seen.Add(s)) continue;
                    merges.Add((left, right));
                    next.Add(tokens.Count);
                    tokens.Add(s);
                }
            if (next.Count == 0) throw new PuzzleException($"cannot make {count} distinct merges");
            frontier = next;
        }
        return merges;
    }
}
