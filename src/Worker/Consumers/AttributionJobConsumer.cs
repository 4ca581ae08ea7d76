using AttributionFleet.Contracts.V1;
using System.Diagnostics;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using AttributionFleet.Worker.Store;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// Takes a job, checks it, admits it to the job store and splits it into batches sent to the shared batch queue; the job
/// message is acknowledged only after every batch is sent. A redelivered job (a worker killed mid-split) or the same job id
/// submitted again is the same stored job: its batches are sent again and stored once (the store's key is (job, batch)).
/// A job that cannot be done is failed in the store and announced as <see cref="AttributionJobFailed"/>, once.
/// </summary>
public sealed class AttributionJobConsumer(JobPlanner planner, IJobStore store, JobOutcomes outcomes, IOptions<WorkerOptions> worker,
    IOptions<StoreOptions> storeOptions, ModelRegistry registry, FleetMetrics metrics, ILogger<AttributionJobConsumer> log)
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
            await outcomes.Fail(context, job.JobId, job.ModelId ?? "", rejected, atAdmission: true);
            return;
        }
        var submitted = batches[0].SubmittedAt;
        var admission = await StoreRetry.Run(ct => store.Admit(new NewJob(job.JobId, job.ModelId, JobFingerprint.Of(job), job.Texts.Count, batches.Count,
            batches[0].DeltaThreshold, batches[0].RelativeDeltaThreshold, submitted), ct), storeOptions.Value, log, context.CancellationToken);
        switch (admission)
        {
            case Admission.Conflict:
                log.LogWarning("Job {JobId} refused: the id is taken by a job with other texts or options; the stored job is left as it is", job.JobId);
                metrics.JobTaken(model, "rejected");
                return;
            case Admission.Finished:
                log.LogInformation("Job {JobId} is already finished: nothing to send", job.JobId);
                await outcomes.Publish(context, job.JobId, await StoreRetry.Run(ct => store.PendingOutcome(job.JobId, ct), storeOptions.Value, log, context.CancellationToken));
                return;
        }
        var batchQueue = await context.GetSendEndpoint(new Uri($"queue:{worker.Value.BatchQueue}"));
        foreach (var batch in batches) await batchQueue.Send(batch, context.CancellationToken);
        await context.Publish(new AttributionJobAccepted
        {
            JobId = job.JobId,
            ModelId = job.ModelId,
            TextCount = job.Texts.Count,
            BatchCount = batches.Count,
            AcceptedAt = DateTimeOffset.UtcNow,
        }, context.CancellationToken);
        metrics.JobTaken(model, "accepted");
        log.LogInformation("Job {JobId}: {Texts} texts for model {ModelId} in {Batches} batches{Again}", job.JobId, job.Texts.Count, job.ModelId, batches.Count,
            admission == Admission.Running ? " (already admitted: batches sent again, stored once)" : "");
    }
}
