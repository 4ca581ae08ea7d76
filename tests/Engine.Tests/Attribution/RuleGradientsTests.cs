using AttributionFleet.Engine.Rules;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// The rules' autograd nodes give exactly the gradients of the straight-through forms they replace:
/// <c>y.detach() + m · (x − x.detach())</c> and <c>z + (A − A.detach()) ⊙ B̄ + Ā ⊙ (B − B.detach())</c> (or with @),
/// including operands broadcast against each other and operands that need no gradient.
/// </summary>
public class RuleGradientsTests
{
    private static Tensor Rand(long[] shape, int seed) =>
        randn(shape, dtype: ScalarType.Float64, generator: new TorchSharp.torch.Generator((ulong)seed));

    [Fact]
    public void MultiplierNodeValueIsTheRuleValueAndGradientIsGradTimesM()
    {
        using var _ = enable_grad();
        var x = Rand(new long[] { 4, 5 }, 1).requires_grad_(true);
        var y = Rand(new long[] { 4, 5 }, 2);
        var m = Rand(new long[] { 4, 5 }, 3);
        var w = Rand(new long[] { 4, 5 }, 4);
        var out1 = RuleGradients.WithMultiplier(y, x, m);
        Assert.True(out1.requires_grad);
        Assert.Equal(0, (out1.detach() - y).abs().max().item<double>());
        (w * out1).sum().backward();
        Assert.True(x.grad!.allclose(w * m, rtol: 0, atol: 0));
    }

    [Fact]
    public void MultiplierNodeIsSkippedWhenTheInputNeedsNoGradient()
    {
        var x = Rand(new long[] { 3 }, 1);
        var y = Rand(new long[] { 3 }, 2);
        Assert.Same(y, RuleGradients.WithMultiplier(y, x, Rand(new long[] { 3 }, 3)));
    }

    public static TheoryData<long[], long[], bool, bool, bool> Shapes => new()
    {
        // a shape, b shape, matmul, a requires grad, b requires grad
        { new long[] { 2, 3, 4 }, new long[] { 2, 3, 4 }, false, true, true },
        { new long[] { 2, 3, 4 }, new long[] { 2, 3, 1 }, false, true, true },   // LayerNorm's a · r
        { new long[] { 2, 3, 4 }, new long[] { 4 }, false, true, true },         // leading dims added
        { new long[] { 2, 3, 4 }, new long[] { 2, 3, 4 }, false, true, false },
        { new long[] { 2, 3, 4, 5 }, new long[] { 2, 3, 5, 6 }, true, true, true },
        { new long[] { 2, 3, 4, 5 }, new long[] { 2, 3, 5, 6 }, true, false, true },
        { new long[] { 2, 3, 4, 5 }, new long[] { 1, 3, 5, 6 }, true, true, true }, // broadcast batch
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void ProductNodeMatchesStraightThroughForm(long[] aShape, long[] bShape, bool matmul, bool aGrad, bool bGrad)
    {
        using var _ = enable_grad();
        Tensor Product(Tensor x, Tensor y) => matmul ? x.matmul(y) : x * y;
        var a = Rand(aShape, 1);
        var b = Rand(bShape, 2);
        var aMean = (a + Rand(aShape, 3)) * 0.5;
        var bMean = (b + Rand(bShape, 4)) * 0.5;
        var z = Product(a, b);
        var w = Rand(z.shape, 5);

        var (a1, b1) = (a.clone().requires_grad_(aGrad), b.clone().requires_grad_(bGrad));
        var node = RuleGradients.WithProductMultipliers(z, a1, b1, aMean, bMean, matmul);
        (w * node).sum().backward();

        var (a2, b2) = (a.clone().requires_grad_(aGrad), b.clone().requires_grad_(bGrad));
        var straight = z.clone();
        if (aGrad) straight = straight + Product(a2 - a2.detach(), bMean);
        if (bGrad) straight = straight + Product(aMean, b2 - b2.detach());
        (w * straight).sum().backward();

        Assert.Equal(0, (node.detach() - z).abs().max().item<double>());
        if (aGrad) Assert.True(a1.grad!.allclose(a2.grad!, rtol: 1e-13, atol: 1e-13), $"a: {(a1.grad! - a2.grad!).abs().max().item<double>()} {a1.grad!.abs().max().item<double>()} {a2.grad!.abs().max().item<double>()}");
        else Assert.Null(a1.grad);
        if (bGrad) Assert.True(b1.grad!.allclose(b2.grad!, rtol: 1e-13, atol: 1e-13));
        else Assert.Null(b1.grad);
    }
}
