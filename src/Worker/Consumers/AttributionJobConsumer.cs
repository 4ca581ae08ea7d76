using AttributionFleet.Contracts.V1;
using System.Diagnostics;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// Takes a job, checks it and splits it into batches sent to the shared batch queue; the job message is
/// acknowledged only after every batch and the acceptance are sent (a redelivered job re-sends the same batches,
/// which the collector de-duplicates by batch index). A job that cannot be done becomes <see cref="AttributionJobFailed"/>.
/// </summary>
public sealed class AttributionJobConsumer(JobPlanner planner, IOptions<WorkerOptions> worker, ModelRegistry registry, FleetMetrics metrics,
    ILogger<AttributionJobConsumer> log)
    : IConsumer<SubmitAttributionJob>
{
    public async Task Consume(ConsumeContext<SubmitAttributionJob> context)
    {
        var job = context.Message;
        using var scope = log.BeginScope(new Dictionary<string, object> { ["JobId"] = job.JobId, ["ModelId"] = job.ModelId });
        Activity.Current?.SetTag("attribution.job_id", job.JobId.ToString());
        Activity.Current?.SetTag("attribution.model", job.ModelId);
        string model = FleetMetrics.ModelTag(job.ModelId, registry.ModelIds);
        IReadOnlyList<ExplainAttributionBatch> batches;
        try
        {
            batches = planner.Plan(job);
        }
        catch (Exception e) when (JobRejectedException.From(e) is { } rejected)
        {
            log.LogWarning("Job {JobId} failed: {Reason} {Field}: {Message}", job.JobId, rejected.ReasonCode, rejected.Field, rejected.Message);
            metrics.JobTaken(model, "rejected");
            metrics.JobFailed(model, FleetMetrics.FailureReason(rejected.ReasonCode));
            await JobFailures.Fail(context, job.JobId, rejected);
            return;
        }
        var batchQueue = await context.GetSendEndpoint(new Uri($"queue:{worker.Value.BatchQueue}"));
        foreach (var batch in batches) await batchQueue.Send(batch, context.CancellationToken);
        var accepted = new AttributionJobAccepted
        {
            JobId = job.JobId,
            ModelId = job.ModelId,
            TextCount = job.Texts.Count,
            BatchCount = batches.Count,
            AcceptedAt = DateTimeOffset.UtcNow,
        };
        var results = await context.GetSendEndpoint(JobFailures.ResultAddress(job.JobId));
        await results.Send(accepted, context.CancellationToken);
        await context.Publish(accepted, context.CancellationToken);
        metrics.JobTaken(model, "accepted");
        log.LogInformation("Job {JobId}: {Texts} texts for model {ModelId} in {Batches} batches", job.JobId, job.Texts.Count, job.ModelId, batches.Count);
    }
}
