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
    public static Act Mul(Act a, Act b) => Bilinear(a, b, matmul: false);

    public static Act MatMul(Act a, Act b) => Bilinear(a, b, matmul: true);

    private static Act Bilinear(Act a, Act b, bool matmul) =>
        ActScope.Run(() => BilinearUnscoped(a, b, matmul));

    private static Tensor Product(Tensor x, Tensor y, bool matmul) => matmul ? x.matmul(y) : x * y;

    private static Act BilinearUnscoped(Act a, Act b, bool matmul)
    {
        if (a.IsReferenceOnly && b.IsReferenceOnly)
            using (no_grad()) return Act.ReferenceOnly(Product(a.Ref, b.Ref, matmul));
        Tensor z, z0;
        Tensor? aMean, bMean;
        using (no_grad())
        {
            z = Product(a.X.detach(), b.X.detach(), matmul);
            z0 = Product(a.Ref, b.Ref, matmul);
            // ā is b's multiplier, b̄ is a's: each only when the other operand needs a gradient.
            bMean = a.X.requires_grad ? (b.X.detach() + b.Ref) * 0.5 : null;
            aMean = b.X.requires_grad ? (a.X.detach() + a.Ref) * 0.5 : null;
        }
        // Value z; gradient to a through b̄, to b through ā.
        return new Act(RuleGradients.WithProductMultipliers(z, a.X, b.X, aMean, bMean, matmul), z0);
    }
}
