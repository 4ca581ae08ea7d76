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
    /// <param name="referenceOutput">
    /// False: leave out the reference's product <c>a0·b0</c> (the result has no reference half): a pass that replays its
    /// reference half from a tape has it already.
    /// </param>
    public static Act Mul(Act a, Act b, bool referenceOutput) => Bilinear(a, b, matmul: false, referenceOutput);

    /// <inheritdoc cref="Mul(Act, Act, bool)"/>
    public static Act MatMul(Act a, Act b, bool referenceOutput) => Bilinear(a, b, matmul: true, referenceOutput);

    public static Act Mul(Act a, Act b) => Mul(a, b, referenceOutput: true);

    public static Act MatMul(Act a, Act b) => MatMul(a, b, referenceOutput: true);

    private static Act Bilinear(Act a, Act b, bool matmul, bool referenceOutput) =>
        ActScope.Run(() => BilinearUnscoped(a, b, matmul, referenceOutput));

    private static Tensor Product(Tensor x, Tensor y, bool matmul) => matmul ? x.matmul(y) : x * y;

    private static Act BilinearUnscoped(Act a, Act b, bool matmul, bool referenceOutput)
    {
        if (a.IsReferenceOnly && b.IsReferenceOnly)
            using (no_grad()) return Act.ReferenceOnly(Product(a.Ref, b.Ref, matmul));
        Tensor? z0;
        Tensor? aMean, bMean;
        using (no_grad())
        {
            z0 = referenceOutput ? Product(a.Ref, b.Ref, matmul) : null;
            // ā is b's multiplier, b̄ is a's: each only when the other operand needs a gradient.
            bMean = a.X.requires_grad ? (b.X.detach() + b.Ref) * 0.5 : null;
            aMean = b.X.requires_grad ? (a.X.detach() + a.Ref) * 0.5 : null;
        }
        return new Act(InputHalf(a.X, b.X, aMean, bMean, matmul), z0);
    }

    /// <summary>
    /// The input half <c>z = a·b</c> (or <c>a @ b</c>) with the rule's gradient, given the means <c>ā = (a + a0)/2</c> and
    /// <c>b̄ = (b + b0)/2</c> (each null where the other operand needs no gradient): to a through b̄, to b through ā. A pass
    /// that replays several lengths' references computes the means itself, without copying a reference out to every row.
    /// </summary>
    internal static Tensor InputHalf(Tensor a, Tensor b, Tensor? aMean, Tensor? bMean, bool matmul)
    {
        Tensor z;
        using (no_grad()) z = Product(a.detach(), b.detach(), matmul);
        return RuleGradients.WithProductMultipliers(z, a, b, aMean, bMean, matmul);
    }
}
