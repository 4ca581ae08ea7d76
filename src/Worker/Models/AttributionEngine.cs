using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Hosting;

namespace AttributionFleet.Worker.Models;

/// <summary>The engine as the consumers see it: tokenize (to bucket a job) and explain (a batch).</summary>
public interface IAttributionEngine
{
    /// <summary>Token count of each text (after truncation), for bucketing. Throws for empty texts.</summary>
    IReadOnlyList<int> TokenLengths(string modelId, IReadOnlyList<string> texts, int? maxLength);

    IReadOnlyList<Explanation> Explain(string modelId, IReadOnlyList<string> texts, ExplainRequest request);
}

/// <summary>
/// The real engine: models from the <see cref="ModelRegistry"/>, explanations from <see cref="TextExplainer"/>, run on the
/// host's <see cref="Engine.EngineThreads"/> (the caller waits).
/// </summary>
public sealed class TextAttributionEngine(ModelRegistry registry, Microsoft.Extensions.Options.IOptions<WorkerOptions> worker, Engine.EngineThreads threads)
    : IAttributionEngine
{
    public IReadOnlyList<int> TokenLengths(string modelId, IReadOnlyList<string> texts, int? maxLength)
    {
        using var lease = registry.Acquire(modelId);
        return new TextExplainer(lease.Model).Tokenize(texts, maxLength).Select(t => t.Ids.Length).ToList();
    }

    public IReadOnlyList<Explanation> Explain(string modelId, IReadOnlyList<string> texts, ExplainRequest request)
    {
        using var lease = registry.Acquire(modelId);
        if (request.PassMemoryMB is null && worker.Value.PassMemoryMB > 0) request = request with { PassMemoryMB = worker.Value.PassMemoryMB };
        var model = lease.Model;
        return threads.Invoke(() => new TextExplainer(model).Explain(texts, request));
    }
}

/// <summary>Message options to an engine request, with the same defaults as <c>fleet explain</c> and the model's default method.</summary>
public static class AttributionRequests
{
    public static ExplainRequest ToExplainRequest(AttributionOptions o, ModelOptions model)
    {
        var method = o.Method ?? model.DefaultMethod;
        var defaults = new ExplainRequest();
        var references = o.References is { Count: > 0 } r ? r.ToList()
            : method is "deeplift-shap" or "gradient-shap" ? new List<string> { "pad", "mask", "unk", "zero" } : new List<string> { "pad" };
        return new ExplainRequest
        {
            Method = method,
            Target = o.Target,
            Output = o.Output ?? defaults.Output,
            SoftmaxRule = o.SoftmaxRule ?? defaults.SoftmaxRule,
            Precision = o.Precision ?? defaults.Precision,
            Steps = o.Steps ?? defaults.Steps,
            Integration = o.Integration ?? defaults.Integration,
            Samples = o.Samples ?? defaults.Samples,
            References = references,
            BatchSize = o.BatchSize ?? defaults.BatchSize,
            MaxLength = o.MaxLength,
            Faithfulness = o.Faithfulness ?? false,
            WeakReferenceThreshold = o.WeakReferenceThreshold ?? defaults.WeakReferenceThreshold,
        };
    }

    /// <summary>Over either threshold, or NaN (a NaN delta is never "within" a threshold).</summary>
    public static bool IsOverThreshold(double delta, double relativeDelta, double? threshold, double? relativeThreshold) =>
        (threshold is { } t && !(Math.Abs(delta) <= t)) || (relativeThreshold is { } r && !(Math.Abs(relativeDelta) <= r));

    public static TextAttribution ToResult(Explanation e, string id, double? threshold, double? relativeThreshold, double explainMs) => new()
    {
        Id = id,
        Text = e.Text,
        Tokens = e.Tokens,
        Offsets = e.Offsets.Select(o => new TokenSpan { Start = o.Start, Length = o.Length }).ToList(),
        Scores = e.Scores,
        Prediction = new PredictedLabel { Label = e.Prediction.Label, Index = e.Prediction.Index, Probability = e.Prediction.Probability },
        TargetIndex = e.TargetIndex,
        TargetLabel = e.TargetLabel,
        Output = e.Output,
        Fx = e.Fx,
        Fx0 = e.Fx0,
        Delta = e.Delta,
        RelativeDelta = e.RelativeDelta,
        Method = e.Method,
        SoftmaxRule = e.SoftmaxRule,
        Precision = e.Precision,
        Truncated = e.Truncated,
        // A non-finite text is never within a threshold, configured or not (it failed: status non_finite).
        OverThreshold = !NonFinite.IsFinite(e) || IsOverThreshold(e.Delta, e.RelativeDelta, threshold, relativeThreshold),
        Status = NonFinite.StatusOf(e),
        ExplainMilliseconds = explainMs,
        WeakReference = e.Reference?.Weak,
        ProbabilityChange = e.Reference?.ProbabilityChange,
        Classes = ResultExtras.Classes(e),
        Faithfulness = ResultExtras.Faithfulness(e.Faithfulness),
    };
}
