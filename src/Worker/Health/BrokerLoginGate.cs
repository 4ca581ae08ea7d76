using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace AttributionFleet.Worker.Health;

/// <summary>
/// Holds a worker's start until the broker accepts its login. MassTransit reconnects a bus that lost its broker, but a bus
/// whose first login was refused stays "start faulted" (its receive endpoints "cannot retry"), and stopping and starting it
/// again did not bring them back (tried: still "Not ready"), so a worker whose password is fixed on the broker would never
/// become ready. Started before the bus (registration order) and after the HTTP server, so /health/live answers and
/// /health/ready is 503 while this waits; retries with back-off (1 s doubling to 30 s), one log line each.
/// Workers only: a client reports a refused login as one line and exits.
/// </summary>
public sealed class BrokerLoginGate(IOptions<WorkerOptions> worker, IOptions<RabbitMqOptions> rabbit, ILogger<BrokerLoginGate> log) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!worker.Value.ConsumeJobs || !worker.Value.UsesRabbitMq) return;
        var r = rabbit.Value.Resolved();
        var factory = r.CheckConnectionFactory();
        factory.RequestedConnectionTimeout = TimeSpan.FromSeconds(Math.Max(1, r.ConnectTimeoutSeconds));
        var delay = TimeSpan.FromSeconds(1);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                await using var connection = await factory.CreateConnectionAsync("fleet-login-check", cancellationToken);
                if (attempt > 1) log.LogInformation("Broker {Broker} accepted the login after {Attempts} attempts", rabbit.Value, attempt);
                return;
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                log.LogWarning("Broker {Broker} not usable (attempt {Attempt}), retrying in {Seconds} s: {Message}", rabbit.Value, attempt,
                    delay.TotalSeconds, e.GetBaseException().Message.ReplaceLineEndings(" "));
                await Task.Delay(delay, cancellationToken);
                delay = TimeSpan.FromSeconds(Math.Min(30, delay.TotalSeconds * 2));
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
