using System.Diagnostics;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Cli.Commands;

/// <summary>Wraps another <see cref="TensorOps"/> and adds up the wall time of each nonlinear op and of the linear layers (CPU: ops are synchronous).</summary>
internal sealed class ProfilingOps(TensorOps inner) : TensorOps
{
    public Dictionary<string, double> Seconds { get; } = new();

    private Act Time(string name, Func<Act> op)
    {
        var sw = Stopwatch.StartNew();
        var result = op();
        Seconds[name] = Seconds.GetValueOrDefault(name) + sw.Elapsed.TotalSeconds;
        return result;
    }

    public override Act Apply(Act a, Activation activation) => Time($"activation/{activation}", () => inner.Apply(a, activation));
    public override Act Softmax(Act a, long dim) => Time("softmax", () => inner.Softmax(a, dim));
    public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) => Time("layernorm", () => inner.LayerNorm(a, weight, bias, eps));
    public override Act MatMul(Act a, Act b) => Time("matmul (attention)", () => inner.MatMul(a, b));
    public override Act Mul(Act a, Act b) => Time("mul", () => inner.Mul(a, b));
    public override Act Linear(Act a, Tensor weight, Tensor? bias) => Time("linear", () => inner.Linear(a, weight, bias));
}
