using AttributionFleet.Worker.Client;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Worker.Store;

/// <summary>
/// A worker's calls to the store: a store that is down or restarting is waited for (back-off 0.2 s doubling to 5 s, up to
/// <see cref="StoreOptions.UnavailableRetrySeconds"/>) with the message held, instead of failing the job or dead-lettering
/// the message. Every store write is idempotent, so repeating one whose commit was cut off is safe.
/// </summary>
public static class StoreRetry
{
    /// <param name="retryRefusals">Whether wrong credentials are waited for too (a worker: they may be fixed while it runs).</param>
    public static async Task<T> Run<T>(Func<CancellationToken, Task<T>> call, StoreOptions options, ILogger log, CancellationToken cancellationToken,
        bool retryRefusals = true)
    {
        var deadline = DateTime.UtcNow.AddSeconds(Math.Max(0, options.UnavailableRetrySeconds));
        var delay = TimeSpan.FromMilliseconds(200);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await call(cancellationToken);
            }
            catch (Exception e) when (JobStoreFactory.IsTransient(e) && (retryRefusals || e is not FleetUnavailableException { Refused: true })
                                      && DateTime.UtcNow < deadline && !cancellationToken.IsCancellationRequested)
            {
                var message = e is FleetUnavailableException ? e.Message : $"{e.GetType().Name}: {e.Message}";
                if (attempt == 1 || attempt % 10 == 0) log.Log(retryRefusals ? LogLevel.Warning : LogLevel.Debug, "Job store unavailable (attempt {Attempt}), retrying: {Message}", attempt, message);
                await Task.Delay(delay, cancellationToken);
                delay = TimeSpan.FromMilliseconds(Math.Min(5000, delay.TotalMilliseconds * 2));
            }
        }
    }

    public static Task Run(Func<CancellationToken, Task> call, StoreOptions options, ILogger log, CancellationToken cancellationToken) =>
        Run<bool>(async ct => { await call(ct); return true; }, options, log, cancellationToken);
}
