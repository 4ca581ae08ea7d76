using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Rescale rule for an elementwise <c>y = g(x)</c>: <c>m = (g(x) − g(x0)) / (x − x0)</c>, and <c>g'(x)</c> where
/// <c>x == x0</c> exactly. Conserves by construction: <c>m Δx = Δy</c>. Closed forms are used where the plain
/// ratio would divide by a tiny number or overflow.
/// Only the generic ratio divides a difference by a difference, so only it is computed in float64 for float32
/// activations; the closed forms (exp, log, square, inverse square root) are smooth functions of Δ and stay in the
/// activation's precision: measured on the real MiniLM encoder, float32 token scores are 1.0e-6 (relative to the
/// largest score) from a float64 run this way, 6e-7 with every rule promoted, 3.8e-5 with none — and the closed
/// forms run on the attention-sized tensors, where float64 work costs most.
/// </summary>
public static class RescaleRule
{
    /// <summary>
    /// Evaluates <c>g</c> once per half — in float64 for float32 activations when <paramref name="promote"/> (the
    /// difference of two float32 numbers is exact in float64; values and multiplier are rounded once) — and
    /// hands <c>(x, x0, g(x), g(x0))</c> to <paramref name="multiplier"/>.
    /// </summary>
    /// <remarks>
    /// <paramref name="value"/> and <paramref name="value0"/>, when given, are the values the op passes on in place of
    /// g(x) and g(x0) (the same numbers up to rounding, computed another way; see <see cref="SoftmaxRule.Exact"/>).
    /// </remarks>
    public static Act Elementwise(Act a, Func<Tensor, Tensor> g, Func<Tensor, Tensor, Tensor, Tensor, Tensor> multiplier, bool promote,
        Tensor? value = null, Tensor? value0 = null) =>
        ActScope.Run(() =>
        {
            var x = a.X;
            Tensor y, y0, m;
            if (a.IsReferenceOnly)
                using (no_grad()) return Act.ReferenceOnly(value0 ?? g(a.Ref.to_type(Multipliers.WorkType(x.dtype, promote))).to_type(x.dtype));
            using (no_grad())
            {
                var work = Multipliers.WorkType(x.dtype, promote);
                var xd = x.detach().to_type(work);
                var x0d = a.Ref.to_type(work);
                var gx = g(xd);
                var gx0 = g(x0d);
                m = multiplier(xd, x0d, gx, gx0).to_type(x.dtype);
                y = value ?? gx.to_type(x.dtype);
                y0 = value0 ?? gx0.to_type(x.dtype);
            }
            return new Act(Multipliers.Override(y, x, m), y0);
        });

    /// <summary>Generic rescale with the derivative as the <c>Δx = 0</c> fallback.</summary>
    public static Act Apply(Act a, Func<Tensor, Tensor> g, Func<Tensor, Tensor> derivative, bool promote)
    {
        // The fused loop's reference half is g(x0) in float64 rounded once, as Elementwise computes it when promoted.
        if (promote && a.X.dtype == ScalarType.Float32 && a.X.device.type == TorchSharp.DeviceType.CPU && CpuKernels.Enabled && !a.IsReferenceOnly)
        {
            var fused = ActScope.Run(() => FusedSecant(a, g, derivative));
            if (fused.R is not null) return fused;
        }
        return Elementwise(a, g, (x, x0, gx, gx0) => Multipliers.SafeRatio(gx - gx0, x - x0, () => derivative(x)), promote);
    }

    /// <summary>
    /// <see cref="Apply"/> for float32 on the CPU with float64 values: g in float64 by torch, the ratio and both roundings
    /// in one fused loop (<see cref="CpuKernels.TrySecant"/>, bit-identical to the composition); the derivative only
    /// where x == x0, and only at those entries. Returns an Act without a reference when the layout does not suit the kernel.
    /// </summary>
    private static Act FusedSecant(Act a, Func<Tensor, Tensor> g, Func<Tensor, Tensor> derivative)
    {
        Tensor gx0;
        using (no_grad()) gx0 = g(a.Ref.to_type(ScalarType.Float64));
        var x0 = a.Ref;
        var y = FusedSecant(a.X, g, derivative, (x, gx) => (CpuKernels.TrySecant(x, x0, gx, gx0, out var v, out var m, out long equal), v, m, equal),
            () => x0); // one shared row broadcasts
        if (y is null) return new Act(a.X);
        using (no_grad()) return new Act(y, gx0.to_type(ScalarType.Float32));
    }

    /// <summary>
    /// The fused rescale on x (with its gradient): g(x) in float64 by torch, then <paramref name="loop"/> (the kernel against
    /// the references) for the value and the multipliers; the derivative where x == x0, against each row's reference
    /// <paramref name="referencePerRow"/> (built only then). The input half's value with its multipliers attached, or null
    /// where the kernel does not take the layout.
    /// </summary>
    private static Tensor? FusedSecant(Tensor input, Func<Tensor, Tensor> g, Func<Tensor, Tensor> derivative,
        Func<Tensor, Tensor, (bool Taken, Tensor Y, Tensor M, long Equal)> loop, Func<Tensor> referencePerRow)
    {
        Tensor y, m;
        using (no_grad())
        {
            var x = input.detach();
            var gx = g(x.to_type(ScalarType.Float64));
            (bool taken, y, m, long equal) = loop(x, gx);
            if (!taken) return null;
            if (equal > 0)
            {
                // The derivative at the few entries where x == x0 only (a float32 collision: 1 in 3 million GELU inputs
                // of a bert-base layer now and then); over the whole tensor it cost 70 ms, ten times the rest of the rule.
                var same = (x == referencePerRow()).reshape(-1).nonzero().squeeze(1);
                var at = x.reshape(-1).index_select(0, same).to_type(ScalarType.Float64);
                m.reshape(-1).index_copy_(0, same, derivative(at).to_type(ScalarType.Float32));
            }
        }
        return Multipliers.Override(y, input, m);
    }

    /// <summary>
    /// The rescale rule for a padded batch of several lengths: x [B, W, …] against each length's reference as its tape
    /// holds it (<paramref name="references"/>: group j's [1, l_j, …]; row b against group <c>groupOfRow[b]</c>'s, and
    /// 0 past l_j, the padding's reference), in one fused loop (<see cref="CpuKernels.TrySecantGrouped"/>), with g(x0)
    /// computed once per length on its own positions rather than once per text. Only the input half comes back (its
    /// value, carrying the multipliers): the caller replays the reference half from a tape. Null where the fused loop
    /// does not apply (then the caller runs <see cref="Activation"/> with the reference copied out to every row).
    /// </summary>
    /// <param name="packedLengths">
    /// Each text's tokens when x is packed ([1, N, …]: the texts' tokens one after another, <see cref="Ops.TokenPacking"/>;
    /// text b's against its group's whole tape, no padding); null for the padded layout.
    /// </param>
    internal static Tensor? GroupedActivation(Tensor x, IReadOnlyList<Tensor> references, long[] groupOfRow, long[]? packedLengths, Activation kind, bool promote)
    {
        if (!promote || x.dtype != ScalarType.Float32 || x.device.type != TorchSharp.DeviceType.CPU || !CpuKernels.Enabled) return null;
        var (g, derivative) = Functions(kind);
        using var scope = NewDisposeScope();
        List<Tensor> gx0;
        double padding;
        using (no_grad())
        {
            gx0 = references.Select(r => g(r.to_type(ScalarType.Float64))).ToList();
            padding = g(zeros(1, ScalarType.Float64)).item<double>(); // g(0): what g gives a padded reference of 0
        }
        var y = FusedSecant(x, g, derivative,
            (xd, gx) => (CpuKernels.TrySecantGrouped(xd, gx, references, gx0, padding, groupOfRow, packedLengths, out var v, out var m, out long equal), v, m, equal),
            () => packedLengths is null ? PaddedPerRow(x, references, groupOfRow) : PackedPerRow(references, groupOfRow));
        if (y is not null) scope.MoveToOuter(y);
        return y;
    }

    /// <summary>Each row's reference [B, W, …]: its group's [1, l, …] in its first l positions, 0 past them.</summary>
    private static Tensor PaddedPerRow(Tensor x, IReadOnlyList<Tensor> references, long[] groupOfRow)
    {
        var perRow = zeros_like(x);
        for (long b = 0; b < groupOfRow.Length; b++)
        {
            var r = references[(int)groupOfRow[b]];
            perRow.narrow(0, b, 1).narrow(1, 0, r.shape[1]).copy_(r);
        }
        return perRow;
    }

    /// <summary>Each text's reference packed like x [1, N, …]: its group's whole [1, l, …], text after text.</summary>
    private static Tensor PackedPerRow(IReadOnlyList<Tensor> references, long[] groupOfRow) =>
        cat(groupOfRow.Select(g => references[(int)g]).ToArray(), 1);

    /// <summary>An activation by kind, each with its exact derivative for the fallback.</summary>
    public static Act Activation(Act a, Activation kind, bool promote)
    {
        var (g, derivative) = Functions(kind);
        return Apply(a, g, derivative, promote);
    }

    /// <summary>Each activation's function and its exact derivative (the fallback where x == x0).</summary>
    private static (Func<Tensor, Tensor> G, Func<Tensor, Tensor> Derivative) Functions(Activation kind) => kind switch
    {
        Ops.Activation.GeluErf => (t => PlainOps.Plain(t, kind), GeluErfDerivative),
        Ops.Activation.GeluTanh => (PlainOps.GeluTanh, GeluTanhDerivative),
        Ops.Activation.Relu => (t => t.relu(), t => (t > 0).to_type(t.dtype)),
        Ops.Activation.Tanh => (t => t.tanh(), t => 1 - t.tanh().square()),
        Ops.Activation.Sigmoid => (t => t.sigmoid(), t => t.sigmoid() * (1 - t.sigmoid())),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary><c>GELU(x) = x Φ(x)</c> ⇒ <c>GELU'(x) = Φ(x) + x φ(x)</c>.</summary>
    public static Tensor GeluErfDerivative(Tensor x) =>
        0.5 * (1 + (x / Math.Sqrt(2)).erf()) + x * (-0.5 * x.square()).exp() / Math.Sqrt(2 * Math.PI);

    /// <summary><c>g = ½x(1+t)</c>, <c>t = tanh(k(x + 0.044715x³))</c> ⇒ <c>g' = ½(1+t) + ½x(1−t²)k(1 + 3·0.044715x²)</c>.</summary>
    public static Tensor GeluTanhDerivative(Tensor x)
    {
        double k = Math.Sqrt(2 / Math.PI);
        var t = (k * (x + 0.044715 * x.pow(3))).tanh();
        return 0.5 * (1 + t) + 0.5 * x * (1 - t.square()) * k * (1 + 3 * 0.044715 * x.square());
    }

    /// <summary>
    /// <c>y = exp(x)</c>, Δ = x − x0: <c>m = exp(max(x, x0)) · (−expm1(−|Δ|)) / |Δ|</c>, <c>exp(x)</c> where Δ = 0.
    /// Equal to <c>exp(x0)·expm1(Δ)/Δ</c>, but bounded by <c>exp(max)</c> and never NaN for large Δ in float32.
    /// (<c>exp(max(x, x0)) = max(e, e0)</c>: no third exponential.)
    /// </summary>
    public static Act Exp(Act a, bool promote, Tensor? value = null, Tensor? value0 = null) =>
        Elementwise(a, t => t.exp(), (x, x0, e, e0) =>
        {
            var d = (x - x0).abs();
            return Multipliers.SafeRatio(maximum(e, e0) * (-(-d).expm1()), d, () => e);
        }, promote: false, value, value0);

    /// <summary>
    /// <c>y = log(s)</c>, s &gt; 0: <c>m = log1p(|s − s0| / min(s, s0)) / |s − s0|</c>, <c>1/s</c> where equal.
    /// (<c>log s − log s0 = ± log1p(|Δ| / min)</c>, so the sign cancels against |Δ|.)
    /// </summary>
    public static Act Log(Act a, bool promote) =>
        Elementwise(a, t => t.log(), (s, s0, _, _) =>
        {
            var d = (s - s0).abs();
            return Multipliers.SafeRatio((d / minimum(s, s0)).log1p(), d, () => s.reciprocal());
        }, promote: false);

    /// <summary><c>y = c²</c>: <c>c² − c0² = (c + c0)(c − c0)</c> ⇒ <c>m = c + c0</c> (exact, no division).</summary>
    public static Act Square(Act a, bool promote) =>
        Elementwise(a, t => t.square(), (c, c0, _, _) => c + c0, promote: false);

    /// <summary>
    /// <c>r = (v + eps)^(−1/2)</c>: with <c>w = v + eps</c>, <c>r − r0 = −(w − w0) (r r0)² / (r + r0)</c>
    /// ⇒ <c>m = −(r r0)² / (r + r0)</c> (exact, no division by Δ).
    /// </summary>
    public static Act InverseSqrt(Act a, double eps, bool promote) =>
        Elementwise(a, t => InverseSqrtValue(t, eps), (_, _, r, r0) => InverseSqrtMultiplier(r, r0), promote: false);

    /// <summary><c>(v + eps)^(−1/2)</c>.</summary>
    internal static Tensor InverseSqrtValue(Tensor v, double eps) => (v + eps).rsqrt();

    /// <summary>The inverse square root rule's multiplier from both halves' values: <c>−(r r0)² / (r + r0)</c>.</summary>
    internal static Tensor InverseSqrtMultiplier(Tensor r, Tensor r0) => -(r * r0).square() / (r + r0);
}
