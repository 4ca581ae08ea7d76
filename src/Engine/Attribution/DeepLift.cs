using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// Exact DeepLift: one forward pass carrying input and reference together through the exact rules, one
/// backward pass for the multipliers at the word-embedding output; <c>C = (x − x0) · m</c>. Summation-to-delta
/// holds to rounding for the exact softmax rule; the other rules report whatever delta they leave.
/// </summary>
public sealed class DeepLift : IAttributionMethod
{
    public string Name => "deeplift";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count != 1)
            throw new AttributionRequestException("reference", "DeepLift takes exactly one reference (use deeplift-shap for several)");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        return AttributeOne(model, batch, batch.ReferenceEmbeddings[0], options);
    }

    /// <summary>
    /// DeepLift against one reference, in passes of <see cref="TextsPerPass"/> texts: the multipliers autograd keeps
    /// for the backward grow with the batch (~100 MB a layer for 16 × 128 on bert-base), so a smaller pass bounds
    /// peak memory. Texts are independent, so the result is the same.
    /// </summary>
    internal static AttributionOutput AttributeOne(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options)
    {
        long n = batch.Size, per = TextsPerPass(model.Config, batch.Ids.shape[1], model.DType, options, n, batch.Ids.device.type);
        if (n <= per) return AttributeChunk(model, batch, reference, options);
        using var scope = NewDisposeScope();
        var parts = new List<AttributionOutput>();
        for (long start = 0; start < n; start += per)
        {
            long count = Math.Min(per, n - start);
            var slice = new AttributionBatch(batch.Ids.narrow(0, start, count), batch.AttentionMask.narrow(0, start, count),
                batch.ReferenceEmbeddings, batch.Targets?.AsSpan((int)start, (int)count).ToArray());
            var r = reference.shape[0] == n ? reference.narrow(0, start, count) : reference;
            parts.Add(AttributeChunk(model, slice, r, options));
        }
        var joined = new AttributionOutput(cat(parts.Select(p => p.Attributions).ToArray(), 0), cat(parts.Select(p => p.Scores).ToArray(), 0),
            cat(parts.Select(p => p.Fx).ToArray(), 0), cat(parts.Select(p => p.Fx0).ToArray(), 0), cat(parts.Select(p => p.Delta).ToArray(), 0),
            cat(parts.Select(p => p.Logits).ToArray(), 0), parts.SelectMany(p => p.Targets).ToArray());
        return Detach(joined, scope);
    }

    /// <summary>
    /// Texts per pass: as many as <see cref="MethodOptions.PassMemoryBytes"/> holds by <see cref="BytesPerText"/> (at
    /// least one, at most <see cref="MethodOptions.MaxRowsPerPass"/>), then evened out over the passes a batch of
    /// <paramref name="batchSize"/> needs (16 texts with room for 9 go as 8 + 8). On CPU the pass size hardly moves the
    /// time (bert-base, 16 × 128: passes of 4, 8, 16 took 0.46, 0.50, 0.49 s/text, peak RSS 1.15, 1.58, 2.46 GB), so
    /// the budget only has to say what memory the process may use.
    /// </summary>
    public static long TextsPerPass(Checkpoints.ModelConfig config, long length, ScalarType dtype, MethodOptions options, long? batchSize = null,
        TorchSharp.DeviceType device = TorchSharp.DeviceType.CPU)
    {
        long budget = options.PassMemoryBytes ?? MethodOptions.DefaultPassMemoryBytes(device);
        long byBudget = budget / Math.Max(1, BytesPerText(config, length, dtype));
        long per = Math.Clamp(byBudget, 1, Math.Max(1, options.MaxRowsPerPass));
        if (batchSize is not long n) return per;
        if (n <= per) return Math.Max(1, n);
        long passes = (n + per - 1) / per;
        return (n + passes - 1) / passes;
    }

    /// <summary>
    /// Memory one text of <paramref name="length"/> tokens adds to a DeepLift pass. Per layer the backward keeps one
    /// multiplier per element of: Q̄, K̄, V̄ and, in each of the two LayerNorms, (a + a0) and ā (7 · hidden · L); the two
    /// exp rules of the softmax and P̄ (3 · heads · L²); the GELU (intermediate · L). The rules' temporaries come on top:
    /// measured on bert-base at 128 tokens (80 MB of multipliers per text), the peak grew by 109 MB per text (passes of
    /// 4, 8, 16 under tcmalloc), so the estimate is 1.4 × the multipliers.
    /// </summary>
    public static long BytesPerText(Checkpoints.ModelConfig config, long length, ScalarType dtype)
    {
        long perLayer = 7L * config.HiddenSize * length + 3L * config.Heads * length * length + (long)config.IntermediateSize * length;
        long elementBytes = dtype switch { ScalarType.Float64 => 8, ScalarType.Float16 or ScalarType.BFloat16 => 2, _ => 4 };
        return perLayer * config.Layers * elementBytes * 14 / 10;
    }

    private static AttributionOutput AttributeChunk(ITextModel model, AttributionBatch batch, Tensor reference, MethodOptions options)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var x = model.WordEmbeddings(batch.Ids).detach().requires_grad_(true);
        var r = reference.detach();
        var ops = new DeepLiftOps(options.SoftmaxRule, options.PromoteMultipliers);
        Act f, logits;
        long[] targets;
        using (EngineTelemetry.Source.StartActivity("engine.forward"))
        {
            logits = model.Forward(ops, new Act(x, r), batch.AttentionMask);
            targets = AttributionMath.ResolveTargets(batch.Targets, logits.X);
            f = TargetOutput.Select(ops, logits, targets, options.Output);
        }
        using (EngineTelemetry.Source.StartActivity("engine.backward"))
        {
            f.X.sum().backward();
            Rules.RuleGradients.ReleaseHanded();
        }
        var attributions = (x.detach() - r) * x.grad!;
        var result = AttributionMath.Finish(attributions, f.X, f.Ref, logits.X, targets);
        return Detach(result, scope);
    }

    internal static AttributionOutput Detach(AttributionOutput o, TorchSharp.DisposeScope scope)
    {
        scope.MoveToOuter(o.Attributions, o.Scores, o.Fx, o.Fx0, o.Delta, o.Logits);
        return o;
    }
}

/// <summary>
/// DeepLiftShap: exact DeepLift against each of several references, attributions averaged; delta is taken
/// against the mean of the references' outputs, so it stays at rounding level too.
/// </summary>
public sealed class DeepLiftShap : IAttributionMethod
{
    public string Name => "deeplift-shap";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count == 0) throw new AttributionRequestException("reference", "deeplift-shap needs at least one reference");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        using var scope = NewDisposeScope();
        Tensor? attr = null, fx0 = null, fx = null, logits = null;
        foreach (var reference in batch.ReferenceEmbeddings)
        {
            // The first pass resolves predicted targets; the others explain the same ones.
            var one = DeepLift.AttributeOne(model, batch, reference, options);
            batch = batch with { Targets = one.Targets };
            attr = attr is null ? one.Attributions : attr + one.Attributions;
            fx0 = fx0 is null ? one.Fx0 : fx0 + one.Fx0;
            fx = one.Fx;
            logits ??= one.Logits;
        }
        int n = batch.ReferenceEmbeddings.Count;
        return DeepLift.Detach(AttributionMath.Finish(attr! / n, fx!, fx0! / n, logits!, batch.Targets!), scope);
    }
}
