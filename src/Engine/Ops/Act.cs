using static TorchSharp.torch;

namespace AttributionFleet.Engine.Ops;

/// <summary>
/// An activation as the ops see it: the input's value <see cref="X"/> and, while attributing with a
/// reference-based method, the reference's value <see cref="R"/> at the same point of the network.
/// R never requires grad; its batch dimension is either X's or 1 (one reference shared by the batch).
/// </summary>
public readonly record struct Act(Tensor X, Tensor? R = null)
{
    public Tensor Ref => R ?? throw new InvalidOperationException("This op needs the reference activation, but the activation has none.");

    /// <summary>
    /// Both halves are one tensor that needs no gradient: the pass that records a reference tape runs the reference as
    /// its own input (<see cref="Attribution.ReferenceTape.Record"/>). Ops and rules then compute the reference half
    /// alone, exactly as they compute it in a pass carrying the reference, and pass it on as both halves: the input
    /// half's values and multipliers would be thrown away, and they cost as much again.
    /// </summary>
    public bool IsReferenceOnly => R is not null && ReferenceEquals(X, R) && !X.requires_grad;

    /// <summary>The reference half as both halves (see <see cref="IsReferenceOnly"/>).</summary>
    public static Act ReferenceOnly(Tensor r) => new(r, r);
}

/// <summary>Elementwise nonlinearities the supported models use.</summary>
public enum Activation { GeluErf, GeluTanh, Relu, Tanh, Sigmoid }

/// <summary>
/// Runs a step in its own TorchSharp dispose scope and keeps only its result: the handles of every temporary
/// are released at once (autograd keeps whatever it saved), so memory does not pile up until the end of a pass.
/// </summary>
public static class ActScope
{
    public static Act Run(Func<Act> step)
    {
        using var scope = NewDisposeScope();
        var result = step();
        scope.MoveToOuter(result.R is null || ReferenceEquals(result.X, result.R) ? new[] { result.X } : new[] { result.X, result.R });
        return result;
    }

    public static Tensor Run(Func<Tensor> step)
    {
        using var scope = NewDisposeScope();
        var result = step();
        scope.MoveToOuter(result);
        return result;
    }
}
