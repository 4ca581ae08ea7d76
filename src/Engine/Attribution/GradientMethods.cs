using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>Plain-gradient plumbing shared by the gradient-based methods.</summary>
internal static class Gradients
{
    /// <summary>
    /// ∇f at word embeddings <paramref name="embeddings"/> [N, L, H] (N rows, each with its mask/target row; null
    /// targets: each row's predicted class), with the output, the logits and the targets used.
    /// </summary>
    public static (Tensor Grad, Tensor F, Tensor Logits, long[] Targets) At(ITextModel model, Tensor embeddings, Tensor mask, long[]? targets, OutputKind output)
    {
        using var grad = enable_grad();
        var e = embeddings.detach().requires_grad_(true);
        var logits = model.Forward(PlainOps.Instance, new Act(e), mask);
        var resolved = AttributionMath.ResolveTargets(targets, logits.X);
        var f = TargetOutput.Select(PlainOps.Instance, logits, resolved, output).X;
        f.sum().backward();
        return (e.grad!.detach(), f.detach(), logits.X.detach(), resolved);
    }

    /// <summary>Plain output for word embeddings, no autograd: the explained output, the logits and the targets used.</summary>
    public static (Tensor F, Tensor Logits, long[] Targets) Output(ITextModel model, Tensor embeddings, Tensor mask, long[]? targets, OutputKind output)
    {
        using var _ = no_grad();
        var logits = model.Forward(PlainOps.Instance, new Act(embeddings), mask);
        var resolved = AttributionMath.ResolveTargets(targets, logits.X);
        return (TargetOutput.Select(PlainOps.Instance, logits, resolved, output).X, logits.X, resolved);
    }

    /// <summary>
    /// Σ_k w_k ∇f(p_k) for path points p_k = r + α_k (x − r) (plus optional noise), batched as (point × text)
    /// rows up to <paramref name="maxRows"/> per pass to bound memory.
    /// </summary>
    public static Tensor WeightedPathGradients(ITextModel model, Tensor x, Tensor r, Tensor mask, long[] targets,
        OutputKind output, double[] alphas, double[] weights, int maxRows, Func<int, Tensor>? noise = null) =>
        WeightedPathGradients((points, masks, rowTargets) => At(model, points, masks, rowTargets, output).Grad,
            x, r, mask, targets, alphas, weights, maxRows, noise);

    /// <summary>The same for any gradient <paramref name="gradientAt"/>(points [N, L, H], masks [N, L], targets [N]) (a test seam).</summary>
    internal static Tensor WeightedPathGradients(Func<Tensor, Tensor, long[], Tensor> gradientAt, Tensor x, Tensor r, Tensor mask,
        long[] targets, double[] alphas, double[] weights, int maxRows, Func<int, Tensor>? noise = null)
    {
        long b = x.shape[0];
        int perPass = Math.Max(1, maxRows / (int)b);
        var total = zeros_like(x);
        for (int start = 0; start < alphas.Length; start += perPass)
        {
            using var scope = NewDisposeScope();
            int count = Math.Min(perPass, alphas.Length - start);
            var a = tensor(alphas.AsSpan(start, count).ToArray(), dtype: x.dtype, device: x.device).reshape(count, 1, 1, 1);
            var points = r.unsqueeze(0) + a * (x - r).unsqueeze(0); // [count, B, L, H]
            if (noise is not null) points = points + stack(Enumerable.Range(start, count).Select(noise).ToArray());
            var flat = points.reshape(count * b, x.shape[1], x.shape[2]);
            var masks = mask.repeat(count, 1);
            var rowTargets = Enumerable.Repeat(targets, count).SelectMany(t => t).ToArray();
            var g = gradientAt(flat, masks, rowTargets);
            var w = tensor(weights.AsSpan(start, count).ToArray(), dtype: x.dtype, device: x.device).reshape(count, 1, 1, 1);
            total.add_((g.reshape(count, b, x.shape[1], x.shape[2]) * w).sum(0L)); // 0L: a literal 0 binds to sum(ScalarType) and sums everything into a Byte
        }
        return total;
    }
}

/// <summary>
/// Integrated Gradients: <c>(x − x0) · Σ_k w_k ∇f(x0 + α_k (x − x0))</c> with Gauss–Legendre or trapezoid nodes on
/// [0, 1]; <c>delta = f(x) − f(x0) − Σ attributions</c> shrinks as steps grow.
/// </summary>
public sealed class IntegratedGradients : IAttributionMethod
{
    public string Name => "integrated-gradients";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count != 1) throw new AttributionRequestException("reference", "integrated-gradients takes exactly one reference");
        if (options.Steps < 1) throw new AttributionRequestException("steps", $"steps must be at least 1, got {options.Steps}");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        using var scope = NewDisposeScope();
        var x = model.WordEmbeddings(batch.Ids).detach();
        var r = batch.ReferenceEmbeddings[0].detach().expand_as(x);
        var (alphas, weights) = options.Integration == IntegrationRule.GaussLegendre
            ? AttributionMath.GaussLegendre(options.Steps)
            : AttributionMath.RiemannTrapezoid(options.Steps);
        var (fx, logits, targets) = Gradients.Output(model, x, batch.AttentionMask, batch.Targets, options.Output);
        var g = Gradients.WeightedPathGradients(model, x, r, batch.AttentionMask, targets, options.Output, alphas, weights, options.MaxRowsPerPass);
        var fx0 = Gradients.Output(model, r, batch.AttentionMask, targets, options.Output).F;
        return DeepLift.Detach(AttributionMath.Finish((x - r) * g, fx, fx0, logits, targets), scope);
    }
}

/// <summary>
/// GradientSHAP: expected gradients with random references (drawn from the given ones), random α ~ U(0, 1)
/// and optional Gaussian noise: <c>E[(x − r) · ∇f(r + α (x − r) + ε)]</c>. Delta is against the mean reference output.
/// </summary>
public sealed class GradientShap : IAttributionMethod
{
    public string Name => "gradient-shap";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options)
    {
        if (batch.ReferenceEmbeddings.Count == 0) throw new AttributionRequestException("reference", "gradient-shap needs at least one reference");
        if (options.Samples < 1) throw new AttributionRequestException("samples", $"samples must be at least 1, got {options.Samples}");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        using var scope = NewDisposeScope();
        var x = model.WordEmbeddings(batch.Ids).detach();
        var rng = new Random(options.Seed);
        var gen = new TorchSharp.torch.Generator((ulong)options.Seed);
        var total = zeros_like(x);
        var (fx, logits, targets) = Gradients.Output(model, x, batch.AttentionMask, batch.Targets, options.Output);
        Tensor fx0Sum = zeros(x.shape[0], dtype: x.dtype, device: x.device);
        foreach (var (reference, i) in batch.ReferenceEmbeddings.Select((t, i) => (t, i)))
        {
            var r = reference.detach().expand_as(x);
            fx0Sum = fx0Sum + Gradients.Output(model, r, batch.AttentionMask, targets, options.Output).F;
        }
        for (int s = 0; s < options.Samples; s++)
        {
            var r = batch.ReferenceEmbeddings[rng.Next(batch.ReferenceEmbeddings.Count)].detach().expand_as(x);
            double alpha = rng.NextDouble();
            Func<int, Tensor>? noise = options.NoiseStdDev > 0
                ? _ => randn(x.shape, dtype: x.dtype, device: x.device, generator: gen) * options.NoiseStdDev
                : null;
            var g = Gradients.WeightedPathGradients(model, x, r, batch.AttentionMask, targets, options.Output,
                new[] { alpha }, new[] { 1.0 }, options.MaxRowsPerPass, noise);
            total.add_((x - r) * g);
        }
        return DeepLift.Detach(AttributionMath.Finish(total / options.Samples, fx, fx0Sum / batch.ReferenceEmbeddings.Count, logits, targets), scope);
    }
}

/// <summary>Saliency: <c>|∇f(x)|</c> (Captum's default abs=True). No completeness; delta is reported for comparison.</summary>
public sealed class Saliency : IAttributionMethod
{
    public string Name => "saliency";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options) =>
        GradientTimes(model, batch, options, (x, g) => g.abs());

    internal static AttributionOutput GradientTimes(ITextModel model, AttributionBatch batch, MethodOptions options, Func<Tensor, Tensor, Tensor> combine)
    {
        if (batch.ReferenceEmbeddings.Count < 1) throw new AttributionRequestException("reference", "a reference is needed to report delta");
        AttributionMath.CheckTargets(batch.Targets, model.OutputSize);
        using var scope = NewDisposeScope();
        var x = model.WordEmbeddings(batch.Ids).detach();
        var (g, fx, logits, targets) = Gradients.At(model, x, batch.AttentionMask, batch.Targets, options.Output);
        var r = batch.ReferenceEmbeddings[0].detach().expand_as(x);
        var fx0 = Gradients.Output(model, r, batch.AttentionMask, targets, options.Output).F;
        return DeepLift.Detach(AttributionMath.Finish(combine(x, g), fx, fx0, logits, targets), scope);
    }
}

/// <summary>Input × Gradient: <c>x · ∇f(x)</c>. No completeness; delta is reported for comparison.</summary>
public sealed class InputXGradient : IAttributionMethod
{
    public string Name => "input-x-gradient";

    public AttributionOutput Attribute(ITextModel model, AttributionBatch batch, MethodOptions options) =>
        Saliency.GradientTimes(model, batch, options, (x, g) => x * g);
}

/// <summary>The methods by their command-line and message names.</summary>
public static class AttributionMethods
{
    public static readonly string[] Names = { "deeplift", "deeplift-shap", "integrated-gradients", "gradient-shap", "saliency", "input-x-gradient" };

    public static IAttributionMethod Create(string name) => name switch
    {
        "deeplift" => new DeepLift(),
        "deeplift-shap" => new DeepLiftShap(),
        "integrated-gradients" => new IntegratedGradients(),
        "gradient-shap" => new GradientShap(),
        "saliency" => new Saliency(),
        "input-x-gradient" => new InputXGradient(),
        _ => throw new AttributionRequestException("method", $"unknown method '{name}'; expected one of: {string.Join(", ", Names)}"),
    };
}
