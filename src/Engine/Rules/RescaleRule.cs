using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Rescale rule for an elementwise <c>y = g(x)</c>: <c>m = (g(x) − g(x0)) / (x − x0)</c>, and <c>g'(x)</c> where
/// <c>x == x0</c> exactly. Conserves by construction: <c>m Δx = Δy</c>. Closed forms are used where the plain
/// ratio would divide by a tiny number or overflow.
/// </summary>
public static class RescaleRule
{
    /// <summary>Generic rescale with the derivative as the <c>Δx = 0</c> fallback.</summary>
    public static Act Apply(Act a, Func<Tensor, Tensor> g, Func<Tensor, Tensor> derivative, bool promote)
    {
        var x = a.X;
        var x0 = a.Ref;
        Tensor y, y0;
        using (no_grad())
        {
            y = g(x.detach());
            y0 = g(x0);
        }
        var m = Multipliers.InDouble(x, x0, (xd, x0d) =>
            Multipliers.SafeRatio(g(xd) - g(x0d), xd - x0d, derivative(xd)), promote);
        return new Act(Multipliers.Override(y, x, m), y0);
    }

    /// <summary>An activation by kind, each with its exact derivative for the fallback.</summary>
    public static Act Activation(Act a, Activation kind, bool promote) => kind switch
    {
        Ops.Activation.GeluErf => Apply(a, t => PlainOps.Plain(t, kind), GeluErfDerivative, promote),
        Ops.Activation.GeluTanh => Apply(a, PlainOps.GeluTanh, GeluTanhDerivative, promote),
        Ops.Activation.Relu => Apply(a, t => t.relu(), t => (t > 0).to_type(t.dtype), promote),
        Ops.Activation.Tanh => Apply(a, t => t.tanh(), t => 1 - t.tanh().square(), promote),
        Ops.Activation.Sigmoid => Apply(a, t => t.sigmoid(), t => t.sigmoid() * (1 - t.sigmoid()), promote),
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
    /// </summary>
    public static Act Exp(Act a, bool promote)
    {
        var x = a.X;
        var x0 = a.Ref;
        Tensor y, y0;
        using (no_grad())
        {
            y = x.detach().exp();
            y0 = x0.exp();
        }
        var m = Multipliers.InDouble(x, x0, (xd, x0d) =>
        {
            var d = (xd - x0d).abs();
            return Multipliers.SafeRatio(maximum(xd, x0d).exp() * (-(-d).expm1()), d, xd.exp());
        }, promote);
        return new Act(Multipliers.Override(y, x, m), y0);
    }

    /// <summary>
    /// <c>y = log(s)</c>, s &gt; 0: <c>m = log1p(|s − s0| / min(s, s0)) / |s − s0|</c>, <c>1/s</c> where equal.
    /// (<c>log s − log s0 = ± log1p(|Δ| / min)</c>, so the sign cancels against |Δ|.)
    /// </summary>
    public static Act Log(Act a, bool promote)
    {
        var s = a.X;
        var s0 = a.Ref;
        Tensor y, y0;
        using (no_grad())
        {
            y = s.detach().log();
            y0 = s0.log();
        }
        var m = Multipliers.InDouble(s, s0, (sd, s0d) =>
        {
            var d = (sd - s0d).abs();
            return Multipliers.SafeRatio((d / minimum(sd, s0d)).log1p(), d, sd.reciprocal());
        }, promote);
        return new Act(Multipliers.Override(y, s, m), y0);
    }

    /// <summary><c>y = c²</c>: <c>c² − c0² = (c + c0)(c − c0)</c> ⇒ <c>m = c + c0</c> (exact, no division).</summary>
    public static Act Square(Act a, bool promote)
    {
        var c = a.X;
        var c0 = a.Ref;
        Tensor y, y0;
        using (no_grad())
        {
            y = c.detach().square();
            y0 = c0.square();
        }
        var m = Multipliers.InDouble(c, c0, (cd, c0d) => cd + c0d, promote);
        return new Act(Multipliers.Override(y, c, m), y0);
    }

    /// <summary>
    /// <c>r = (v + eps)^(−1/2)</c>: with <c>w = v + eps</c>, <c>r − r0 = −(w − w0) (r r0)² / (r + r0)</c>
    /// ⇒ <c>m = −(r r0)² / (r + r0)</c> (exact, no division by Δ).
    /// </summary>
    public static Act InverseSqrt(Act a, double eps, bool promote)
    {
        var v = a.X;
        var v0 = a.Ref;
        Tensor r, r0;
        using (no_grad())
        {
            r = (v.detach() + eps).rsqrt();
            r0 = (v0 + eps).rsqrt();
        }
        var m = Multipliers.InDouble(v, v0, (vd, v0d) =>
        {
            var rd = (vd + eps).rsqrt();
            var r0d = (v0d + eps).rsqrt();
            return -(rd * r0d).square() / (rd + r0d);
        }, promote);
        return new Act(Multipliers.Override(r, v, m), r0);
    }
}
