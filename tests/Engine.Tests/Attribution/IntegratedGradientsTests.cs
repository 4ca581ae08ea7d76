using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>Integrated Gradients: quadrature nodes, Captum's numbers on the reference BERTs, convergence, a closed form.</summary>
public class IntegratedGradientsTests(ITestOutputHelper output)
{
    [Fact]
    public void GaussLegendreNodesAndWeightsAreKnownValues()
    {
        var (a1, w1) = AttributionMath.GaussLegendre(1);
        Assert.Equal(new[] { 0.5 }, a1);
        Assert.Equal(1.0, w1[0], 15);

        var (a2, w2) = AttributionMath.GaussLegendre(2);
        double h = 0.5 / Math.Sqrt(3);
        Assert.Equal(0.5 - h, a2[0], 15);
        Assert.Equal(0.5 + h, a2[1], 15);
        Assert.Equal(0.5, w2[0], 15);
        Assert.Equal(0.5, w2[1], 15);

        var (a3, w3) = AttributionMath.GaussLegendre(3);
        double h3 = 0.5 * Math.Sqrt(0.6);
        Assert.Equal(0.5 - h3, a3[0], 15);
        Assert.Equal(0.5, a3[1], 15);
        Assert.Equal(0.5 + h3, a3[2], 15);
        Assert.Equal(5.0 / 18, w3[0], 15);
        Assert.Equal(8.0 / 18, w3[1], 15);
        Assert.Equal(5.0 / 18, w3[2], 15);
    }

    /// <summary>n-point Gauss–Legendre on [0, 1] integrates polynomials of degree ≤ 2n − 1 exactly; nodes ascend, symmetric.</summary>
    [Theory]
    [InlineData(4)]
    [InlineData(16)]
    [InlineData(50)]
    [InlineData(64)]
    public void GaussLegendreIsExactForPolynomials(int n)
    {
        var (alphas, weights) = AttributionMath.GaussLegendre(n);
        Assert.Equal(n, alphas.Length);
        Assert.Equal(1.0, weights.Sum(), 14);
        for (int i = 0; i < n; i++)
        {
            Assert.InRange(alphas[i], 0, 1);
            Assert.True(weights[i] > 0);
            if (i > 0) Assert.True(alphas[i] > alphas[i - 1], "ascending");
            Assert.Equal(1.0, alphas[i] + alphas[n - 1 - i], 14);
            Assert.Equal(weights[i], weights[n - 1 - i], 14);
        }
        for (int k = 0; k <= Math.Min(2 * n - 1, 60); k++)
        {
            double q = alphas.Zip(weights, (a, w) => w * Math.Pow(a, k)).Sum();
            Assert.True(Math.Abs(q - 1.0 / (k + 1)) <= 1e-14, $"n {n}, ∫x^{k}: {q} vs {1.0 / (k + 1)}");
        }
    }

    [Fact]
    public void RiemannTrapezoidNodes()
    {
        var (a, w) = AttributionMath.RiemannTrapezoid(5);
        Assert.Equal(new[] { 0, 0.25, 0.5, 0.75, 1 }, a);
        Assert.Equal(new[] { 0.125, 0.25, 0.25, 0.25, 0.125 }, w);
        var ex = Assert.Throws<AttributionRequestException>(() => AttributionMath.RiemannTrapezoid(1));
        Assert.Equal("steps", ex.Field);
    }

    /// <summary>
    /// <c>f(p) = Σ a·p² + b·p</c>: ∇f = 2a·p + b is linear along the path, so any quadrature exact for linear functions
    /// gives <c>IG = (x − x0)·(a(x + x0) + b)</c> exactly, whatever the batching of (step × text) rows.
    /// </summary>
    [Theory]
    [InlineData(IntegrationRule.GaussLegendre, 1, 64)]
    [InlineData(IntegrationRule.GaussLegendre, 2, 1)]
    [InlineData(IntegrationRule.GaussLegendre, 7, 5)]
    [InlineData(IntegrationRule.RiemannTrapezoid, 2, 3)]
    [InlineData(IntegrationRule.RiemannTrapezoid, 9, 64)]
    public void PathIntegralEqualsClosedFormOnQuadratic(IntegrationRule rule, int steps, int maxRows)
    {
        var gen = new TorchSharp.torch.Generator(5);
        const ScalarType F64 = ScalarType.Float64;
        var x = randn(new long[] { 3, 4, 5 }, dtype: F64, generator: gen);
        var r = randn(new long[] { 1, 4, 5 }, dtype: F64, generator: gen).expand(3, 4, 5);
        var a = randn(new long[] { 4, 5 }, dtype: F64, generator: gen);
        var b = randn(new long[] { 4, 5 }, dtype: F64, generator: gen);
        var mask = ones(3, 4, dtype: ScalarType.Int64);
        var (alphas, weights) = rule == IntegrationRule.GaussLegendre ? AttributionMath.GaussLegendre(steps) : AttributionMath.RiemannTrapezoid(steps);
        int calls = 0;
        var g = Gradients.WeightedPathGradients((points, masks, targets) =>
        {
            calls++;
            Assert.Equal(points.shape[0], masks.shape[0]);
            Assert.Equal(points.shape[0], targets.Length);
            return 2 * a * points + b;
        }, x, r, mask, new long[] { 0, 1, 2 }, alphas, weights, maxRows);
        var ig = (x - r) * g;
        var closed = (x - r) * (a * (x + r) + b);
        double err = (ig - closed).abs().max().item<double>();
        Assert.True(err <= 1e-13 * closed.abs().max().item<double>(), $"max |IG − closed form| = {err:E2}");
        Tensor F(Tensor p) => (a * p.square() + b * p).sum(new long[] { 1, 2 });
        Assert.True((ig.sum(new long[] { 1, 2 }) - (F(x) - F(r))).abs().max().item<double>() <= 1e-12, "completeness");
        int perPass = Math.Max(1, maxRows / 3);
        Assert.Equal((steps + perPass - 1) / perPass, calls);
    }

    public static TheoryData<string, string> CaptumCases() => new()
    {
        { "tiny-bert-L1", "" },
        { "tiny-bert-L2", "" },
        { "tiny-bert-stress", "attention_mask" },
    };

    internal static (AttributionBatch Batch, ITextModel Model) ReferenceBatch(string folder, string maskField, ScalarType dtype)
    {
        var c = RepoPaths.LoadCase(folder);
        var model = ModelLoader.Load(RepoPaths.Reference(folder), dtype: dtype);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = maskField == "" ? ones_like(ids) : tensor(Json.Long2(c.GetProperty(maskField)));
        var refIds = tensor(Json.Long2(c.GetProperty("baseline_ids")));
        long target = c.GetProperty("target").GetInt64();
        var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(refIds) }, Enumerable.Repeat(target, (int)ids.shape[0]).ToArray());
        return (batch, model);
    }

    /// <summary>Captum's LayerIntegratedGradients at the word-embedding output (logit, 50 Gauss–Legendre steps).</summary>
    [Theory]
    [MemberData(nameof(CaptumCases))]
    public void MatchesCaptum(string folder, string maskField)
    {
        var c = RepoPaths.LoadCase(folder);
        var ig = c.GetProperty("integrated_gradients");
        Assert.Equal(50, ig.GetProperty("n_steps").GetInt32());
        var (batch, model) = ReferenceBatch(folder, maskField, ScalarType.Float32);
        using var _ = model;
        var result = new IntegratedGradients().Attribute(model, batch, new MethodOptions { Output = OutputKind.Logit, Steps = 50 });
        var captum = Attributions3(ig.GetProperty("attributions"));
        double diff = (result.Attributions - captum).abs().max().item<double>();
        double scale = captum.abs().max().item<double>();
        var captumDelta = tensor(Json.Double1(ig.GetProperty("delta")), dtype: ScalarType.Float64);
        output.WriteLine($"{folder}: max |ours − Captum| = {diff:E2} (largest attribution {scale:E2}); " +
                         $"our delta max {result.Delta.abs().max().item<double>():E2}, Captum's {captumDelta.abs().max().item<double>():E2}");
        Assert.True(diff <= 1e-4, $"max |ours − Captum| = {diff:E2}");
        // The attributions of tiny-bert-L1/L2 are ~1e-5, so an absolute 1e-4 alone would accept anything: relative too.
        Assert.True(diff <= 1e-5 * scale, $"max |ours − Captum| = {diff:E2} against attributions up to {scale:E2}");
        Assert.True((result.Delta - captumDelta).abs().max().item<double>() <= 1e-6, "delta differs from Captum's");
        // Padded positions (input = reference there) score exactly 0.
        var padded = batch.AttentionMask.logical_not();
        if (padded.any().item<bool>())
            Assert.Equal(0.0, result.Scores.masked_select(padded).abs().max().item<double>());
    }

    private static Tensor Attributions3(System.Text.Json.JsonElement e)
    {
        int n = e.GetArrayLength(), l = e[0].GetArrayLength(), h = e[0][0].GetArrayLength();
        var data = new double[n * l * h];
        int k = 0;
        foreach (var a in e.EnumerateArray())
            foreach (var b in a.EnumerateArray())
                foreach (var v in b.EnumerateArray())
                    data[k++] = v.GetDouble();
        return tensor(data, dtype: ScalarType.Float64).reshape(n, l, h);
    }

    /// <summary>
    /// On tiny-bert-stress (float64; its two padded texts, to keep the test fast): IG's |delta| shrinks as steps grow, for
    /// both quadratures. Measured on all 4 texts (max |delta|): trapezoid 4: 2.5e-3, 8: 4.6e-4, 16: 1.0e-4, 32: 2.3e-5,
    /// 50: 9.4e-6; Gauss–Legendre 4: 4.1e-5, 8: 1.5e-8, 16: 1.6e-15, 32: 3.1e-16, 50: 1.9e-16.
    /// </summary>
    [Fact]
    public void DeltaShrinksWithSteps()
    {
        var (full, model) = ReferenceBatch("tiny-bert-stress", "attention_mask", ScalarType.Float64);
        using var _ = model;
        var rows = tensor(new long[] { 1, 2 });
        var batch = new AttributionBatch(full.Ids.index_select(0, rows), full.AttentionMask.index_select(0, rows),
            new[] { full.ReferenceEmbeddings[0].index_select(0, rows) }, new[] { full.Targets![1], full.Targets[2] });
        var table = new Dictionary<IntegrationRule, double[]>();
        foreach (var rule in new[] { IntegrationRule.RiemannTrapezoid, IntegrationRule.GaussLegendre })
        {
            var steps = rule == IntegrationRule.GaussLegendre ? new[] { 4, 8, 16 } : new[] { 4, 8, 16, 32 };
            table[rule] = steps.Select(n => new IntegratedGradients().Attribute(model, batch,
                new MethodOptions { Output = OutputKind.Logit, Steps = n, Integration = rule, MaxRowsPerPass = 256 }).Delta.abs().max().item<double>()).ToArray();
            output.WriteLine($"{rule,-17}: " + string.Join("  ", steps.Select((n, i) => $"{n}: {table[rule][i]:E2}")));
        }
        var trap = table[IntegrationRule.RiemannTrapezoid];
        for (int i = 1; i < trap.Length; i++) Assert.True(trap[i] < trap[i - 1], $"trapezoid delta did not shrink (step count #{i})");
        // Trapezoid error ~ 1/n²: 4 → 32 steps at least ~30× smaller.
        Assert.True(trap[3] < trap[0] / 30);
        var gl = table[IntegrationRule.GaussLegendre];
        Assert.True(gl[1] < gl[0] && gl[2] < gl[1], "Gauss–Legendre delta did not shrink from 4 to 16 steps");
        Assert.True(gl[2] <= 1e-12, $"16-step Gauss–Legendre delta {gl[2]:E2}");
        Assert.True(gl[2] < trap[2], "Gauss–Legendre should beat the trapezoid at equal steps");
    }
}
