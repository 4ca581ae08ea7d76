using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Store;

/// <summary>Applies the store's migrations at start (workers), retrying while the store is unreachable; readiness waits for it.</summary>
public sealed class JobStoreMigrator(IJobStore store, IOptions<WorkerOptions> worker, ILogger<JobStoreMigrator> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!worker.Value.ConsumeJobs) return; // clients migrate lazily on first use
        var delay = TimeSpan.FromMilliseconds(500);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await store.EnsureReady(stoppingToken);
                log.LogInformation("Job store: {Store}", store.Describe);
                return;
            }
            catch (Exception e) when (JobStoreFactory.IsTransient(e))
            {
                log.LogWarning("Job store not ready, retrying in {Seconds} s: {Message}", delay.TotalSeconds, e.Message);
                await Task.Delay(delay, stoppingToken);
                delay = TimeSpan.FromMilliseconds(Math.Min(10_000, delay.TotalMilliseconds * 2));
            }
        }
    }
}

/// <summary>Deletes finished jobs and their results <c>Store:RetentionHours</c> after they finished (workers only).</summary>
public sealed class JobRetention(IJobStore store, IOptions<StoreOptions> options, IOptions<WorkerOptions> worker, ILogger<JobRetention> log) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = options.Value;
        if (!worker.Value.ConsumeJobs || o.RetentionHours <= 0) return;
        var every = TimeSpan.FromMinutes(Math.Max(0.01, o.RetentionSweepMinutes));
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                int deleted = await store.DeleteFinishedBefore(DateTimeOffset.UtcNow - TimeSpan.FromHours(o.RetentionHours), stoppingToken);
                if (deleted > 0) log.LogInformation("Retention: deleted {Count} jobs finished more than {Hours} h ago", deleted, o.RetentionHours);
            }
            catch (Exception e) when (JobStoreFactory.IsTransient(e))
            {
                log.LogWarning("Retention sweep skipped: {Message}", e.Message);
            }
            await Task.Delay(every, stoppingToken);
        }
    }
}

/// <summary>Readiness: the job store answers and its schema is migrated.</summary>
public sealed class JobStoreHealthCheck(IJobStore store) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            await store.EnsureReady(timeout.Token);
            await store.Get(Guid.Empty, timeout.Token);
            return HealthCheckResult.Healthy(store.Describe);
        }
        catch (Exception e) when (JobStoreFactory.IsTransient(e) || e is OperationCanceledException)
        {
            return HealthCheckResult.Unhealthy($"{store.Describe}: {e.Message}");
        }
    }
}
