using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// Takes a job, checks it and splits it into batches sent to the shared batch queue; the job message is
/// acknowledged only after every batch and the acceptance are sent (a redelivered job re-sends the same batches,
/// which the collector de-duplicates by batch index). A job that cannot be done becomes <see cref="AttributionJobFailed"/>.
/// </summary>
public sealed class AttributionJobConsumer(JobPlanner planner, IOptions<WorkerOptions> worker, ILogger<AttributionJobConsumer> log)
    : IConsumer<SubmitAttributionJob>
{
    public async Task Consume(ConsumeContext<SubmitAttributionJob> context)
    {
        var job = context.Message;
        IReadOnlyList<ExplainAttributionBatch> batches;
        try
        {
            batches = planner.Plan(job);
        }
        catch (Exception e) when (JobRejectedException.From(e) is { } rejected)
        {
            log.LogWarning("Job {JobId} failed: {Reason} {Field}: {Message}", job.JobId, rejected.ReasonCode, rejected.Field, rejected.Message);
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
        log.LogInformation("Job {JobId}: {Texts} texts for model {ModelId} in {Batches} batches", job.JobId, job.Texts.Count, job.ModelId, batches.Count);
    }
}
