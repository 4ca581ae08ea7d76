using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// LayerNorm over the last dimension, decomposed into conserving steps:
/// <c>a = x − mean(x)</c> (linear); <c>q = a²</c> (square rule, m = a + a0); <c>v = mean(q)</c> (linear);
/// <c>r = (v + eps)^(−1/2)</c> (closed-form rescale); <c>n = a · r</c> (product rule); <c>y = γ n + β</c> (linear).
/// </summary>
public static class LayerNormRule
{
    public static Act Apply(TensorOps ops, Act x, Tensor weight, Tensor bias, double eps, bool promote) =>
        ActScope.Run(() => Decompose(ops, x, weight, bias, eps, promote));

    private static Tensor Center(Tensor t) => t - t.mean(new long[] { -1 }, keepdim: true);

    private static Tensor Variance(Tensor squared) => squared.mean(new long[] { -1 }, keepdim: true);

    private static Act Decompose(TensorOps ops, Act x, Tensor weight, Tensor bias, double eps, bool promote)
    {
        var centered = ops.Map(x, Center);
        var squared = RescaleRule.Square(centered, promote);
        var variance = ops.Map(squared, Variance);
        var inverseStd = RescaleRule.InverseSqrt(variance, eps, promote);
        var normalized = ProductRule.Mul(centered, inverseStd);
        return ops.Map(normalized, t => t * weight + bias);
    }

    /// <summary>
    /// What the rule's steps compute on the reference half <paramref name="r"/> and a pass needs of it: the centered
    /// reference a0 (in r's precision) and r0 = (v0 + eps)^(−1/2) in the precision the inverse square root rule computes
    /// its multiplier in (float32 for half precisions, which round the r0 they pass on). The same operations as
    /// <see cref="Apply"/> on the reference, so the same bits. A reference tape keeps these in place of r: a pass that
    /// replays them (<see cref="InputHalf"/>) computes nothing on the reference.
    /// </summary>
    internal static (Tensor Centered, Tensor InverseStd) ReferenceHalf(Tensor r, double eps)
    {
        using var _ = no_grad();
        var work = Multipliers.WorkType(r.dtype, promote: false); // as the closed forms compute (RescaleRule.Elementwise)
        var centered = Center(r);
        var variance = Variance(centered.to_type(work).square().to_type(r.dtype));
        return (centered, RescaleRule.InverseSqrtValue(variance.to_type(work), eps));
    }

    /// <summary>
    /// The rule's input half, its reference half given as <see cref="ReferenceHalf"/> computes it: what a pass that
    /// replays a tape runs. <paramref name="plusCentered0"/> adds the centered reference a0 to a tensor of x's shape (in
    /// that tensor's precision; each row its own reference), <paramref name="inverseStd0"/> gives r0 for every row, of
    /// the variance's shape. The same formulas as <see cref="Apply"/>: the square rule's multiplier a + a0 (computed
    /// once, also the product rule's mean ā = (a + a0)/2 where the closed forms run in the activation's precision), the
    /// inverse square root's from r and r0, the product's b̄ = (r + r0)/2; so the same bits (a cached reference gives
    /// what one carried through the pass gives: MixedLengthBatchTests).
    /// </summary>
    internal static Act InputHalf(TensorOps ops, Tensor x, Func<Tensor, Tensor> plusCentered0, Func<Tensor, Tensor> inverseStd0,
        Tensor weight, Tensor bias, double eps) =>
        ActScope.Run(() =>
        {
            var dtype = x.dtype;
            var work = Multipliers.WorkType(dtype, promote: false);
            var centered = ops.Map(new Act(x), Center).X;
            Tensor squareMultiplier, aMean;
            Tensor squared;
            using (no_grad())
            {
                var c = centered.detach();
                var cw = c.to_type(work);
                var sum = plusCentered0(cw); // the square rule's multiplier a + a0 (RescaleRule.Square)
                squareMultiplier = sum.to_type(dtype);
                aMean = (work == dtype ? sum : plusCentered0(c)) * 0.5;
                squared = cw.square().to_type(dtype);
            }
            var variance = ops.Map(new Act(Multipliers.Override(squared, centered, squareMultiplier)), Variance).X;
            Tensor inverseStd, inverseStdMultiplier, bMean;
            using (no_grad())
            {
                var r = RescaleRule.InverseSqrtValue(variance.detach().to_type(work), eps);
                var r0 = inverseStd0(variance);
                inverseStdMultiplier = RescaleRule.InverseSqrtMultiplier(r, r0).to_type(dtype);
                inverseStd = r.to_type(dtype);
                bMean = (inverseStd + r0.to_type(dtype)) * 0.5;
            }
            var normalized = ProductRule.InputHalf(centered, Multipliers.Override(inverseStd, variance, inverseStdMultiplier), aMean, bMean, matmul: false);
            return ops.Map(new Act(normalized), t => t * weight + bias);
        });
}
