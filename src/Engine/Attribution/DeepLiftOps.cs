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
}
