using AttributionFleet.Engine.Architectures.DebertaV2;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Tests.Attribution;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Architectures;

/// <summary>
/// Local conservation (float64, <c>Σ (x − x0)·m == Σ w·(y − y0)</c>) of the compositions ModernBERT and DeBERTa-v3 add,
/// each built from the existing rules exactly as their models build it, on the hostile inputs of
/// <see cref="RuleConservationTests.Inputs"/> (equal rows, rows 1e-9 and 1e-14 apart, half-equal rows, huge rows):
/// rotary positions before the bilinear scores, GeGLU with one half's row underflowing, sliding-window attention with
/// whole rows masked, and DeBERTa's c2p / p2c gathers with padded scores replaced by finfo.min.
/// </summary>
public class NewOpConservationTests(ITestOutputHelper output)
{
    private const ScalarType F64 = ScalarType.Float64;
    private static readonly DeepLiftOps Ops = new();

    private void AssertConserves(string name, Func<Act, Act> f, Tensor x, Tensor r, double tol = 1e-11)
    {
        var y0 = f(new Act(x, r));
        var w = RuleConservationTests.Weights(y0.X.shape, 7);
        var (grad, y, yRef) = RuleConservationTests.Run(f, x, r, w);
        double lhs = ((x - r) * grad).sum().item<double>();
        double rhs = (w * (y - yRef)).sum().item<double>();
        double scale = (w * (y - yRef)).abs().sum().item<double>();
        double rel = Math.Abs(lhs - rhs) / scale;
        output.WriteLine($"{name}: Σ Δx·m = {lhs:G17}, Σ w·Δy = {rhs:G17}, relative error {rel:E2}");
        Assert.True(double.IsFinite(lhs) && double.IsFinite(rhs) && grad.isfinite().all().item<bool>(), $"{name}: not finite");
        Assert.True(scale > 1e-6, $"{name}: the test needs y != y0");
        Assert.True(rel <= tol, $"{name}: relative conservation error {rel:E2}");
    }

    private static Tensor Rotate(Tensor t, Tensor cos, Tensor sin)
    {
        long half = t.shape[^1] / 2;
        return t * cos + cat(new[] { -t.narrow(-1, half, half), t.narrow(-1, 0, half) }, -1) * sin;
    }

    /// <summary>q, k = rotary(x Wq), rotary(x Wk); scores = q kᵀ: the linear rule (constant tables), then the product rule.</summary>
    [Fact]
    public void RotaryScoresConserve()
    {
        var (x, r) = RuleConservationTests.Inputs(11);
        var gen = new TorchSharp.torch.Generator(5);
        var wq = randn(new long[] { 16, 16 }, dtype: F64, generator: gen) * 0.3;
        var wk = randn(new long[] { 16, 16 }, dtype: F64, generator: gen) * 0.3;
        var angles = arange(8, dtype: F64).unsqueeze(1) * (1.0 / pow(100.0, arange(0, 16, 2, dtype: F64) / 16)).unsqueeze(0);
        angles = cat(new[] { angles, angles }, -1);
        var (cos, sin) = (angles.cos(), angles.sin());
        AssertConserves("rotary q·kᵀ", a =>
        {
            var q = Ops.Map(Ops.Linear(a, wq, null), t => Rotate(t, cos, sin));
            var k = Ops.Map(Ops.Linear(a, wk, null), t => Rotate(t, cos, sin));
            return Ops.MatMul(q, Ops.Map(k, t => t.transpose(-1, -2)));
        }, x, r);
    }

    /// <summary>
    /// GeGLU <c>gelu(input) · gate</c>, input and gate the two halves of one linear map; rows where the input half sits
    /// at −40 in x only or in x0 only (gelu underflows to 0 in that half) and where the gate half is 0 in one half.
    /// </summary>
    [Fact]
    public void GeGluConservesWhenOneHalfUnderflows()
    {
        var (x, r) = RuleConservationTests.Inputs(12, shape: new long[] { 8, 32 });
        x[5, TensorIndex.Slice(0, 16)] = full(16, -40.0, dtype: F64);
        r[6, TensorIndex.Slice(0, 16)] = full(16, -40.0, dtype: F64);
        r[7, TensorIndex.Slice(16, 32)] = zeros(16, dtype: F64);
        AssertConserves("GeGLU", a =>
        {
            var input = Ops.Map(a, t => t.narrow(-1, 0, 16));
            var gate = Ops.Map(a, t => t.narrow(-1, 16, 16));
            return Ops.Mul(Ops.Apply(input, Activation.GeluErf), gate);
        }, x, r);
    }

    /// <summary>
    /// softmax(masked_fill(q kᵀ · s, finfo.min)) v as ModernBERT's DeepLift path composes it, with a sliding window
    /// |i − j| ≤ 1 and (window+padded) the last two keys padded, so that the last query's row is masked whole in both
    /// halves: the softmax rule stays exact and finite. (With the mask added instead of filled, that row's uniform
    /// softmax passes multipliers 1/n through scores its value no longer depends on: measured 3.9e-3 relative error.)
    /// </summary>
    [Theory]
    [InlineData("none", 30.0)]
    [InlineData("window", 30.0)]
    [InlineData("window+padded", 30.0)]
    [InlineData("window+padded", 1.0)]
    public void SlidingWindowAttentionWithWholeRowsMaskedConserves(string mode, double huge)
    {
        var (x, r) = RuleConservationTests.Inputs(13, huge: huge);
        long l = x.shape[0];
        var rows = arange(l);
        var masked = (rows.unsqueeze(0) - rows.unsqueeze(1)).abs() > 1;
        if (mode == "window+padded") masked = masked.logical_or((arange(l) >= l - 2).unsqueeze(0));
        if (mode == "none") masked = zeros(l, l, dtype: ScalarType.Bool);
        if (mode == "window+padded") Assert.True(masked[l - 1].all().item<bool>(), "the last row must be masked whole");
        AssertConserves($"sliding-window attention {mode} {huge}", a =>
        {
            var q = Ops.Map(a, t => t * 0.5);
            var k = Ops.Map(a, t => t.flip(-1));
            var scores = Ops.Map(Ops.MatMul(q, Ops.Map(k, t => t.transpose(-1, -2))), t => (t * 0.25).masked_fill(masked, double.MinValue));
            return Ops.MatMul(Ops.Softmax(scores, -1), a);
        }, x, r);
    }

    /// <summary>
    /// DeBERTa's scores as DebertaV2Classifier builds them: c2c (product rule) + <see cref="DisentangledBias.ContentToPosition"/>
    /// + <see cref="DisentangledBias.PositionToContent"/> (linear: constant position tables, constant indices, here clamped
    /// plain distances), padded scores replaced by finfo.min, softmax, context.
    /// </summary>
    [Fact]
    public void DisentangledAttentionConserves()
    {
        var (x, r) = RuleConservationTests.Inputs(14);
        long l = x.shape[0], d = x.shape[1];
        const int span = 3;
        var gen = new TorchSharp.torch.Generator(6);
        var posK = randn(new long[] { 1, 1, 2 * span, d }, dtype: F64, generator: gen);
        var posQ = randn(new long[] { 1, 1, 2 * span, d }, dtype: F64, generator: gen);
        var rel = RelativePositions.Build(l, -1, span, CPU);
        var c2pIdx = (rel + span).clamp(0, 2 * span - 1);
        var p2cIdx = (span - rel).clamp(0, 2 * span - 1);
        var m = arange(l) < l - 1;
        var masked = m.unsqueeze(0).logical_and(m.unsqueeze(1)).logical_not();
        AssertConserves("disentangled attention", a =>
        {
            var a4 = Ops.Map(a, t => t.unsqueeze(0).unsqueeze(0));
            var q = Ops.Map(a4, t => t * 0.7);
            var k = Ops.Map(a4, t => t.roll(1, -1));
            var scores = Ops.MatMul(q, Ops.Map(k, t => t.transpose(-1, -2)));
            scores = Ops.Add(scores, DisentangledBias.ContentToPosition(Ops, q, posK, c2pIdx, 1.0));
            scores = Ops.Add(scores, DisentangledBias.PositionToContent(Ops, k, posQ, p2cIdx, 1.0));
            scores = Ops.Map(scores, t => t.masked_fill(masked, double.MinValue) / 3.0);
            return Ops.Map(Ops.MatMul(Ops.Softmax(scores, -1), a4), t => t.squeeze(0).squeeze(0));
        }, x, r);
    }
}
