using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Rules;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// Ops that carry the reference alongside the input and give every nonlinear op an exact DeepLift rule
/// (design note: shared/design/exact-deeplift.md). Linear ops come from <see cref="TensorOps"/> unchanged.
/// </summary>
public sealed class DeepLiftOps : TensorOps
{
    public SoftmaxRuleKind SoftmaxRule { get; }

    /// <summary>Compute float32 multipliers in float64 and round once.</summary>
    public bool PromoteMultipliers { get; }

    public DeepLiftOps(SoftmaxRuleKind softmaxRule = SoftmaxRuleKind.Exact, bool promoteMultipliers = true)
    {
        SoftmaxRule = softmaxRule;
        PromoteMultipliers = promoteMultipliers;
    }

    public override Act Apply(Act a, Activation activation) => RescaleRule.Activation(a, activation, PromoteMultipliers);

    public override Act Softmax(Act a, long dim) => Rules.SoftmaxRule.Apply(this, a, dim, SoftmaxRule, PromoteMultipliers);

    public override Act LayerNorm(Act a, TorchSharp.torch.Tensor weight, TorchSharp.torch.Tensor bias, double eps) =>
        LayerNormRule.Apply(this, a, weight, bias, eps, PromoteMultipliers);

    public override Act MatMul(Act a, Act b) => ProductRule.MatMul(a, b);

    public override Act Mul(Act a, Act b) => ProductRule.Mul(a, b);

    /// <summary>
    /// The rules whose reference half a tape replays: the input half only (the reference's output is left out; see
    /// <see cref="ProductRule.Mul(Act, Act, bool)"/>).
    /// </summary>
    internal Act MatMulInputHalf(Act a, Act b) => ProductRule.MatMul(a, b, referenceOutput: false);

    /// <inheritdoc cref="MatMulInputHalf"/>
    internal Act MulInputHalf(Act a, Act b) => ProductRule.Mul(a, b, referenceOutput: false);

    /// <summary>
    /// The rule for <see cref="Apply"/> on x [B, W, …] of a padded batch against each length's reference as its tape holds
    /// it (<paramref name="references"/>: group j's [1, l_j, …]; row b against group <c>groupOfRow[b]</c>'s): the input half
    /// only, or null where no fused loop takes it (the caller then copies each row's reference out and calls <see cref="Apply"/>).
    /// </summary>
    /// <param name="packedLengths">Each text's tokens when x is packed ([1, N, …], <see cref="TokenPacking"/>); null for the padded layout.</param>
    internal TorchSharp.torch.Tensor? ApplyGrouped(TorchSharp.torch.Tensor x, IReadOnlyList<TorchSharp.torch.Tensor> references, long[] groupOfRow,
        long[]? packedLengths, Activation activation) =>
        RescaleRule.GroupedActivation(x, references, groupOfRow, packedLengths, activation, PromoteMultipliers);

    /// <summary><see cref="Softmax"/> the same way as <see cref="ApplyGrouped"/>, on attention scores; the exact rule only.</summary>
    internal TorchSharp.torch.Tensor? SoftmaxGrouped(TorchSharp.torch.Tensor x, IReadOnlyList<TorchSharp.torch.Tensor> references, long[] groupOfRow, long dim) =>
        SoftmaxRule == SoftmaxRuleKind.Exact ? Rules.SoftmaxRule.GroupedExact(x, references, groupOfRow, dim) : null;
}
