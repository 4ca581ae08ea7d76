using System.Diagnostics;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Client;

/// <summary>How a collected job ended: <see cref="Completed"/> or <see cref="Failed"/>.</summary>
public sealed record JobOutcome(AttributionJobCompleted? Completed, AttributionJobFailed? Failed)
{
    public bool Succeeded => Completed is not null;
}

/// <summary>Progress of a job being collected.</summary>
public sealed record JobProgress(int TextsDone, int TextCount, int BatchesDone, int BatchCount);

/// <summary>Submits jobs and collects their results from the durable per-job result queue.</summary>
public sealed class FleetClient(IBus bus, IReceiveEndpointConnector connector, IOptions<WorkerOptions> worker, ResultQueueCleaner cleaner,
    FleetMetrics metrics)
{
    public async Task Submit(SubmitAttributionJob job, CancellationToken cancellationToken = default)
    {
        var jobs = await bus.GetSendEndpoint(new Uri($"queue:{worker.Value.JobQueue}"));
        await jobs.Send(job, cancellationToken);
    }

    /// <summary>
    /// Consumes the job's result queue until every batch has arrived (then publishes <see cref="AttributionJobCompleted"/>)
    /// or the job failed. Each batch is handed to <paramref name="onBatch"/> before it is acknowledged, exactly once per
    /// batch index (redelivered duplicates are dropped). The queue is deleted once the job is over.
    /// </summary>
    public async Task<JobOutcome> Collect(Guid jobId, Func<AttributionBatchCompleted, Task> onBatch, Action<JobProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var collector = new JobResultCollector(onBatch, progress, metrics);
        var queue = FleetAddresses.ResultQueue(jobId);
        var handle = connector.ConnectReceiveEndpoint(queue, (_, e) =>
        {
            // Only what is sent to this queue: no bindings to the (shared) event exchanges.
            e.ConfigureConsumeTopology = false;
            e.PrefetchCount = 16;
            e.ConcurrentMessageLimit = 1;
            e.Handler<AttributionJobAccepted>(c => collector.OnAccepted(c.Message));
            e.Handler<AttributionBatchCompleted>(collector.OnBatch);
            e.Handler<AttributionJobFailed>(c => collector.OnFailed(c.Message));
        });
        JobOutcome outcome;
        try
        {
            await handle.Ready.WaitAsync(cancellationToken);
            outcome = await collector.Outcome.WaitAsync(cancellationToken);
        }
        finally
        {
            await handle.StopAsync(CancellationToken.None);
        }
        await cleaner.Delete(queue);
        return outcome;
    }
}

/// <summary>
/// The collector's state for one job, only in memory: every result is in the durable queue until this collector has
/// handled it. Handlers run one at a time (ConcurrentMessageLimit = 1).
/// </summary>
internal sealed class JobResultCollector(Func<AttributionBatchCompleted, Task> onBatch, Action<JobProgress>? progress, FleetMetrics? metrics = null)
{
    private readonly HashSet<int> _seen = new();
    private readonly List<double> _absDeltas = new();
    private readonly List<TextFaithfulness> _faithfulness = new();
    private int? _weakReferences;
    private readonly Stopwatch _watch = Stopwatch.StartNew();
    private int _overThreshold, _textsDone, _duplicates, _batchCount = -1, _textCount = -1;
    private double? _threshold;
    private DateTimeOffset _submittedAt;
    private string _modelId = "";

    public TaskCompletionSource<JobOutcome> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public Task<JobOutcome> Outcome => Completion.Task;

    public Task OnAccepted(AttributionJobAccepted m)
    {
        if (_batchCount < 0)
        {
            _batchCount = m.BatchCount;
            _textCount = m.TextCount;
            _modelId = m.ModelId;
            progress?.Invoke(new JobProgress(_textsDone, _textCount, _seen.Count, _batchCount));
        }
        return Task.CompletedTask;
    }

    public Task OnFailed(AttributionJobFailed m)
    {
        if (Completion.TrySetResult(new JobOutcome(null, m)))
            metrics?.JobFinished(_modelId.Length == 0 ? "unknown" : _modelId, "failed", _submittedAt == default ? _watch.Elapsed : DateTimeOffset.UtcNow - _submittedAt);
        return Task.CompletedTask;
    }

    public async Task OnBatch(ConsumeContext<AttributionBatchCompleted> context)
    {
        var m = context.Message;
        if (Outcome.IsCompleted) return;
        if (!_seen.Add(m.BatchIndex))
        {
            _duplicates++;
            return;
        }
        await onBatch(m);
        _batchCount = m.BatchCount;
        _textCount = m.TextCount;
        _threshold = m.DeltaThreshold;
        _submittedAt = m.SubmittedAt;
        _modelId = m.ModelId;
        _textsDone += m.Results.Count;
        foreach (var r in m.Results)
        {
            _absDeltas.Add(Math.Abs(r.Delta));
            if (r.OverThreshold) _overThreshold++;
            if (r.Faithfulness is { } f) _faithfulness.Add(f);
            if (r.WeakReference is { } weak) _weakReferences = (_weakReferences ?? 0) + (weak ? 1 : 0);
        }
        progress?.Invoke(new JobProgress(_textsDone, _textCount, _seen.Count, _batchCount));
        if (_seen.Count < _batchCount) return;
        var completed = new AttributionJobCompleted
        {
            JobId = m.JobId,
            ModelId = _modelId,
            TextCount = _textsDone,
            BatchCount = _batchCount,
            DuplicateBatches = _duplicates,
            Delta = Summary(),
            WallMilliseconds = _submittedAt == default ? _watch.Elapsed.TotalMilliseconds : (DateTimeOffset.UtcNow - _submittedAt).TotalMilliseconds,
            CompletedAt = DateTimeOffset.UtcNow,
            Faithfulness = Models.ResultExtras.Summarize(_faithfulness),
            WeakReferences = _weakReferences,
        };
        await context.Publish(completed);
        if (Completion.TrySetResult(new JobOutcome(completed, null)))
            metrics?.JobFinished(_modelId, "completed", TimeSpan.FromMilliseconds(completed.WallMilliseconds));
    }

    private DeltaSummary Summary()
    {
        var sorted = _absDeltas.Where(d => !double.IsNaN(d)).OrderBy(d => d).ToList();
        double P(double q) => sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(q * sorted.Count) - 1)];
        return new DeltaSummary
        {
            Max = _absDeltas.Any(double.IsNaN) ? double.NaN : sorted.LastOrDefault(),
            Mean = sorted.Count == 0 ? 0 : sorted.Average(),
            P95 = P(0.95),
            OverThreshold = _overThreshold,
            Threshold = _threshold,
        };
    }
}
