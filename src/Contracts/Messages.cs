namespace AttributionFleet.Contracts.V1;

// Version 1 of the fleet's messages. A breaking change gets a new namespace (V2) so both can be
// consumed side by side while workers are upgraded. Records only: no logic, no engine types.

/// <summary>One text of a job with the client's id for it (echoed in every result).</summary>
public sealed record JobText
{
    public string Id { get; init; } = "";
    public string Text { get; init; } = "";
}

/// <summary>How to explain, as the flags of <c>fleet explain</c>; null fields take the engine's (or the model's) default.</summary>
public sealed record AttributionOptions
{
    /// <summary>deeplift, deeplift-shap, integrated-gradients, gradient-shap, saliency, input-x-gradient.</summary>
    public string? Method { get; init; }
    /// <summary>Label name or class index; null explains the predicted class.</summary>
    public string? Target { get; init; }
    /// <summary>centered-logit, logit or probability.</summary>
    public string? Output { get; init; }
    /// <summary>exact, rescale or row-mean.</summary>
    public string? SoftmaxRule { get; init; }
    /// <summary>float32 or float64.</summary>
    public string? Precision { get; init; }
    public int? Steps { get; init; }
    /// <summary>gauss-legendre or riemann-trapezoid.</summary>
    public string? Integration { get; init; }
    public int? Samples { get; init; }
    /// <summary>pad, mask, unk, zero or a custom text; several for the SHAP methods.</summary>
    public IReadOnlyList<string>? References { get; init; }
    /// <summary>Texts per forward pass inside a worker.</summary>
    public int? BatchSize { get; init; }
    public int? MaxLength { get; init; }
    /// <summary>Also measure faithfulness per text (comprehensiveness, sufficiency, AOPC); null = no.</summary>
    public bool? Faithfulness { get; init; }
    /// <summary>|p_c(x) − p_c(x0)| below this flags a result's reference as weak; null = 0.05.</summary>
    public double? WeakReferenceThreshold { get; init; }
}

/// <summary>Command: explain these texts with this configured model. Sent to the job queue.</summary>
public sealed record SubmitAttributionJob
{
    public Guid JobId { get; init; }
    /// <summary>A model id from the workers' configuration (<c>Models:&lt;id&gt;:Path</c>), never a path.</summary>
    public string ModelId { get; init; } = "";
    public IReadOnlyList<JobText> Texts { get; init; } = Array.Empty<JobText>();
    public AttributionOptions Options { get; init; } = new();
    /// <summary>|delta| above this marks a text OverThreshold and raises <see cref="AttributionDeltaExceeded"/>. The worker uses the
    /// stricter of this and the configured threshold of the model and method (a job cannot loosen it); null = the configured one.</summary>
    public double? DeltaThreshold { get; init; }
    /// <summary>The same for |delta| / |f(x) − f(x0)|.</summary>
    public double? RelativeDeltaThreshold { get; init; }
    /// <summary>Texts per batch message (null = the worker's default).</summary>
    public int? TextsPerBatch { get; init; }
    public DateTimeOffset SubmittedAt { get; init; }
}

/// <summary>Command (worker to worker): one batch of a job, texts of similar token length. Sent to the batch queue.</summary>
public sealed record ExplainAttributionBatch
{
    public Guid JobId { get; init; }
    public string ModelId { get; init; } = "";
    public int BatchIndex { get; init; }
    public int BatchCount { get; init; }
    public int TextCount { get; init; }
    public IReadOnlyList<JobText> Texts { get; init; } = Array.Empty<JobText>();
    public AttributionOptions Options { get; init; } = new();
    /// <summary>The effective |delta| threshold (job and configuration resolved by the planner).</summary>
    public double? DeltaThreshold { get; init; }
    /// <summary>The effective relative delta threshold.</summary>
    public double? RelativeDeltaThreshold { get; init; }
    public DateTimeOffset SubmittedAt { get; init; }
}

/// <summary>Event: the job passed validation and was split into <see cref="BatchCount"/> batches.</summary>
public sealed record AttributionJobAccepted
{
    public Guid JobId { get; init; }
    public string ModelId { get; init; } = "";
    public int TextCount { get; init; }
    public int BatchCount { get; init; }
    public DateTimeOffset AcceptedAt { get; init; }
}

public sealed record PredictedLabel
{
    public string Label { get; init; } = "";
    public int Index { get; init; }
    public double Probability { get; init; }
}

/// <summary>Where a token's characters are in its text.</summary>
public sealed record TokenSpan
{
    public int Start { get; init; }
    public int Length { get; init; }
}

/// <summary>One explained text: the fields of <c>fleet explain --json</c> plus the client id and timings.</summary>
public sealed record TextAttribution
{
    public string Id { get; init; } = "";
    public string Text { get; init; } = "";
    public IReadOnlyList<string> Tokens { get; init; } = Array.Empty<string>();
    /// <summary>Each token's characters in <see cref="Text"/> (as <c>fleet explain --json</c> gives them; length 0 for special tokens).
    /// Added in 1.1: null from older workers.</summary>
    public IReadOnlyList<TokenSpan>? Offsets { get; init; }
    public IReadOnlyList<double> Scores { get; init; } = Array.Empty<double>();
    public PredictedLabel Prediction { get; init; } = new();
    public int TargetIndex { get; init; }
    public string TargetLabel { get; init; } = "";
    public string Output { get; init; } = "";
    public double Fx { get; init; }
    public double Fx0 { get; init; }
    public double Delta { get; init; }
    public double RelativeDelta { get; init; }
    public string Method { get; init; } = "";
    public string SoftmaxRule { get; init; } = "";
    public string Precision { get; init; } = "";
    public bool Truncated { get; init; }
    /// <summary>|Delta| or RelativeDelta is above the job's threshold (or is NaN).</summary>
    public bool OverThreshold { get; init; }
    /// <summary>
    /// <c>ok</c>, or <c>non_finite</c> when f(x), f(x0), the delta, the probability or a score is NaN or infinite: the
    /// text failed (its numbers mean nothing; clients write them as JSON null). Added in place: old readers ignore it.
    /// </summary>
    public string Status { get; init; } = "ok";
    /// <summary>This text's share of the batch's engine time (batch time / texts).</summary>
    public double ExplainMilliseconds { get; init; }
    /// <summary>|p_c(x) − p_c(x0)| is below the weak-reference threshold: the scores may be exact and still say little (null: not checked).</summary>
    public bool? WeakReference { get; init; }
    /// <summary>p_c(x) − p_c(x0) for the explained class c.</summary>
    public double? ProbabilityChange { get; init; }
    /// <summary>Target "all": one attribution row per class, in class order.</summary>
    public IReadOnlyList<ClassAttributionRow>? Classes { get; init; }
    /// <summary>Faithfulness of the scores, when the job asked for it.</summary>
    public TextFaithfulness? Faithfulness { get; init; }
}

/// <summary>One class's attribution of a text (target "all"); fields as in <see cref="TextAttribution"/>.</summary>
public sealed record ClassAttributionRow
{
    public int TargetIndex { get; init; }
    public string TargetLabel { get; init; } = "";
    public IReadOnlyList<double> Scores { get; init; } = Array.Empty<double>();
    public double Fx { get; init; }
    public double Fx0 { get; init; }
    public double Delta { get; init; }
    public double RelativeDelta { get; init; }
    public bool? WeakReference { get; init; }
    public double? ProbabilityChange { get; init; }
}

/// <summary>Faithfulness of one text's scores (changes of the explained class's probability; see the engine's FaithfulnessEvaluator).</summary>
public sealed record TextFaithfulness
{
    public IReadOnlyList<double> Fractions { get; init; } = Array.Empty<double>();
    public IReadOnlyList<int> Tokens { get; init; } = Array.Empty<int>();
    public IReadOnlyList<double> Comprehensiveness { get; init; } = Array.Empty<double>();
    public IReadOnlyList<double> Sufficiency { get; init; } = Array.Empty<double>();
    public double ComprehensivenessMean { get; init; }
    public double SufficiencyMean { get; init; }
    public double AopcDeletion { get; init; }
    public double AopcInsertion { get; init; }
    public int CurvePoints { get; init; }
    public double Probability { get; init; }
    public int PerturbedInputs { get; init; }
    public double Milliseconds { get; init; }
}

/// <summary>Event: one batch explained. Sent to the job's result queue; ids tie it to its job.</summary>
public sealed record AttributionBatchCompleted
{
    public Guid JobId { get; init; }
    public string ModelId { get; init; } = "";
    public int BatchIndex { get; init; }
    public int BatchCount { get; init; }
    public int TextCount { get; init; }
    public IReadOnlyList<TextAttribution> Results { get; init; } = Array.Empty<TextAttribution>();
    /// <summary>The |delta| threshold the OverThreshold flags used (null = none).</summary>
    public double? DeltaThreshold { get; init; }
    /// <summary>The relative delta threshold the OverThreshold flags used (null = none).</summary>
    public double? RelativeDeltaThreshold { get; init; }
    /// <summary>When the job was submitted (for the job's wall time).</summary>
    public DateTimeOffset SubmittedAt { get; init; }
    /// <summary>Which worker explained it (host/process).</summary>
    public string Worker { get; init; } = "";
    /// <summary>Time in the queue before this worker took it.</summary>
    public double QueueMilliseconds { get; init; }
    /// <summary>Engine time for the whole batch.</summary>
    public double ExplainMilliseconds { get; init; }
    public DateTimeOffset CompletedAt { get; init; }
}

public sealed record DeltaSummary
{
    public double Max { get; init; }
    public double Mean { get; init; }
    public double P95 { get; init; }
    public int OverThreshold { get; init; }
    public double? Threshold { get; init; }
}

/// <summary>Event: every batch of the job was collected. Published once, by whoever collected the last batch.</summary>
public sealed record AttributionJobCompleted
{
    public Guid JobId { get; init; }
    public string ModelId { get; init; } = "";
    public int TextCount { get; init; }
    public int BatchCount { get; init; }
    /// <summary>Duplicate batch results (redeliveries) seen and dropped.</summary>
    public int DuplicateBatches { get; init; }
    /// <summary>Over |delta| of every text.</summary>
    public DeltaSummary Delta { get; init; } = new();
    /// <summary>From submission to the last batch collected.</summary>
    public double WallMilliseconds { get; init; }
    public DateTimeOffset CompletedAt { get; init; }
    /// <summary>Per-job faithfulness summaries, when the job asked for faithfulness.</summary>
    public JobFaithfulnessSummary? Faithfulness { get; init; }
    /// <summary>Texts whose reference was weak (null when no result was checked).</summary>
    public int? WeakReferences { get; init; }
}

/// <summary>Mean, 5th and 95th percentile of one metric over a job's texts (nearest rank; Count finite values).</summary>
public sealed record MetricSummary
{
    public int Count { get; init; }
    public double Mean { get; init; }
    public double P5 { get; init; }
    public double P95 { get; init; }
}

/// <summary>Faithfulness over a job: per-text means over k of comprehensiveness and sufficiency, and the two AOPCs.</summary>
public sealed record JobFaithfulnessSummary
{
    public MetricSummary Comprehensiveness { get; init; } = new();
    public MetricSummary Sufficiency { get; init; } = new();
    public MetricSummary AopcDeletion { get; init; } = new();
    public MetricSummary AopcInsertion { get; init; } = new();
    /// <summary>Perturbed inputs sent through the model for the whole job (its cost, in single-text forwards).</summary>
    public long PerturbedInputs { get; init; }
}

/// <summary>Reason codes of <see cref="AttributionJobFailed"/>.</summary>
public static class FailureReasons
{
    public const string UnknownModel = "unknown-model";
    public const string InvalidRequest = "invalid-request";
    public const string LimitExceeded = "limit-exceeded";
    public const string ModelLoadFailed = "model-load-failed";
    public const string EngineError = "engine-error";
}

/// <summary>Event: the job cannot complete. Sent to the job's result queue and published.</summary>
public sealed record AttributionJobFailed
{
    public Guid JobId { get; init; }
    /// <summary>One of <see cref="FailureReasons"/>.</summary>
    public string ReasonCode { get; init; } = "";
    public string Message { get; init; } = "";
    /// <summary>The request field at fault (e.g. <c>method</c>, <c>texts[3]</c>, <c>model_id</c>), or the limit's name.</summary>
    public string? Field { get; init; }
    /// <summary>The batch that failed, when a batch did.</summary>
    public int? BatchIndex { get; init; }
    public DateTimeOffset FailedAt { get; init; }
}

/// <summary>Event: one text's |delta| (or relative delta) exceeded the threshold (published, for alerting).</summary>
public sealed record AttributionDeltaExceeded
{
    public Guid JobId { get; init; }
    public string TextId { get; init; } = "";
    public string ModelId { get; init; } = "";
    public string Method { get; init; } = "";
    public double Delta { get; init; }
    /// <summary>The |delta| threshold (0 when only a relative threshold was set).</summary>
    public double Threshold { get; init; }
    public double RelativeDelta { get; init; }
    public double? RelativeThreshold { get; init; }
    public string SoftmaxRule { get; init; } = "";
    public string Precision { get; init; } = "";
    public string Worker { get; init; } = "";
}

/// <summary>Queue and address names shared by workers and clients.</summary>
public static class FleetAddresses
{
    /// <summary>Where <see cref="SubmitAttributionJob"/> goes.</summary>
    public const string JobQueue = "attribution-jobs";
    /// <summary>Where <see cref="ExplainAttributionBatch"/> goes (shared by all workers).</summary>
    public const string BatchQueue = "attribution-batches";
    /// <summary>The durable per-job result queue: accepted, batch results and failure of one job, until collected.</summary>
    public static string ResultQueue(Guid jobId) => $"attribution-results-{jobId:N}";
}
