using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Store;
using MassTransit;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Worker.Consumers;

/// <summary>Ends jobs through the store, which decides who ends a job, and publishes the end event exactly then.</summary>
public sealed class JobOutcomes(IJobStore store, Microsoft.Extensions.Options.IOptions<StoreOptions> options, Models.ModelRegistry registry,
    Telemetry.FleetMetrics metrics, ILogger<JobOutcomes> log)
{
    /// <summary>
    /// Fails the job and publishes <see cref="AttributionJobFailed"/> when this call is the one that failed it.
    /// <paramref name="atAdmission"/>: a job refused before it was admitted; a job id already in the store is left as it is
    /// (the same id submitted again is the same job).
    /// </summary>
    public async Task Fail(ConsumeContext context, Guid jobId, string modelId, JobRejectedException reason, int? batchIndex = null, bool atAdmission = false)
    {
        var failed = new AttributionJobFailed
        {
            JobId = jobId,
            ReasonCode = reason.ReasonCode,
            Message = reason.Message,
            Field = reason.Field,
            BatchIndex = batchIndex,
            FailedAt = DateTimeOffset.UtcNow,
        };
        var outcome = await StoreRetry.Run(ct => store.Fail(failed, modelId, atAdmission, ct), options.Value, log, context.CancellationToken);
        if (outcome?.Failed?.FailedAt == failed.FailedAt)
            metrics.JobFinished(Telemetry.FleetMetrics.ModelTag(modelId, registry.ModelIds), "failed",
                DateTime.UtcNow - (context.SentTime ?? DateTime.UtcNow));
        await Publish(context, jobId, outcome);
    }

    /// <summary>Publishes a job's end event that the store holds unpublished, then marks it published.</summary>
    public async Task Publish(ConsumeContext context, Guid jobId, JobOutcomeEvent? outcome)
    {
        if (outcome is null) return;
        if (outcome.Completed is { } completed) await context.Publish(completed, context.CancellationToken);
        else if (outcome.Failed is { } failed) await context.Publish(failed, context.CancellationToken);
        await StoreRetry.Run(ct => store.MarkOutcomePublished(jobId, ct), options.Value, log, context.CancellationToken);
    }
}
