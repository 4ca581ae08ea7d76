using AttributionFleet.Engine.Ops;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// LayerNorm over the last dimension, decomposed into conserving steps:
/// <c>a = x − mean(x)</c> (linear); <c>q = a²</c> (square rule, m = a + a0); <c>v = mean(q)</c> (linear);
/// <c>r = (v + eps)^(−1/2)</c> (closed-form rescale); <c>n = a · r</c> (product rule); <c>y = γ n + β</c> (linear).
/// </summary>
public static class LayerNormRule
{
    /// <param name="referenceOutput">False: leave out the reference's output (see <see cref="ProductRule.Mul(Act, Act, bool)"/>): the last product and the affine map on the reference half.</param>
    public static Act Apply(TensorOps ops, Act x, TorchSharp.torch.Tensor weight, TorchSharp.torch.Tensor bias, double eps, bool promote,
        bool referenceOutput = true) =>
        ActScope.Run(() => Decompose(ops, x, weight, bias, eps, promote, referenceOutput));

    private static Act Decompose(TensorOps ops, Act x, TorchSharp.torch.Tensor weight, TorchSharp.torch.Tensor bias, double eps, bool promote,
        bool referenceOutput)
    {
        var centered = ops.Map(x, t => t - t.mean(new long[] { -1 }, keepdim: true));
        var squared = RescaleRule.Square(centered, promote);
        var variance = ops.Map(squared, t => t.mean(new long[] { -1 }, keepdim: true));
        var inverseStd = RescaleRule.InverseSqrt(variance, eps, promote);
        var normalized = ProductRule.Mul(centered, inverseStd, referenceOutput); // a reference-only pass computes its product whatever this says
        return ops.Map(normalized, t => t * weight + bias);
    }
}
