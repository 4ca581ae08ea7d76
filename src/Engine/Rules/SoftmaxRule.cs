using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>How DeepLift treats a softmax.</summary>
public enum SoftmaxRuleKind
{
    /// <summary>Exact log-domain decomposition (default): conserves along any dimension.</summary>
    Exact,
    /// <summary>Elementwise rescale <c>Δy/Δx</c> (Captum's current rule): explodes on deep models.</summary>
    Rescale,
    /// <summary>Rescale, then subtract the mean along the softmax dim (the fix proposed in Captum #519): does not conserve.</summary>
    RowMean,
}

/// <summary>Softmax rules. Only <see cref="Exact"/> conserves; the others exist so users can compare deltas.</summary>
public static class SoftmaxRule
{
    public static Act Apply(TensorOps ops, Act a, long dim, SoftmaxRuleKind kind, bool promote) => ActScope.Run(() => kind switch
    {
        SoftmaxRuleKind.Exact => Exact(ops, a, dim, promote),
        SoftmaxRuleKind.Rescale => Rescale(a, dim, promote, rowMean: false),
        SoftmaxRuleKind.RowMean => Rescale(a, dim, promote, rowMean: true),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    });

    /// <summary>
    /// <c>u = x − c</c> with one detached shift <c>c = max(rowmax x, rowmax x0)</c> (linear: the same constant on both
    /// halves); <c>e = exp u</c> (exp rule, multipliers ≤ max(e, e0) ≤ 1); <c>s = Σ_d e</c> (linear); <c>g = log s</c>
    /// (log rule); <c>y = exp(u − g)</c> (linear, then exp rule). Every step conserves and stays bounded; the product
    /// form <c>e · (1/s)</c> is exact on paper but cancels catastrophically when the reference row sits far below.
    /// </summary>
    public static Act Exact(TensorOps ops, Act a, long dim, bool promote)
    {
        Tensor shift;
        using (no_grad())
            shift = maximum(a.X.detach().amax(new[] { dim }, keepdim: true), a.Ref.amax(new[] { dim }, keepdim: true));
        var u = ops.Map(a, t => t - shift);
        var e = RescaleRule.Exp(u, promote);
        var s = ops.Map(e, t => t.sum(dim, keepdim: true));
        var g = RescaleRule.Log(s, promote);
        var logProbs = ops.Map(u, g, (uu, gg) => uu - gg);
        return RescaleRule.Exp(logProbs, promote);
    }

    /// <summary>
    /// <c>m = Δy/Δx</c> elementwise (<c>y(1−y)</c>, the Jacobian's diagonal, where Δx = 0). With <paramref name="rowMean"/>
    /// the backward becomes <c>g∘m − mean_d(g∘m)</c>, i.e. the forward term <c>m∘(d − mean_d d)</c> with <c>d = x − x.detach()</c>.
    /// </summary>
    private static Act Rescale(Act a, long dim, bool promote, bool rowMean)
    {
        var x = a.X;
        Tensor y, y0, m;
        using (no_grad())
        {
            var work = Multipliers.WorkType(x.dtype, promote);
            var xd = x.detach().to_type(work);
            var x0d = a.Ref.to_type(work);
            var yd = xd.softmax(dim);
            var y0d = x0d.softmax(dim);
            m = Multipliers.SafeRatio(yd - y0d, xd - x0d, () => yd * (1 - yd)).to_type(x.dtype);
            y = yd.to_type(x.dtype);
            y0 = y0d.to_type(x.dtype);
        }
        if (!x.requires_grad) return new Act(y, y0);
        var d = x - x.detach();
        if (rowMean) d = d - d.mean(new[] { dim }, keepdim: true);
        return new Act(y + m * d, y0);
    }
}
