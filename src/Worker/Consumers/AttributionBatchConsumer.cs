using System.Diagnostics;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using AttributionFleet.Worker.Store;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// Explains one batch and commits its results to the job store. The batch message is acknowledged only when this returns,
/// i.e. after the commit: a worker that dies mid-batch loses nothing, the broker redelivers the batch, and a batch stored
/// twice is stored once (key (job, batch)). The commit that stores a job's last batch completes the job and publishes
/// <see cref="AttributionJobCompleted"/>: no client needs to be alive. Request errors fail the job at once; other exceptions
/// are retried with back-off and, after the last retry, fail the job as an engine error. A batch of a job that is not
/// running (failed, deleted, or never admitted) is not explained. Texts over the delta threshold are flagged, logged as
/// warnings, counted and announced as <see cref="AttributionDeltaExceeded"/>.
/// </summary>
public sealed class AttributionBatchConsumer(IAttributionEngine engine, ModelRegistry registry, IJobStore store, JobOutcomes outcomes,
    IOptions<WorkerOptions> worker, IOptions<StoreOptions> storeOptions, IOptions<LimitsOptions> limits, FleetMetrics metrics,
    ILogger<AttributionBatchConsumer> log) : IConsumer<ExplainAttributionBatch>
{
    public async Task Consume(ConsumeContext<ExplainAttributionBatch> context)
    {
        var batch = context.Message;
        using var scope = log.BeginScope(new Dictionary<string, object> { ["JobId"] = batch.JobId, ["BatchIndex"] = batch.BatchIndex, ["ModelId"] = batch.ModelId });
        if (context.ReceiveContext.Redelivered && context.GetRetryAttempt() == 0)
            log.LogInformation("Job {JobId} batch {Batch}: redelivered by the broker (its last holder died or disconnected)", batch.JobId, batch.BatchIndex);
        var status = await StoreRetry.Run(ct => store.Get(batch.JobId, ct), storeOptions.Value, log, context.CancellationToken);
        if (status is null || status.IsFinished)
        {
            // Never admitted (a batch published directly), deleted, or already ended: nothing to explain or store.
            log.LogInformation("Job {JobId} batch {Batch}: the job is {State}; batch dropped", batch.JobId, batch.BatchIndex, status?.State ?? "not in the store");
            if (status is not null)
                await outcomes.Publish(context, batch.JobId, await StoreRetry.Run(ct => store.PendingOutcome(batch.JobId, ct), storeOptions.Value, log, context.CancellationToken));
            return;
        }
        Activity.Current?.SetTag("attribution.job_id", batch.JobId.ToString());
        Activity.Current?.SetTag("attribution.batch_index", batch.BatchIndex);
        Activity.Current?.SetTag("attribution.model", batch.ModelId);
        string model = FleetMetrics.ModelTag(batch.ModelId, registry.ModelIds);
        var queued = TimeSpan.FromMilliseconds(Math.Max(0, (DateTime.UtcNow - (context.SentTime ?? DateTime.UtcNow)).TotalMilliseconds));
        if (context.GetRetryAttempt() == 0) metrics.BatchQueued(model, queued);
        using var inFlight = metrics.InFlight(model);
        var watch = Stopwatch.StartNew();
        var tags = new FleetMetrics.TextTags(model, batch.Options.Method ?? "default", batch.Options.SoftmaxRule ?? "default",
            batch.Options.Precision ?? "default", registry.DeviceName);
        string outcome = "error"; // an exception that escapes is retried (or, past the limit, fails the job below)
        IReadOnlyList<Explanation> explanations;
        try
        {
            try
            {
                BatchLimits.Check(batch, limits.Value);
                var request = AttributionRequests.ToExplainRequest(batch.Options, registry.Options(batch.ModelId));
                tags = tags with { Method = request.Method, SoftmaxRule = request.SoftmaxRule, Precision = request.Precision };
                explanations = engine.Explain(batch.ModelId, batch.Texts.Select(t => t.Text).ToList(), request);
            }
            catch (Exception e) when (JobRejectedException.From(e) is { } rejected)
            {
                outcome = "rejected";
                log.LogWarning("Job {JobId} batch {Batch} failed: {Reason} {Field}: {Message}", batch.JobId, batch.BatchIndex, rejected.ReasonCode, rejected.Field, rejected.Message);
                metrics.JobFailed(model, FleetMetrics.FailureReason(rejected.ReasonCode));
                await outcomes.Fail(context, batch.JobId, batch.ModelId, rejected, batch.BatchIndex);
                return;
            }
            catch (Exception e) when (context.GetRetryAttempt() >= worker.Value.RetryLimit)
            {
                outcome = "failed";
                log.LogError(e, "Job {JobId} batch {Batch} failed after {Retries} retries", batch.JobId, batch.BatchIndex, worker.Value.RetryLimit);
                metrics.JobFailed(model, FailureReasons.EngineError);
                await outcomes.Fail(context, batch.JobId, batch.ModelId,
                    new JobRejectedException(FailureReasons.EngineError, null, $"{e.GetType().Name}: {e.Message}"), batch.BatchIndex);
                return;
            }
            catch (Exception e)
            {
                log.LogWarning("Job {JobId} batch {Batch} attempt {Attempt} failed, will retry: {Error}", batch.JobId, batch.BatchIndex, context.GetRetryAttempt() + 1, e.Message);
                throw;
            }
            outcome = "ok";
        }
        finally
        {
            metrics.BatchDone(tags, outcome, watch.Elapsed);
        }

        double explainMs = watch.Elapsed.TotalMilliseconds;
        var results = explanations
            .Select((e, i) => AttributionRequests.ToResult(e, batch.Texts[i].Id, batch.DeltaThreshold, batch.RelativeDeltaThreshold, explainMs / explanations.Count))
            .ToList();
        foreach (var r in results) metrics.TextExplained(tags, r.Delta, r.RelativeDelta, r.Tokens.Count, r.OverThreshold);
        foreach (var r in results) metrics.TextChecked(tags, r);
        var completed = new AttributionBatchCompleted
        {
            JobId = batch.JobId,
            ModelId = batch.ModelId,
            BatchIndex = batch.BatchIndex,
            BatchCount = batch.BatchCount,
            TextCount = batch.TextCount,
            Results = results,
            DeltaThreshold = batch.DeltaThreshold,
            RelativeDeltaThreshold = batch.RelativeDeltaThreshold,
            SubmittedAt = batch.SubmittedAt,
            Worker = worker.Value.WorkerName,
            QueueMilliseconds = queued.TotalMilliseconds,
            ExplainMilliseconds = explainMs,
            CompletedAt = DateTimeOffset.UtcNow,
        };
        var commit = await StoreRetry.Run(ct => store.CommitBatch(completed, ct), storeOptions.Value, log, context.CancellationToken);
        if (commit.Kind is BatchCommitKind.Duplicate or BatchCommitKind.JobNotRunning)
        {
            // Stored before (a redelivery, a job split twice) or the job ended meanwhile: nothing new to announce.
            log.LogInformation("Job {JobId} batch {Batch}: {Kind}; nothing stored", batch.JobId, batch.BatchIndex,
                commit.Kind == BatchCommitKind.Duplicate ? "already stored" : "the job is no longer running");
            await outcomes.Publish(context, batch.JobId, commit.PendingOutcome);
            return;
        }
        foreach (var r in results.Where(r => r.OverThreshold))
        {
            log.LogWarning("Delta over threshold: job {JobId} text {TextId} model {ModelId} method {Method} softmax rule {SoftmaxRule}: " +
                "delta {Delta:G3} (threshold {Threshold}), relative delta {RelativeDelta:G3} (threshold {RelativeThreshold})",
                batch.JobId, r.Id, batch.ModelId, r.Method, r.SoftmaxRule, r.Delta, batch.DeltaThreshold?.ToString("G3") ?? "none",
                r.RelativeDelta, batch.RelativeDeltaThreshold?.ToString("G3") ?? "none");
            await context.Publish(new AttributionDeltaExceeded
            {
                JobId = batch.JobId,
                TextId = r.Id,
                ModelId = batch.ModelId,
                Method = r.Method,
                Delta = r.Delta,
                Threshold = batch.DeltaThreshold ?? 0,
                RelativeDelta = r.RelativeDelta,
                RelativeThreshold = batch.RelativeDeltaThreshold,
                SoftmaxRule = r.SoftmaxRule,
                Precision = r.Precision,
                Worker = worker.Value.WorkerName,
            }, context.CancellationToken);
        }
        if (batch.SubmittedAt != default) metrics.BatchLatency(model, DateTimeOffset.UtcNow - batch.SubmittedAt);
        log.LogInformation("Job {JobId} batch {Batch}/{Count}: {Texts} texts in {Ms:0} ms, {Over} over the delta threshold",
            batch.JobId, batch.BatchIndex + 1, batch.BatchCount, results.Count, explainMs, results.Count(r => r.OverThreshold));
        if (commit.Completed is { } done)
        {
            await outcomes.Publish(context, batch.JobId, new JobOutcomeEvent(done, null));
            metrics.JobFinished(model, "completed", TimeSpan.FromMilliseconds(done.WallMilliseconds));
            log.LogInformation("Job {JobId} completed: {Texts} texts in {Batches} batches, {Seconds:0.00} s", batch.JobId, done.TextCount, done.BatchCount,
                done.WallMilliseconds / 1000);
        }
    }
}
