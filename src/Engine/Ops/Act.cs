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
