using AttributionFleet.Engine.Architectures.DebertaV2;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Ops;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Architectures.DebertaV2;

/// <summary>
/// DeBERTa's c2p / p2c terms in isolation, float64: each equals its formula element by element (the gather semantics),
/// and DeepLift through it conserves locally — after backpropagating <c>⟨w, y⟩</c>, <c>Σ (x − x0)·grad == Σ w·(y − y0)</c> —
/// with a reference shared by the batch (one row), a reference position equal to the input's and one set to zero (masked).
/// </summary>
public sealed class DisentangledBiasTests(ITestOutputHelper output)
{
    private const ScalarType F64 = ScalarType.Float64;
    private const long B = 3, Heads = 2, L = 9, D = 4;
    private const int Span = 4; // position_buckets 4 (mid 2) over max_relative_positions 8: log buckets past distance 2, clamped rows

    private static (Act A, Tensor Table, Tensor C2P, Tensor P2C, Tensor W) Setup(int seed)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        var x = randn(new[] { B, Heads, L, D }, dtype: F64, generator: gen);
        var r = randn(new[] { 1, Heads, L, D }, dtype: F64, generator: gen);
        r[0, .., 2] = x[0, .., 2].clone(); // equal at one position (of the first text)
        r[0, .., 5] = zeros(Heads, D, dtype: F64); // a masked reference position
        var table = randn(new[] { 1, Heads, 2L * Span, D }, dtype: F64, generator: gen);
        using var rel = RelativePositions.Build(L, Span, 8, CPU);
        var c2p = (rel + Span).clamp(0, 2 * Span - 1);
        var p2c = (Span - rel).clamp(0, 2 * Span - 1);
        var w = randn(new[] { B, Heads, L, L }, dtype: F64, generator: gen);
        return (new Act(x.requires_grad_(), r), table, c2p, p2c, w);
    }

    private void AssertConserves(Act input, Act y, Tensor w, string what)
    {
        (w * y.X).sum().backward();
        double contributions = ((input.X - input.Ref) * input.X.grad!).sum().item<double>();
        double change = (w * (y.X - y.Ref)).sum().item<double>();
        output.WriteLine($"{what}: Σ contributions {contributions:R}, Σ w·Δy {change:R}");
        Assert.True(Math.Abs(change) > 1e-3, "the test needs y != y0");
        Assert.True(Math.Abs(contributions - change) <= 1e-12 * Math.Abs(change), $"{what}: {contributions - change:E2}");
    }

    [Fact]
    public void ContentToPositionIsItsFormulaAndConserves()
    {
        var (q, table, c2p, _, w) = Setup(1);
        double scale = Math.Sqrt(D * 3.0);
        var y = DisentangledBias.ContentToPosition(new DeepLiftOps(), q, table, c2p, scale);
        // c2p[b, h, i, j] = q[b, h, i] · Kr[h, c2p_pos(i, j)] / s
        var gathered = table[0].index_select(1, c2p.reshape(-1)).reshape(Heads, L, L, D);
        using (no_grad())
        {
            var expected = einsum("bhid,hijd->bhij", q.X, gathered) / scale;
            Assert.True((y.X - expected).abs().max().item<double>() <= 1e-13);
            Assert.Equal(new[] { 1L, Heads, L, L }, y.Ref.shape); // the shared reference stays one row
        }
        AssertConserves(q, y, w, "c2p");
    }

    [Fact]
    public void PositionToContentIsItsFormulaAndConserves()
    {
        var (k, table, _, p2c, w) = Setup(2);
        double scale = Math.Sqrt(D * 3.0);
        var y = DisentangledBias.PositionToContent(new DeepLiftOps(), k, table, p2c, scale);
        // p2c[b, h, i, j] = k[b, h, j] · Qr[h, p2c_pos(j, i)] / s
        var gathered = table[0].index_select(1, p2c.reshape(-1)).reshape(Heads, L, L, D); // [h, j, i, d]
        using (no_grad())
        {
            var expected = einsum("bhjd,hjid->bhij", k.X, gathered) / scale;
            Assert.True((y.X - expected).abs().max().item<double>() <= 1e-13);
        }
        AssertConserves(k, y, w, "p2c");
    }
}
