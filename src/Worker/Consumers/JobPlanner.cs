using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine;
using AttributionFleet.Engine.Architectures;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>A job (or batch) that cannot be done as asked: becomes <see cref="AttributionJobFailed"/>, never a retry.</summary>
public sealed class JobRejectedException(string reasonCode, string? field, string message) : Exception(message)
{
    public string ReasonCode { get; } = reasonCode;
    public string? Field { get; } = field;

    /// <summary>The rejection for a known non-transient exception, or null for anything else (which may be transient).</summary>
    public static JobRejectedException? From(Exception e) => e switch
    {
        JobRejectedException r => r,
        UnknownModelException u => new(FailureReasons.UnknownModel, "model_id", u.Message),
        AttributionRequestException a => new(FailureReasons.InvalidRequest, a.Field, a.Message),
        ModelLoadException m => new(FailureReasons.ModelLoadFailed, m.Field ?? "model_id", m.Message),
        _ => null,
    };
}

/// <summary>
/// Checks a job against the limits, the configured models and the engine's request rules, then splits it into
/// as few batches of texts of nearby token lengths (longest first) as <c>TextsPerBatch</c> allows, cut where
/// <see cref="LengthBuckets.Plan"/> finds the least DeepLift cost (padding against reference rows and passes); each batch
/// then runs as padded passes of mixed lengths (<see cref="TextExplainer"/>). Lengths come from the model's tokenizer alone
/// (<see cref="TokenCounter"/>): planning never loads weights. Deterministic: a redelivered job gives the same batches.
/// </summary>
public sealed class JobPlanner(ModelRegistry registry, IAttributionEngine engine, IOptions<LimitsOptions> limits, IOptions<WorkerOptions> worker)
{
    private static readonly JsonSerializerOptions SizeJson = new(JsonSerializerDefaults.Web);

    public IReadOnlyList<ExplainAttributionBatch> Plan(SubmitAttributionJob job)
    {
        var l = limits.Value;
        if (job.JobId == Guid.Empty) throw Invalid("job_id", "the job has no JobId");
        var texts = job.Texts ?? Array.Empty<JobText>();
        if (texts.Count == 0) throw Invalid("texts", "the job has no texts");
        if (texts.Count > l.MaxTextsPerJob)
            throw Limit("Limits:MaxTextsPerJob", $"the job has {texts.Count} texts; the limit Limits:MaxTextsPerJob is {l.MaxTextsPerJob}");
        var ids = new HashSet<string>();
        for (int i = 0; i < texts.Count; i++)
        {
            var t = texts[i];
            if (t is null || AttributionFleet.Engine.Text.TextContent.IsBlank(t.Text)) throw Invalid($"texts[{i}]", $"text {i} (id '{t?.Id}') is empty");
            if (t.Text.Length > l.MaxCharactersPerText)
                throw Limit("Limits:MaxCharactersPerText", $"text {i} (id '{t.Id}') has {t.Text.Length} characters; the limit Limits:MaxCharactersPerText is {l.MaxCharactersPerText}");
            if (!ids.Add(t.Id ?? "")) throw Invalid($"texts[{i}].id", $"text id '{t.Id}' appears more than once");
        }
        long bytes = JsonSerializer.SerializeToUtf8Bytes(job, SizeJson).LongLength;
        if (bytes > l.MaxMessageBytes)
            throw Limit("Limits:MaxMessageBytes", $"the job message is {bytes} bytes; the limit Limits:MaxMessageBytes is {l.MaxMessageBytes}");

        var model = registry.Options(job.ModelId);
        var request = AttributionRequests.ToExplainRequest(job.Options ?? new AttributionOptions(), model);
        request.Validate();
        if (job.DeltaThreshold is < 0 || (job.DeltaThreshold is { } d && double.IsNaN(d))) throw Invalid("delta_threshold", "delta_threshold must be a non-negative number");
        if (job.RelativeDeltaThreshold is < 0 || (job.RelativeDeltaThreshold is { } rd && double.IsNaN(rd)))
            throw Invalid("relative_delta_threshold", "relative_delta_threshold must be a non-negative number");
        var (absolute, relative) = model.Thresholds(request.Method, job.DeltaThreshold, job.RelativeDeltaThreshold);
        if (job.TextsPerBatch is < 1) throw Invalid("texts_per_batch", "texts_per_batch must be positive");

        var textList = texts.Select(t => t.Text).ToList();
        int perBatch = Math.Max(1, job.TextsPerBatch ?? worker.Value.TextsPerBatch);
        int fewest = (texts.Count + perBatch - 1) / perBatch;
        List<List<int>> chunks;
        if (engine is TextAttributionEngine)
        {
            var folder = ModelRegistry.FolderOf(job.ModelId, model);
            var lengths = TokenCounter.Shared.Lengths(folder, textList, request.MaxLength);
            var device = registry.DeviceName.StartsWith("cpu", StringComparison.Ordinal) ? TorchSharp.DeviceType.CPU : TorchSharp.DeviceType.CUDA;
            var config = TokenCounter.Shared.For(folder).Config;
            chunks = LengthBuckets.Plan(lengths, perBatch, BucketCostModel.For(device, config.HiddenSize, ArchitectureRegistry.Of(config).PacksTokens), fewest);
        }
        else
        {
            // Another engine (a test double, a remote engine) counts its own tokens.
            var lengths = engine.TokenLengths(job.ModelId, textList, request.MaxLength);
            chunks = LengthBuckets.Plan(lengths, perBatch, BucketCostModel.Cpu(768), fewest);
        }
        var submitted = job.SubmittedAt == default ? DateTimeOffset.UtcNow : job.SubmittedAt;
        return chunks.Select((chunk, b) => new ExplainAttributionBatch
        {
            JobId = job.JobId,
            ModelId = job.ModelId,
            BatchIndex = b,
            BatchCount = chunks.Count,
            TextCount = texts.Count,
            Texts = chunk.Select(i => texts[i]).ToList(),
            Options = job.Options ?? new AttributionOptions(),
            DeltaThreshold = absolute,
            RelativeDeltaThreshold = relative,
            SubmittedAt = submitted,
        }).ToList();
    }

    private static JobRejectedException Invalid(string field, string message) => new(FailureReasons.InvalidRequest, field, message);
    private static JobRejectedException Limit(string limit, string message) => new(FailureReasons.LimitExceeded, limit, message);
}
