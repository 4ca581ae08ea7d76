using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Shared mechanics of the rules. A rule computes the op's value on both halves and a multiplier
/// <c>m</c> with <c>m · (x − x0) = y − y0</c>; <see cref="Override"/> returns the value with <c>m</c> as its
/// gradient (an autograd node, <see cref="RuleGradients"/>).
/// </summary>
public static class Multipliers
{
    /// <summary>The value <paramref name="value"/>, whose gradient with respect to <paramref name="x"/> is <paramref name="m"/>.</summary>
    public static Tensor Override(Tensor value, Tensor x, Tensor m) => RuleGradients.WithMultiplier(value, x, m);

    /// <summary>
    /// Where multipliers are computed: float32 activations in float64 when <paramref name="promote"/> (the difference
    /// of two float32 numbers is exact in float64; the design note measured float32 token scores within 1e-8 of a
    /// float64 run this way, against 1e-5 without); half precisions always in float32.
    /// </summary>
    public static ScalarType WorkType(ScalarType dtype, bool promote) => dtype switch
    {
        ScalarType.Float16 or ScalarType.BFloat16 => ScalarType.Float32,
        ScalarType.Float32 when promote => ScalarType.Float64,
        _ => dtype,
    };

    /// <summary>
    /// <c>num / den</c> where <c>den ≠ 0</c>, else <paramref name="fallback"/> (the derivative, for <c>x == x0</c>).
    /// No division by zero is ever evaluated. On the CPU the fallback is computed only when some <c>den</c> is 0
    /// (rare past the first layer, and the derivative costs as much as the ratio); on an accelerator it is
    /// always computed, to avoid a device sync.
    /// </summary>
    public static Tensor SafeRatio(Tensor num, Tensor den, Func<Tensor> fallback)
    {
        var zero = den == 0;
        if (den.device.type == TorchSharp.DeviceType.CPU && !zero.any().item<bool>()) return num / den;
        return where(zero, fallback(), num / where(zero, ones_like(den), den));
    }
}
