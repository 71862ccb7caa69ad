using System.Diagnostics;
using Puzzle.Model;
using Puzzle.Runtime;
using static TorchSharp.torch;

namespace Puzzle.Benchmarks;

/// <summary>
/// Where one generation of <see cref="EngineParity.Config"/> spends its time, per decode step (issue 16): the whole
/// step, then each part of it timed alone at the decode shapes (batch B, one new token, a cache of P + G/2
/// positions), and the bare cost of one TorchSharp call. In-process, so the figures are relative: run it under the
/// bench lock and compare the parts, not absolute speeds across runs.
///   flock /tmp/puzzle-bench.lock dotnet run -c Release --project benchmarks/Puzzle.Benchmarks -- engine-profile [batch=16] [bfloat16|float32] [prompt=128] [gen=128]
/// </summary>
public static class EngineProfile
{
    public static void Run(int batch, string dtypeName, int prompt, int generation)
    {
        var dtype = Puzzle.Checkpoints.Checkpoint.ParseDtype(dtypeName);
        using var noGrad = no_grad();
        using var model = new CausalLm(EngineParity.Config, CPU, dtype).InitializeRandom(1);
        var random = new Random(batch);
        int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, prompt).Select(_ => random.Next(4096)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = generation, StopAtEos = false };
        TextGenerator.Generate(model, prompts, options, []);                                 // warm-up
        var results = Enumerable.Range(0, 3).Select(_ => TextGenerator.Generate(model, prompts, options, [])).ToArray();
        double prefill = results.Select(r => r.PrefillSeconds).Order().ElementAt(1);
        double decode = results.Select(r => r.DecodeSeconds).Order().ElementAt(1);
        Console.WriteLine($"engine profile: batch {batch}, {dtype}, prompt {prompt}, generation {generation}, {get_num_threads()} threads");
        Console.WriteLine($"generate (median of 3): prefill {prefill * 1e3:F1} ms ({batch * prompt / prefill:N0} tokens/s), " +
                          $"decode {decode * 1e3:F1} ms = {decode / (generation - 1) * 1e3:F3} ms/step ({batch * (generation - 1) / decode:N0} tokens/s), " +
                          $"end-to-end {batch * generation / (prefill + decode):N0} tokens/s");

        // Decode-shaped parts, each timed alone over many calls.
        int past = prompt + generation / 2;
        model.Fuse();
        using var cache = model.NewCache(batch, past + 1);
        using (var ids = randint(4096, [batch, past], dtype: ScalarType.Int64))
        using (var l = model.Forward(ids, cache, lastOnly: true)) { }
        var c = model.Config;
        using var h = randn(batch, 1, c.HiddenSize).to(dtype);
        using var token = randint(4096, [batch, 1], dtype: ScalarType.Int64);
        var (positions, mask) = model.PositionsAndMask(batch, 1, past, null);
        var (cos, sin) = model.Rotary.For(positions, dtype);
        var layer = model.Layer(0);
        var attention = (GqaAttention)layer.SelfAttn!;
        var inputs = new AttentionInputs(cos, sin, mask, cache, 0);
        using var logits = randn(batch, c.VocabSize).to(dtype);
        var parts = new (string Name, Action Body)[]
        {
            ("one TorchSharp call (h.add(h))", () => { using var _ = h.add(h); }),
            ("one view (h.view)", () => { using var _ = h.view(batch, c.HiddenSize); }),
            ("empty dispose scope", () => { using var _ = NewDisposeScope(); }),
            ("whole decode step (Forward with cache, last only)", () => { cache.Length = past; using var _ = model.Forward(token, cache, lastOnly: true); }),
            ("positions + mask + rope tables", () =>
            {
                using var scope = NewDisposeScope();
                var (p, _) = model.PositionsAndMask(batch, 1, past, null);
                model.Rotary.For(p, dtype);
            }),
            ("embedding", () => { using var _ = model.Model.EmbedTokens.call(token); }),
            ("layer 0 (attention + FFN halves)", () => { cache.Length = past; using var _ = layer.Forward(h, inputs); }),
            ("  rms norm", () => { using var _ = layer.InputLayernorm!.call(h); }),
            ("  attention sublayer (fused qkv, rope, cache, attention, o)", () => { cache.Length = past; using var _ = attention.Forward(h, inputs); }),
            ("    qkv linear", () => { using var _ = attention.QProj.call(h); using var k = attention.KProj.call(h); using var v = attention.VProj.call(h); }),
            ("    o linear", () => { using var _ = attention.OProj.call(h); }),
            ("  ffn sublayer (fused gate+up)", () => { using var _ = layer.Mlp!.call(h); }),
            ("final norm + lm head", () => { using var n = model.Model.Norm.call(h); using var _ = nn.functional.linear(n, model.LmHeadWeight); }),
            ("argmax", () => { using var _ = logits.argmax(-1); }),
            ("argmax + copy to host", () => { using var a = logits.argmax(-1); a.data<long>().ToArray(); }),
        };
        foreach (var (name, body) in parts)
        {
            for (int i = 0; i < 20; i++) body();
            int n = 0;
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < 0.5 || n < 20) { body(); n++; }
            Console.WriteLine($"{clock.Elapsed.TotalMilliseconds * 1e3 / n,10:F1} µs  {name}");
        }
        model.Unfuse();
        positions.Dispose();
        mask?.Dispose();
        cos.Dispose();
        sin.Dispose();
    }
}

/// <summary>Generations of <see cref="EngineParity.Config"/> back to back for a while (for an outside profiler such as perf).</summary>
public static class DecodeLoop
{
    public static void Run(int batch, string dtypeName, double seconds)
    {
        var dtype = Puzzle.Checkpoints.Checkpoint.ParseDtype(dtypeName);
        using var model = new CausalLm(EngineParity.Config, CPU, dtype).InitializeRandom(1);
        var random = new Random(batch);
        int[][] prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, 128).Select(_ => random.Next(4096)).ToArray()).ToArray();
        var options = new GenerationOptions { MaxNewTokens = 128, StopAtEos = false };
        var clock = Stopwatch.StartNew();
        var decode = new List<double>();
        while (clock.Elapsed.TotalSeconds < seconds) decode.Add(TextGenerator.Generate(model, prompts, options, []).DecodeSeconds / 127 * 1e3);
        Console.WriteLine($"decode-loop: {decode.Count} generations, ms/step: {string.Join(" ", decode.Select(d => d.ToString("F2")))}");
    }
}
