using System.Net;
using System.Text;
using System.Text.Json;
using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Health;

/// <summary>
/// A small HTTP endpoint on localhost:<c>Worker:HealthPort</c>: <c>/health/live</c> (the process answers) and
/// <c>/health/ready</c> (checks tagged "ready": the bus is connected, the models are loaded). 200 or 503 with a JSON body.
/// </summary>
public sealed class HealthEndpoint(HealthCheckService health, IOptions<WorkerOptions> worker, ILogger<HealthEndpoint> log) : BackgroundService
{
    public const string LiveTag = "live";
    public const string ReadyTag = "ready";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        int port = worker.Value.HealthPort;
        if (port <= 0) return;
        // The endpoint must never take the worker down: .NET's managed HttpListener has been seen throwing from its
        // accept callback while starting (ArgumentNullException in HttpEndPointListener.ProcessAccept, in CI), which
        // as an unhandled BackgroundService failure stopped the host. Log it and start a fresh listener.
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Serve(port, stoppingToken);
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                log.LogWarning(e, "Health endpoint on port {Port} failed; starting it again", port);
                try { await Task.Delay(200, stoppingToken); }
                catch (OperationCanceledException) { return; }
            }
        }
    }

    private async Task Serve(int port, CancellationToken stoppingToken)
    {
        using var listener = new HttpListener();
        listener.Prefixes.Add($"http://localhost:{port}/");
        listener.Start();
        log.LogInformation("Health endpoint on http://localhost:{Port}/health/live and /health/ready", port);
        using var _ = stoppingToken.Register(listener.Stop);
        while (!stoppingToken.IsCancellationRequested)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync();
            }
            catch (Exception) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            await Answer(context, stoppingToken);
        }
    }

    private async Task Answer(HttpListenerContext context, CancellationToken cancellationToken)
    {
        var path = context.Request.Url?.AbsolutePath.TrimEnd('/');
        string? tag = path switch { "/health/live" => LiveTag, "/health/ready" => ReadyTag, _ => null };
        try
        {
            if (tag is null)
            {
                context.Response.StatusCode = 404;
                return;
            }
            var report = await health.CheckHealthAsync(r => r.Tags.Contains(tag), cancellationToken);
            context.Response.StatusCode = report.Status == HealthStatus.Unhealthy ? 503 : 200;
            context.Response.ContentType = "application/json";
            var body = JsonSerializer.Serialize(new
            {
                status = report.Status.ToString(),
                checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString(), description = e.Value.Description }),
            });
            var bytes = Encoding.UTF8.GetBytes(body);
            await context.Response.OutputStream.WriteAsync(bytes, cancellationToken);
        }
        catch (Exception e)
        {
            log.LogDebug("Health request failed: {Message}", e.Message);
        }
        finally
        {
            context.Response.Close();
        }
    }
}
