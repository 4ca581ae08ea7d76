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
        scope.MoveToOuter(result.R is null ? new[] { result.X } : new[] { result.X, result.R });
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
