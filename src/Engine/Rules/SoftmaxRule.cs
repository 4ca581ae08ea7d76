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
    public static Act Apply(TensorOps ops, Act a, long dim, SoftmaxRuleKind kind, bool promote) => ActScope.Run(() => a.IsReferenceOnly
        ? ReferenceOnly(a, dim)
        : kind switch
    {
        SoftmaxRuleKind.Exact => Exact(ops, a, dim, promote),
        SoftmaxRuleKind.Rescale => Rescale(a, dim, promote, rowMean: false),
        SoftmaxRuleKind.RowMean => Rescale(a, dim, promote, rowMean: true),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    });

    /// <summary>Every rule passes on softmax(x0) computed from x0 alone (see <see cref="Exact"/>).</summary>
    private static Act ReferenceOnly(Act a, long dim)
    {
        using (no_grad()) return Act.ReferenceOnly(a.Ref.softmax(dim));
    }

    /// <summary>
    /// <c>u = x − c</c> with one detached shift <c>c = max(rowmax x, rowmax x0)</c> (linear: the same constant on both
    /// halves); <c>e = exp u</c> (exp rule, multipliers ≤ max(e, e0) ≤ 1); <c>s = Σ_d e</c> (linear); <c>g = log s</c>
    /// (log rule); <c>y = exp(u − g)</c> (linear, then exp rule). Every step conserves and stays bounded; the product
    /// form <c>e · (1/s)</c> is exact on paper but cancels catastrophically when the reference row sits far below.
    /// </summary>
    public static Act Exact(TensorOps ops, Act a, long dim, bool promote)
    {
        if ((dim == -1 || dim == a.X.dim() - 1) && Fused(a) is { } fused) return fused;
        Tensor shift;
        using (no_grad())
            shift = maximum(a.X.detach().amax(new[] { dim }, keepdim: true), a.Ref.amax(new[] { dim }, keepdim: true));
        var u = ops.Map(a, t => t - shift);
        var e = RescaleRule.Exp(u, promote);
        var s = ops.Map(e, t => t.sum(dim, keepdim: true));
        var g = LogOfSum(s, u, dim, promote);
        var logProbs = ops.Map(u, g, (uu, gg) => uu - gg);
        // The values leave as softmax(x) and softmax(x0), each computed from its own half: equal to exp(u − g) and
        // exp(u0 − g0) up to rounding (the multipliers are those of the exp rule on u − g), but u0 = x0 − c carries
        // each text's shift c, so exp(u0 − g0) has a row per text even when the batch shares one reference. From x0
        // alone the reference half stays one row, and so does every later layer's (measured: it was costing as much
        // as the inputs' half from the first softmax on). A text equal to its reference gets identical values.
        Tensor y, y0;
        using (no_grad())
        {
            y = a.X.detach().softmax(dim);
            y0 = a.Ref.softmax(dim);
        }
        return RescaleRule.Exp(logProbs, promote, y, y0);
    }

    /// <summary>
    /// <see cref="Exact"/> for the attention scores of a padded batch of several lengths: x [B, heads, W, W] against each
    /// length's reference scores as its tape holds them (<paramref name="references"/>: group j's [1, heads, l_j, l_j]; row
    /// b against group <c>groupOfRow[b]</c>'s, padded as <see cref="CpuKernels.TrySoftmaxExactGrouped"/> says), in the fused
    /// loop, without copying a reference out to every text. Only the input half comes back (its value, carrying the
    /// multipliers): the caller replays the reference half from a tape. Null where the fused loop does not apply.
    /// </summary>
    internal static Tensor? GroupedExact(Tensor x, IReadOnlyList<Tensor> references, long[] groupOfRow, long dim)
    {
        if ((dim != -1 && dim != x.dim() - 1) || !CpuKernels.SoftmaxLoopTakes(x)) return null;
        using var scope = NewDisposeScope();
        Tensor y, mExp, mLog, mOut;
        using (no_grad())
            if (!CpuKernels.TrySoftmaxExactGrouped(x.detach(), references, groupOfRow, out y, out mExp, out mLog, out mOut)) return null;
        var result = RuleGradients.WithSoftmaxMultipliers(y, x, mExp, mLog, mOut);
        scope.MoveToOuter(result);
        return result;
    }

    /// <summary>
    /// <see cref="Exact"/> along the last dimension in one loop per row (<see cref="CpuKernels.TrySoftmaxExact"/>: float32 on
    /// a CPU with AVX-512), or null for the composition. The reference's value is softmax(x0) from x0 alone, as in <see cref="Exact"/>.
    /// </summary>
    private static Act? Fused(Act a)
    {
        Tensor y, mExp, mLog, mOut, y0;
        using (no_grad())
        {
            if (!CpuKernels.TrySoftmaxExact(a.X.detach(), a.Ref, out y, out mExp, out mLog, out mOut)) return null;
            y0 = a.Ref.softmax(-1);
        }
        return new Act(RuleGradients.WithSoftmaxMultipliers(y, a.X, mExp, mLog, mOut), y0);
    }

    /// <summary>
    /// <c>g = log s</c> under the log rule, guarded against underflow: where one half's whole row sits so far below the
    /// shared shift that all its exps underflow (a row more than ~745 below the other half's maximum in float64, ~104 in
    /// float32), <c>s</c> is 0 (or subnormal) and <c>log s</c> would be −inf, making the value and, through the multiplier,
    /// everything downstream NaN. There that half takes <c>logsumexp(u)</c> (finite) and the multiplier is the plain ratio
    /// <c>(g − g0) / (s − s0)</c>, which conserves by construction and does not cancel (the other half's <c>s</c> is ≥ 1,
    /// because the shift is its row maximum). Rows without underflow are computed exactly as by <see cref="RescaleRule.Log"/>.
    /// </summary>
    private static Act LogOfSum(Act s, Act u, long dim, bool promote)
    {
        double tiny = s.X.dtype == ScalarType.Float64 ? 2.2250738585072014E-308 : 1.1754943508222875E-38; // smallest normal
        Tensor g, g0;
        using (no_grad())
        {
            g = GuardedLog(s.X.detach(), u.X.detach(), dim, tiny);
            g0 = GuardedLog(s.Ref, u.Ref, dim, tiny);
        }
        var m = ActScope.Run(() =>
        {
            using var _ = no_grad();
            var work = Multipliers.WorkType(s.X.dtype, promote: false); // a closed form: see RescaleRule
            var sd = s.X.detach().to_type(work);
            var s0d = s.Ref.to_type(work);
            var d = (sd - s0d).abs();
            var low = minimum(sd, s0d);
            var ratio = Multipliers.SafeRatio((d / low).log1p(), d, () => sd.reciprocal());
            var under = low < tiny;
            if (!under.any().item<bool>()) return ratio.to_type(s.X.dtype);
            var plain = (g.to_type(work) - g0.to_type(work)) / where(under, sd - s0d, ones_like(sd));
            return where(under, plain, ratio).to_type(s.X.dtype);
        });
        return new Act(Multipliers.Override(g, s.X, m), g0);
    }

    private static Tensor GuardedLog(Tensor s, Tensor u, long dim, double tiny)
    {
        var under = s < tiny;
        return under.any().item<bool>() ? where(under, u.logsumexp(dim, keepdim: true), s.log()) : s.log();
    }

    /// <summary>
    /// <c>m = Δy/Δx</c> elementwise; where <c>Δx = 0</c> the plain gradient, i.e. the full softmax Jacobian <c>Jᵀg</c> (as
    /// Captum does: its fallback is the op's own grad_input, not the Jacobian's diagonal). With <paramref name="rowMean"/>
    /// the backward <c>G</c> becomes <c>G − mean_d(G)</c>, i.e. every forward term is fed <c>d − mean_d d</c> with
    /// <c>d = x − x.detach()</c> (the centring is its own adjoint).
    /// </summary>
    private static Act Rescale(Act a, long dim, bool promote, bool rowMean)
    {
        var x = a.X;
        Tensor y, y0, same, m;
        using (no_grad())
        {
            var work = Multipliers.WorkType(x.dtype, promote);
            var xd = x.detach().to_type(work);
            var x0d = a.Ref.to_type(work);
            m = Multipliers.SafeRatio(xd.softmax(dim) - x0d.softmax(dim), xd - x0d, () => zeros_like(xd)).to_type(x.dtype);
            y = x.detach().softmax(dim);
            y0 = a.Ref.softmax(dim);
            same = x.detach() == a.Ref;
        }
        if (!x.requires_grad) return new Act(y, y0);
        var d = x - x.detach();
        if (rowMean) d = d - d.mean(new[] { dim }, keepdim: true);
        var result = y + m * d;
        if (same.any().item<bool>())
        {
            // Zero-valued term whose gradient is Jᵀg on the entries with Δx = 0 (softmax of x plus an exact zero).
            var xd = x.detach();
            result = result + ((xd + where(same, d, zeros_like(d))).softmax(dim) - y);
        }
        return new Act(result, y0);
    }
}
