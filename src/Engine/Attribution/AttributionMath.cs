using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>Helpers shared by the methods (kept apart from the methods themselves).</summary>
internal static class AttributionMath
{
    /// <summary>Scores per token, <c>f(x) − f(x0)</c> bookkeeping and the delta, all as float64 on the CPU.</summary>
    public static AttributionOutput Finish(Tensor attributions, Tensor fx, Tensor fx0, Tensor logits, long[] targets)
    {
        var attr = attributions.detach().to_type(ScalarType.Float64).cpu();
        var scores = attr.sum(-1);
        var fxd = fx.detach().to_type(ScalarType.Float64).cpu();
        var fx0d = fx0.detach().to_type(ScalarType.Float64).cpu().expand_as(fxd).contiguous();
        var delta = fxd - fx0d - scores.sum(1);
        return new AttributionOutput(attr, scores, fxd, fx0d, delta, logits.detach().to_type(ScalarType.Float64).cpu(), targets);
    }

    /// <summary>The given targets, or each row's argmax of <paramref name="logits"/> [B, C] when none are given.</summary>
    public static long[] ResolveTargets(long[]? targets, Tensor logits)
    {
        if (targets is not null) return targets;
        using var _ = no_grad();
        return logits.detach().argmax(1).cpu().data<long>().ToArray();
    }

    /// <summary>
    /// Gauss–Legendre nodes and weights mapped to [0, 1] (Newton iteration on P_n; as numpy's leggauss,
    /// then α = (1 + x)/2, w/2, the same mapping Captum uses).
    /// </summary>
    public static (double[] Alphas, double[] Weights) GaussLegendre(int n)
    {
        var x = new double[n];
        var w = new double[n];
        for (int i = 0; i < n; i++)
        {
            double z = Math.Cos(Math.PI * (i + 0.75) / (n + 0.5));
            double dp = 0;
            for (int iter = 0; iter < 100; iter++)
            {
                double p0 = 1, p1 = z;
                for (int k = 2; k <= n; k++)
                {
                    double p2 = ((2 * k - 1) * z * p1 - (k - 1) * p0) / k;
                    p0 = p1;
                    p1 = p2;
                }
                if (n == 1) { p1 = z; p0 = 1; }
                dp = n * (z * p1 - p0) / (z * z - 1);
                double dz = p1 / dp;
                z -= dz;
                if (Math.Abs(dz) < 1e-16) break;
            }
            x[i] = z;
            w[i] = 2 / ((1 - z * z) * dp * dp);
        }
        var alphas = new double[n];
        var weights = new double[n];
        for (int i = 0; i < n; i++)
        {
            // ascending order
            alphas[n - 1 - i] = 0.5 * (1 + x[i]);
            weights[n - 1 - i] = 0.5 * w[i];
        }
        return (alphas, weights);
    }

    /// <summary>Trapezoid rule on n equally spaced points of [0, 1] (Captum's riemann_trapezoid).</summary>
    public static (double[] Alphas, double[] Weights) RiemannTrapezoid(int n)
    {
        if (n < 2) throw new AttributionRequestException("steps", "riemann-trapezoid needs at least 2 steps");
        var alphas = Enumerable.Range(0, n).Select(i => (double)i / (n - 1)).ToArray();
        var weights = Enumerable.Repeat(1.0 / (n - 1), n).ToArray();
        weights[0] = weights[^1] = 0.5 / (n - 1);
        return (alphas, weights);
    }

    public static void CheckTargets(long[]? targets, int outputs)
    {
        foreach (var t in targets ?? Array.Empty<long>())
            if (t < 0 || t >= outputs)
                throw new AttributionRequestException("target", $"target {t} is out of range: the model has {outputs} outputs (0..{outputs - 1})");
    }
}
