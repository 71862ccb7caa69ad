using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace Puzzle.Model;

/// <summary>A bias-free linear map with an HF-named <c>weight</c> [out, in]; created uninitialised (no wasted init).</summary>
public sealed class Projection : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] readonly Parameter _weight;

    public Projection(long inFeatures, long outFeatures, Device device, ScalarType dtype) : base(nameof(Projection))
    {
        _weight = new Parameter(empty(outFeatures, inFeatures, dtype, device));
        RegisterComponents();
    }

    public Parameter Weight => _weight;

    public override Tensor forward(Tensor x) => nn.functional.linear(x, _weight);   // [.., in] -> [.., out]
}

/// <summary>RMSNorm as HF Llama: normalise in float32, cast back, then scale.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] readonly Parameter _weight;
    readonly double _eps;
    // Held for the module's lifetime: an implicit Scalar made per call can be finalized by the GC while libtorch still
    // reads it (seen as a rare "Unknown scalar type" / invalid Scalar in parallel tests).
    readonly Scalar _epsScalar;

    public RmsNorm(long size, double eps, Device device, ScalarType dtype) : base(nameof(RmsNorm))
    {
        _weight = new Parameter(ones(size, dtype, device));
        _eps = eps;
        _epsScalar = eps.ToScalar();
        RegisterComponents();
    }

    public Parameter Weight => _weight;

    public override Tensor forward(Tensor x)                                           // [.., H] -> [.., H]
    {
        using var scope = NewDisposeScope();
        var x32 = x.to(ScalarType.Float32);
        // Both Scalars held: TorchSharp's add_(Scalar) passes a temporary alpha Scalar (1) that the GC may finalize while
        // libtorch reads it (fresh-clone CI runs failed in c10 Scalar::toFloat inside add_, with the eps Scalar kept alive).
        var normed = x32 * x32.square().mean([-1], keepdim: true).add_(_epsScalar, HeldScalars.One).rsqrt_();
        // The Scalar's native handle is passed to add_; without this the JIT may treat the module (and the Scalar) as
        // dead once the field is read, and its finaliser can free it while add_ reads it.
        GC.KeepAlive(_epsScalar);
        return (_weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>Token embedding table (<c>weight</c> [vocab, hidden]).</summary>
public sealed class Embedding : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] readonly Parameter _weight;

    public Embedding(long vocab, long hidden, Device device, ScalarType dtype) : base(nameof(Embedding))
    {
        _weight = new Parameter(empty(vocab, hidden, dtype, device));
        RegisterComponents();
    }

    public Parameter Weight => _weight;

    public override Tensor forward(Tensor ids)                                         // [B, T] -> [B, T, H]
    {
        using var flat = ids.reshape(-1);
        using var rows = _weight.index_select(0, flat);
        return rows.view([.. ids.shape, _weight.shape[1]]);
    }
}

/// <summary>
/// Scalars held for the process's lifetime, for TorchSharp overloads that would otherwise make a temporary one per call
/// (add_(x) passes alpha = 1 as a new Scalar; the GC may finalize it while libtorch still reads it).
/// </summary>
internal static class HeldScalars
{
    public static readonly Scalar One = 1.ToScalar();
}
