using System.Data.Common;
using System.Runtime.CompilerServices;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Store;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Client;

/// <summary>How a job ended: <see cref="Completed"/> or <see cref="Failed"/>.</summary>
public sealed record JobOutcome(AttributionJobCompleted? Completed, AttributionJobFailed? Failed)
{
    public bool Succeeded => Completed is not null;
}

/// <summary>Progress of a job.</summary>
public sealed record JobProgress(int TextsDone, int TextCount, int BatchesDone, int BatchCount);

/// <summary>
/// The one client API of the fleet (used by <c>fleet submit</c>, <c>fleet results</c>, tests and benchmarks): submits jobs to the
/// job queue and reads status, progress and results from the job store, where the workers put them. Reading changes nothing,
/// so any number of readers may read a job, any number of times, while it runs or after it ended (until retention deletes it).
/// Jobs are read from the store directly, or through a worker's job API when <c>Store:Api</c> is set (no database credentials).
/// </summary>
public sealed class FleetClient(IBus bus, IJobReader store, IOptions<WorkerOptions> worker, IOptions<StoreOptions> storeOptions,
    IOptions<RabbitMqOptions> rabbit, IOptions<LimitsOptions> limits, ILogger<FleetClient> log)
{
    private static readonly System.Text.Json.JsonSerializerOptions SizeJson = new(System.Text.Json.JsonSerializerDefaults.Web);

    /// <summary>The serialized size of the job as the worker's planner measures it; over <c>Limits:MaxMessageBytes</c> it is never sent
    /// (a message the workers cannot take must not enter the queue).</summary>
    public long CheckSize(SubmitAttributionJob job)
    {
        long bytes = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(job, SizeJson).LongLength;
        if (bytes > limits.Value.MaxMessageBytes) throw new JobTooLargeException(bytes, limits.Value.MaxMessageBytes);
        return bytes;
    }

    /// <summary>Sends the job to the job queue (after <see cref="CheckSize"/>); a broker that does not take it within <c>RabbitMq:ConnectTimeoutSeconds</c> is
    /// <see cref="FleetUnavailableException"/>.</summary>
    public async Task Submit(SubmitAttributionJob job, CancellationToken cancellationToken = default)
    {
        CheckSize(job);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        int seconds = Math.Max(1, rabbit.Value.ConnectTimeoutSeconds);
        timeout.CancelAfter(TimeSpan.FromSeconds(seconds));
        try
        {
            var jobs = await bus.GetSendEndpoint(new Uri($"queue:{worker.Value.JobQueue}"));
            await jobs.Send(job, timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new FleetUnavailableException(BrokerName, $"the job was not accepted within {seconds} s (RabbitMq:ConnectTimeoutSeconds){BrokerCause()}");
        }
    }

    private string BrokerName => worker.Value.UsesRabbitMq ? $"RabbitMQ {rabbit.Value}" : "the in-memory bus";

    private string BrokerCause()
    {
        if (bus is not IBusControl control) return "";
        var health = control.CheckHealth();
        var reason = health.Endpoints.Values.Select(e => e.Exception?.GetBaseException().Message).FirstOrDefault(m => m is not null)
            ?? (health.Status == BusHealthStatus.Healthy ? null : health.Description);
        return reason is null ? "" : ": " + reason.ReplaceLineEndings(" ");
    }

    /// <summary>Where jobs are read from (for messages).</summary>
    public string Source => store.Describe;

    /// <summary>The job's state, or null when the store does not know it (not yet taken by a worker, never submitted, or deleted).</summary>
    public Task<JobStatus?> Status(Guid jobId, CancellationToken cancellationToken = default) =>
        Read(ct => store.Get(jobId, ct), cancellationToken);

    /// <summary>Every stored result of the job, batch by batch (each text once).</summary>
    public async IAsyncEnumerable<TextAttribution> Results(Guid jobId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var e = store.Results(jobId, cancellationToken).GetAsyncEnumerator(cancellationToken);
        while (true)
        {
            bool more;
            try
            {
                more = await e.MoveNextAsync();
            }
            catch (DbException x)
            {
                throw new FleetUnavailableException(store.Describe, x.Message.ReplaceLineEndings(" "), x);
            }
            if (!more) yield break;
            yield return e.Current;
        }
    }

    /// <summary>Deletes the job and its results from the store; false when it was not there.</summary>
    public Task<bool> Delete(Guid jobId, CancellationToken cancellationToken = default) => Read(ct => store.Delete(jobId, ct), cancellationToken);

    private readonly Dictionary<Guid, List<SemaphoreSlim>> _waiting = new();
    private Task<bool>? _listening;

    /// <summary>
    /// Listens, once per client, for the jobs' end events (<see cref="AttributionJobCompleted"/>, <see cref="AttributionJobFailed"/>)
    /// on a temporary endpoint of the bus (a non-durable queue that goes away with the client), so a waiting
    /// <see cref="Collect"/> reads the store at once when its job ends instead of at its next poll. The store stays the
    /// only source of results: an event only wakes a reader, and without one (no bus, a broker that refuses the queue)
    /// readers just poll. Polling often is what this saves: on a machine whose cores a worker fills, a client reading the
    /// store every 20 ms slowed the worker's engine by ~5 % (`fleet bench fleet --poll-ms 20` against 1000).
    /// </summary>
    private Task<bool> Listening()
    {
        lock (_waiting)
            return _listening ??= Listen();

        async Task<bool> Listen()
        {
            try
            {
                var handle = bus.ConnectReceiveEndpoint(new TemporaryEndpointDefinition(), DefaultEndpointNameFormatter.Instance, e =>
                {
                    e.Handler<AttributionJobCompleted>(c => { Wake(c.Message.JobId); return Task.CompletedTask; });
                    e.Handler<AttributionJobFailed>(c => { Wake(c.Message.JobId); return Task.CompletedTask; });
                });
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(Math.Max(1, rabbit.Value.ConnectTimeoutSeconds)));
                await handle.Ready.WaitAsync(timeout.Token);
                return true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                log.LogDebug("Job end events not received ({Error}); waiting readers poll the store", e.Message);
                return false;
            }
        }
    }

    private void Wake(Guid jobId)
    {
        lock (_waiting)
            if (_waiting.TryGetValue(jobId, out var readers))
                foreach (var r in readers) r.Release();
    }

    /// <summary>
    /// Waits until the job ended, handing each stored batch to <paramref name="onBatch"/> once, as it appears in the store.
    /// A job the store does not know yet is waited for (it may still be in the job queue); cancel to stop waiting, which
    /// changes nothing about the job. The store is read every <c>Store:PollIntervalMs</c>, and at once when the job's end
    /// event arrives (<see cref="Listening"/>).
    /// </summary>
    public async Task<JobOutcome> Collect(Guid jobId, Func<AttributionBatchCompleted, Task> onBatch, Action<JobProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        using var woken = new SemaphoreSlim(0);
        lock (_waiting)
        {
            if (!_waiting.TryGetValue(jobId, out var readers)) _waiting[jobId] = readers = new List<SemaphoreSlim>();
            readers.Add(woken);
        }
        try
        {
            _ = Listening(); // not awaited: until the endpoint is ready (or if it never is), the polls alone find the end
            return await CollectUntilEnded(jobId, onBatch, progress, woken, cancellationToken);
        }
        finally
        {
            lock (_waiting)
                if (_waiting.TryGetValue(jobId, out var readers) && readers.Remove(woken) && readers.Count == 0) _waiting.Remove(jobId);
        }
    }

    private async Task<JobOutcome> CollectUntilEnded(Guid jobId, Func<AttributionBatchCompleted, Task> onBatch, Action<JobProgress>? progress,
        SemaphoreSlim woken, CancellationToken cancellationToken)
    {
        var seen = new HashSet<int>();
        var poll = TimeSpan.FromMilliseconds(Math.Max(10, storeOptions.Value.PollIntervalMs));
        JobProgress? last = null;
        while (true)
        {
            var status = await Status(jobId, cancellationToken);
            if (status is not null)
            {
                // Status first, then the batches: a job seen ended has all its batches stored already.
                var indexes = await Read(ct => store.BatchIndexes(jobId, ct), cancellationToken);
                foreach (var index in indexes.Where(i => !seen.Contains(i)))
                {
                    var batch = await Read(ct => store.Batch(jobId, index, ct), cancellationToken);
                    if (batch is null) continue; // deleted meanwhile
                    await onBatch(batch);
                    seen.Add(index);
                }
                var now = new JobProgress(status.IsFinished ? status.TextsDone : Math.Max(status.TextsDone, 0), status.TextCount, seen.Count, status.BatchCount);
                if (now != last) progress?.Invoke(last = now);
                if (status.Completed is { } c) return new JobOutcome(c, null);
                if (status.Failed is { } f) return new JobOutcome(null, f);
            }
            await woken.WaitAsync(poll, cancellationToken);
        }
    }

    /// <summary>A read, retried while the store is briefly unavailable (up to <c>Store:ConnectTimeoutSeconds</c>), then one line naming it.</summary>
    private async Task<T> Read<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        var options = storeOptions.Value;
        try
        {
            return await StoreRetry.Run(call, new StoreOptions { UnavailableRetrySeconds = options.ConnectTimeoutSeconds }, log, cancellationToken,
                retryRefusals: false);
        }
        catch (DbException e)
        {
            throw new FleetUnavailableException(store.Describe, e.Message.ReplaceLineEndings(" "), e);
        }
    }
}
