using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Rules;

/// <summary>
/// Symmetric (Shapley) product rule for <c>z = a·b</c> and the bilinear <c>Z = A @ B</c>:
/// <c>ab − a0b0 = Δa (b + b0)/2 + Δb (a + a0)/2</c> exactly, so <c>∂z/∂a := (b + b0)/2</c> and
/// <c>∂z/∂b := (a + a0)/2</c>. For matrices the same identity holds with <c>@</c> in place of <c>·</c>.
/// </summary>
public static class ProductRule
{
    public static Act Mul(Act a, Act b) => Bilinear(a, b, (x, y) => x * y);

    public static Act MatMul(Act a, Act b) => Bilinear(a, b, (x, y) => x.matmul(y));

    private static Act Bilinear(Act a, Act b, Func<Tensor, Tensor, Tensor> product) =>
        ActScope.Run(() => BilinearUnscoped(a, b, product));

    private static Act BilinearUnscoped(Act a, Act b, Func<Tensor, Tensor, Tensor> product)
    {
        Tensor z, z0, aMean, bMean;
        using (no_grad())
        {
            z = product(a.X.detach(), b.X.detach());
            z0 = product(a.Ref, b.Ref);
            aMean = (a.X.detach() + a.Ref) * 0.5;
            bMean = (b.X.detach() + b.Ref) * 0.5;
        }
        // Value z; gradient to a through b̄, to b through ā (each added term is exactly zero).
        var result = z;
        if (a.X.requires_grad) result = result + product(a.X - a.X.detach(), bMean);
        if (b.X.requires_grad) result = result + product(aMean, b.X - b.X.detach());
        return new Act(result, z0);
    }
}
