using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;
namespace Puzzle.Benchmarks;
public static class OpsProbe
{
    public static void Run(string[] args)
    {
        int threads = int.Parse(args[0]);

        torch.set_num_threads(threads);
        using var ng = no_grad();
        var dt = args.Length > 1 && args[1] == "f32" ? ScalarType.Float32 : ScalarType.BFloat16;
        int B = args.Length > 2 ? int.Parse(args[2]) : 16, H = 384, nH = 6, nKV = 2, hd = 64, S = 192, G = 3;
        var x = randn(B, 1, H).to(dt);
        var wqkv = (randn(640 + 512, H) * 0.02).to(dt);
        var wqkv0 = (randn(640, H) * 0.02).to(dt);
        var wgu = (randn(2048, H) * 0.02).to(dt);
        var wd = (randn(H, 1024) * 0.02).to(dt);
        var wlm = (randn(4096, H) * 0.02).to(dt);
        var kc = randn(B, nKV, S, hd).to(dt); var vc = randn(B, nKV, S, hd).to(dt);
        var q = randn(B, nKV, G, hd).to(dt);
        var cos = randn(B, 1, 1, hd).to(dt); var sin = randn(B, 1, 1, hd).to(dt);
        var qk = randn(B, nH + nKV, 1, hd).to(dt);
        var act = randn(B, 1, 1024).to(dt);
        var w = ones(H).to(dt);
        void T(string name, Action a)
        {
            for (int i = 0; i < 50; i++) a();
            var all = new List<double>();
            for (int r = 0; r < 30; r++)
            {
                var sw = Stopwatch.StartNew(); int n = 0;
                while (n < 20) { a(); n++; }
                all.Add(sw.Elapsed.TotalMilliseconds * 1e3 / n);
            }
            all.Sort();
            Console.WriteLine($"{all[0],9:F1} min {all[all.Count/2],9:F1} med µs  {name}");
        }
        T($"add [{B},1,384]", () => { using var _ = x.add(x); });
        T("alias", () => { using var _ = x.alias(); });
        T("view", () => { using var _ = x.view(B, H); });
        T("linear qkv 640", () => { using var _ = nn.functional.linear(x, wqkv0); });
        T("linear qkv+rot 1152", () => { using var _ = nn.functional.linear(x, wqkv); });
        T("linear gate_up 2048", () => { using var _ = nn.functional.linear(x, wgu); });
        T("linear down", () => { using var _ = nn.functional.linear(act, wd); });
        T("linear lm head 4096", () => { using var _ = nn.functional.linear(x, wlm); });
        T("rmsnorm (8 ops)", () => { using var s = NewDisposeScope(); var x32 = x.to(ScalarType.Float32); var n = x32 * (x32.pow(2).mean([-1], keepdim: true) + 1e-5).rsqrt(); var r = w * n.to(x.dtype); });
        T("manual attention decode", () => {
            using var s = NewDisposeScope();
            var sc = q.matmul(kc.transpose(-1, -2)).mul_(0.125);
            var p = sc.dtype == ScalarType.Float32 ? sc.softmax(-1) : sc.softmax(-1, ScalarType.Float32).to(sc.dtype);
            var c = p.matmul(vc);
        });
        T("sdpa decode", () => { using var _ = nn.functional.scaled_dot_product_attention(q, kc, vc, null, 0, false); });
        T("rope 7 ops", () => { using var s = NewDisposeScope(); long half = 32; var rot = cat([-qk.narrow(-1, half, half), qk.narrow(-1, 0, half)], -1); var r = qk * cos + rot * sin; });
        T("rope 3 ops", () => { using var s = NewDisposeScope(); var r = (qk * cos).add_(qk * sin); });
        T("argmax lm", () => { using var l = nn.functional.linear(x, wlm); using var a = l.argmax(-1); });
        var lg = randn(B, 4096).to(dt);
        T("argmax logits", () => { using var a = lg.argmax(-1); });
        T("to f32 + argmax logits", () => { using var f = lg.to(ScalarType.Float32); using var a = f.argmax(-1); });
        T("max(dim) logits", () => { var (m, i) = lg.max(-1); m.Dispose(); i.Dispose(); });
        T("softmax f32", () => { using var s = NewDisposeScope(); var a = kc.softmax(-1, ScalarType.Float32); });
        
    }
}

public static class PrefillProbe
{
    public static void Run(string[] args)
    {
        torch.set_num_threads(int.Parse(args[0]));
        using var ng = no_grad();
        var dt = args.Length > 1 && args[1] == "f32" ? ScalarType.Float32 : ScalarType.BFloat16;
        int B = 16, T = 128, H = 384, nH = 6, nKV = 2, hd = 64, G = 3;
        var x = randn(B, T, H).to(dt);
        var wqkv0 = (randn(640, H) * 0.02).to(dt);
        var wo = (randn(H, H) * 0.02).to(dt);
        var wgu = (randn(2048, H) * 0.02).to(dt);
        var wd = (randn(H, 1024) * 0.02).to(dt);
        var gu = randn(B, T, 2048).to(dt);
        var act = randn(B, T, 1024).to(dt);
        var q = randn(B, nH, T, hd).to(dt); var k = randn(B, nKV, T, hd).to(dt); var v = randn(B, nKV, T, hd).to(dt);
        var cos = randn(1, 1, T, hd).to(dt); var sin = randn(1, 1, T, hd).to(dt);
        var mask = Puzzle.Model.CausalLm.AdditiveMask(ones(T, T, dtype: ScalarType.Bool).tril(), dt).view(1, 1, 1, T, T);
        var w = ones(H).to(dt);
        void T_(string name, Action a)
        {
            for (int i = 0; i < 3; i++) a();
            var all = new List<double>();
            for (int r = 0; r < 9; r++) { var sw = Stopwatch.StartNew(); a(); all.Add(sw.Elapsed.TotalMilliseconds * 1e3); }
            all.Sort();
            Console.WriteLine($"{all[0],9:F0} min {all[all.Count / 2],9:F0} med µs  {name}");
        }
        T_("linear qkv 640", () => { using var _ = nn.functional.linear(x, wqkv0); });
        T_("linear o", () => { using var _ = nn.functional.linear(x, wo); });
        T_("linear gate_up 2048", () => { using var _ = nn.functional.linear(x, wgu); });
        T_("linear down", () => { using var _ = nn.functional.linear(act, wd); });
        T_("silu*mul", () => { using var s = NewDisposeScope(); var a = nn.functional.silu(gu.narrow(-1, 0, 1024)).mul_(gu.narrow(-1, 1024, 1024)); });
        T_("rmsnorm", () => { using var s = NewDisposeScope(); var x32 = x.to(ScalarType.Float32); var n = x32 * (x32.pow(2).mean([-1], keepdim: true) + 1e-5).rsqrt(); var r = w * n.to(x.dtype); });
        T_("rope q", () => { using var s = NewDisposeScope(); var r = Puzzle.Model.RotaryEmbedding.Apply(q, cos, sin); });
        T_("manual attention", () =>
        {
            using var s = NewDisposeScope();
            var qg = q.reshape(B, nKV, G * T, hd);
            var sc = qg.matmul(k.transpose(-1, -2)).mul_(0.125);
            sc = (sc.view(B, nKV, G, T, T) + mask).view(B, nKV, G * T, T);
            var p = sc.dtype == ScalarType.Float32 ? sc.softmax(-1) : sc.softmax(-1, ScalarType.Float32).to(sc.dtype);
            var c = p.matmul(v).view(B, nH, T, hd).transpose(1, 2).reshape(B, T, nH * hd);
        });
        T_("sdpa causal, expanded kv", () =>
        {
            using var s = NewDisposeScope();
            var ke = k.repeat_interleave(G, 1); var ve = v.repeat_interleave(G, 1);
            var c = nn.functional.scaled_dot_product_attention(q, ke, ve, null, 0, true).transpose(1, 2).reshape(B, T, nH * hd);
        });
    }
}

/// <summary>
/// Linear-map variants at decode shapes (issue 16): linear(x, W[out, in]) against x.mm(Wᵀ) with a pre-transposed
/// contiguous copy, W.mv(x) at batch 1, each hot (one weight) and cold (cycling through 8 copies, as 8 layers do).
///   linear-probe THREADS [bf16|f32] [BATCH]
/// </summary>
public static class LinearProbe
{
    public static void Run(string[] args)
    {
        torch.set_num_threads(int.Parse(args[0]));
        using var ng = no_grad();
        var dt = args.Length > 1 && args[1] == "f32" ? ScalarType.Float32 : ScalarType.BFloat16;
        int B = args.Length > 2 ? int.Parse(args[2]) : 16;
        foreach (var (name, outF, inF) in new[] { ("qkv", 640, 384), ("o", 384, 384), ("gate_up", 2048, 384), ("down", 384, 1024), ("lm head", 4096, 384) })
        {
            var w = Enumerable.Range(0, 8).Select(_ => (randn(outF, inF) * 0.02).to(dt)).ToArray();
            var wt = w.Select(x => x.t().contiguous()).ToArray();
            var x3 = randn(B, 1, inF).to(dt);
            var x2 = x3.view(B, inF);
            var x1 = x3.view(-1);
            void T(string what, Func<int, Tensor> f)
            {
                foreach (bool cold in new[] { false, true })
                {
                    for (int i = 0; i < 40; i++) f(cold ? i % 8 : 0).Dispose();
                    var all = new List<double>();
                    for (int r = 0; r < 15; r++)
                    {
                        var sw = Stopwatch.StartNew();
                        for (int i = 0; i < 16; i++) f(cold ? i % 8 : 0).Dispose();
                        all.Add(sw.Elapsed.TotalMilliseconds * 1e3 / 16);
                    }
                    all.Sort();
                    Console.WriteLine($"{all[all.Count / 2],9:F1} µs  {name} {outF}x{inF} {what} {(cold ? "cold" : "hot")}");
                }
            }
            T("linear(x, W)", i => nn.functional.linear(x3, w[i]));
            T("x2d.mm(Wt)", i => x2.mm(wt[i]));
            T("x3d.matmul(Wt)", i => x3.matmul(wt[i]));
            T("x2d.mm(W.t())", i => x2.mm(w[i].t()));
            if (B == 1) T("W.mv(x)", i => w[i].mv(x1));
        }
    }
}

/// <summary>
/// Decode attention over views of a preallocated KV cache (capacity 256, 192 positions cached), batch B, 6 query heads
/// on 2 KV heads: the engine's matmul/softmax/matmul against scaled_dot_product_attention on the same views.
///   attention-probe THREADS [bf16|f32] [BATCH]
/// </summary>
public static class AttentionProbe
{
    public static void Run(string[] args)
    {
        torch.set_num_threads(int.Parse(args[0]));
        using var ng = no_grad();
        var dt = args.Length > 1 && args[1] == "f32" ? ScalarType.Float32 : ScalarType.BFloat16;
        int B = args.Length > 2 ? int.Parse(args[2]) : 16, nKV = 2, hd = 64, S = 192, G = 3, cap = 256;
        var kc = randn(B, nKV, cap, hd).to(dt); var vc = randn(B, nKV, cap, hd).to(dt);
        var k = kc.narrow(2, 0, S); var v = vc.narrow(2, 0, S);
        var kCont = k.contiguous(); var vCont = v.contiguous();
        var q = randn(B, nKV, G, hd).to(dt);
        void T(string name, Action a)
        {
            for (int i = 0; i < 30; i++) a();
            var all = new List<double>();
            for (int r = 0; r < 15; r++)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < 16; i++) a();
                all.Add(sw.Elapsed.TotalMilliseconds * 1e3 / 16);
            }
            all.Sort();
            Console.WriteLine($"{all[0],9:F1} min {all[all.Count / 2],9:F1} med µs  {name}");
        }
        Tensor Manual(Tensor kk, Tensor vv)
        {
            using var s = NewDisposeScope();
            var sc = q.matmul(kk.transpose(-1, -2)).mul_(0.125);
            var p = sc.dtype == ScalarType.Float32 ? sc.softmax(-1) : sc.softmax(-1, ScalarType.Float32).to(sc.dtype);
            return p.matmul(vv).MoveToOuterDisposeScope();
        }
        T("manual on cache views", () => Manual(k, v).Dispose());
        T("manual on contiguous k, v", () => Manual(kCont, vCont).Dispose());
        T("k.contiguous() + v.contiguous()", () => { using var a = k.contiguous(); using var b = v.contiguous(); });
        T("sdpa on cache views", () => nn.functional.scaled_dot_product_attention(q, k, v).Dispose());
        T("sdpa on contiguous k, v", () => nn.functional.scaled_dot_product_attention(q, kCont, vCont).Dispose());
        using (var a = Manual(k, v).to(ScalarType.Float32))
        using (var b = nn.functional.scaled_dot_product_attention(q, k, v).to(ScalarType.Float32))
        using (var d = (a - b).abs().max())
            Console.WriteLine($"max |manual - sdpa| = {d.item<float>()}");
    }
}
