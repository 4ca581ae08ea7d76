using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// Explains every output of the classifier (<c>--target all</c>): one attribution per class. DeepLift with one
/// reference runs its forward pass once and walks the same graph backward once per class (the graph is retained
/// until the last class): the multipliers are linear in the output's gradient, so class c's backward is exactly the
/// backward of a run with target c. For the centered logit (the default output) the last class needs no backward of
/// its own: C − 1 backwards serve C classes. Every other method (and DeepLiftShap) runs once per class with that class as the
/// fixed target: correct, not cheaper.
/// </summary>
public static class EveryTarget
{
    /// <summary>One <see cref="AttributionOutput"/> per class, in class order; every row of output c explains class c.</summary>
    public static IReadOnlyList<AttributionOutput> Attribute(IAttributionMethod method, ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        int classes = model.OutputSize;
        if (method is DeepLift && batch.ReferenceEmbeddings.Count == 1)
            return OnePass(model, batch, batch.ReferenceEmbeddings[0], options);
        var outputs = new List<AttributionOutput>(classes);
        for (int c = 0; c < classes; c++)
            outputs.Add(method.Attribute(model, batch with { Targets = Enumerable.Repeat((long)c, (int)batch.Size).ToArray() }, options));
        return outputs;
    }

    /// <summary>DeepLift, every class from one forward pass, in passes of <see cref="DeepLift.TextsPerPass"/> texts (as DeepLift).</summary>
    internal static IReadOnlyList<AttributionOutput> OnePass(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options)
    {
        long n = batch.Size, per = DeepLift.TextsPerPass(model, batch.Ids.shape[1], options, n, batch.Ids.device.type);
        if (n <= per) return Chunk(model, batch, reference, options);
        using var scope = NewDisposeScope();
        var parts = new List<IReadOnlyList<AttributionOutput>>();
        for (long start = 0; start < n; start += per)
        {
            long count = Math.Min(per, n - start);
            var slice = new AttributionBatch(batch.Ids.narrow(0, start, count), batch.AttentionMask.narrow(0, start, count),
                batch.ReferenceEmbeddings, null);
            var r = reference.shape[0] == n ? reference.narrow(0, start, count) : reference;
            parts.Add(Chunk(model, slice, r, options));
        }
        var joined = Enumerable.Range(0, model.OutputSize).Select(c => new AttributionOutput(
            cat(parts.Select(p => p[c].Attributions).ToArray(), 0), cat(parts.Select(p => p[c].Scores).ToArray(), 0),
            cat(parts.Select(p => p[c].Fx).ToArray(), 0), cat(parts.Select(p => p[c].Fx0).ToArray(), 0),
            cat(parts.Select(p => p[c].Delta).ToArray(), 0), cat(parts.Select(p => p[c].Logits).ToArray(), 0),
            parts.SelectMany(p => p[c].Targets).ToArray())).ToList();
        foreach (var o in joined) DeepLift.Detach(o, scope);
        return joined;
    }

    private static IReadOnlyList<AttributionOutput> Chunk(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var x = model.WordEmbeddings(batch.Ids).detach().requires_grad_(true);
        var r = reference.detach();
        var ops = new DeepLiftOps(options.SoftmaxRule, options.PromoteMultipliers);
        Act logits;
        using (EngineTelemetry.Source.StartActivity("engine.forward"))
            logits = model.Forward(ops, new Act(x, r), batch.AttentionMask);
        int classes = (int)logits.X.shape[1];
        var outputs = new List<AttributionOutput>(classes);
        var difference = x.detach() - r;
        // The centered logits z_c − mean_k z_k sum to zero over c, and they are a linear map of the logits: the output
        // gradients e_c − 1/C of the C classes sum to the zero vector, and the backward is linear in the output gradient,
        // so the last class's multipliers are minus the sum of the others' (to rounding). C − 1 backwards serve C classes.
        bool derivedLast = options.Output == OutputKind.CenteredLogit && classes >= 2;
        int backwards = derivedLast ? classes - 1 : classes;
        Tensor? sum = null;
        for (int c = 0; c < classes; c++)
        {
            var targets = Enumerable.Repeat((long)c, (int)batch.Size).ToArray();
            var f = TargetOutput.Select(ops, logits, targets, options.Output);
            Tensor m;
            if (c < backwards)
            {
                using (EngineTelemetry.Source.StartActivity("engine.backward"))
                {
                    // The graph stays until the last backward: each one reads the same saved multipliers.
                    m = autograd.grad(new[] { f.X.sum() }, new[] { x }, retain_graph: c < backwards - 1)[0];
                    Rules.RuleGradients.ReleaseHanded();
                }
                if (derivedLast) sum = sum is null ? m : sum + m;
            }
            else m = -sum!;
            outputs.Add(AttributionMath.Finish(difference * m, f.X, f.Ref, logits.X, targets));
        }
        foreach (var o in outputs) DeepLift.Detach(o, scope);
        return outputs;
    }
}
