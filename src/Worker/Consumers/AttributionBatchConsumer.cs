using System.Diagnostics;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Consumers;

/// <summary>
/// Explains one batch and sends its results to the job's durable result queue. The batch message is acknowledged
/// only when this returns, i.e. after the results are sent (and confirmed by the broker): a worker that dies
/// mid-batch loses nothing, the broker redelivers the batch. Request errors fail the job at once; other
/// exceptions are retried with back-off and, after the last retry, fail the job as an engine error.
/// </summary>
public sealed class AttributionBatchConsumer(IAttributionEngine engine, ModelRegistry registry, IOptions<WorkerOptions> worker,
    ILogger<AttributionBatchConsumer> log) : IConsumer<ExplainAttributionBatch>
{
    public async Task Consume(ConsumeContext<ExplainAttributionBatch> context)
    {
        var batch = context.Message;
        double queueMs = Math.Max(0, (DateTime.UtcNow - (context.SentTime ?? DateTime.UtcNow)).TotalMilliseconds);
        var watch = Stopwatch.StartNew();
        IReadOnlyList<Explanation> explanations;
        try
        {
            var request = AttributionRequests.ToExplainRequest(batch.Options, registry.Options(batch.ModelId));
            explanations = engine.Explain(batch.ModelId, batch.Texts.Select(t => t.Text).ToList(), request);
        }
        catch (Exception e) when (JobRejectedException.From(e) is { } rejected)
        {
            log.LogWarning("Job {JobId} batch {Batch} failed: {Reason} {Field}: {Message}", batch.JobId, batch.BatchIndex, rejected.ReasonCode, rejected.Field, rejected.Message);
            await JobFailures.Fail(context, batch.JobId, rejected, batch.BatchIndex);
            return;
        }
        catch (Exception e) when (context.GetRetryAttempt() >= worker.Value.RetryLimit)
        {
            log.LogError(e, "Job {JobId} batch {Batch} failed after {Retries} retries", batch.JobId, batch.BatchIndex, worker.Value.RetryLimit);
            await JobFailures.Fail(context, batch.JobId,
                new JobRejectedException(FailureReasons.EngineError, null, $"{e.GetType().Name}: {e.Message}"), batch.BatchIndex);
            return;
        }
        double explainMs = watch.Elapsed.TotalMilliseconds;
        var results = explanations
            .Select((e, i) => AttributionRequests.ToResult(e, batch.Texts[i].Id, batch.DeltaThreshold, explainMs / explanations.Count))
            .ToList();
        var completed = new AttributionBatchCompleted
        {
            JobId = batch.JobId,
            ModelId = batch.ModelId,
            BatchIndex = batch.BatchIndex,
            BatchCount = batch.BatchCount,
            TextCount = batch.TextCount,
            Results = results,
            DeltaThreshold = batch.DeltaThreshold,
            SubmittedAt = batch.SubmittedAt,
            Worker = worker.Value.WorkerName,
            QueueMilliseconds = queueMs,
            ExplainMilliseconds = explainMs,
            CompletedAt = DateTimeOffset.UtcNow,
        };
        var resultQueue = await context.GetSendEndpoint(JobFailures.ResultAddress(batch.JobId));
        await resultQueue.Send(completed, context.CancellationToken);
        foreach (var r in results.Where(r => r.OverThreshold))
            await context.Publish(new AttributionDeltaExceeded
            {
                JobId = batch.JobId,
                TextId = r.Id,
                ModelId = batch.ModelId,
                Method = r.Method,
                Delta = r.Delta,
                Threshold = batch.DeltaThreshold ?? 0,
            }, context.CancellationToken);
        log.LogInformation("Job {JobId} batch {Batch}/{Count}: {Texts} texts in {Ms:0} ms", batch.JobId, batch.BatchIndex + 1, batch.BatchCount, results.Count, explainMs);
    }
}
