using System.Net;
using System.Net.Sockets;
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

    /// <summary>
    /// A plain TCP listener answering one HTTP/1.1 GET per connection. Not HttpListener: .NET's managed HttpListener
    /// throws from its constructor's accept callback when a client is already connecting as it starts
    /// (ArgumentNullException in HttpEndPointListener.ProcessAccept, seen in CI while tests polled readiness), and the
    /// port then stays unusable; that took workers down or left them never ready.
    /// </summary>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        int port = worker.Value.HealthPort;
        if (port <= 0) return;
        var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Start();
        log.LogInformation("Health endpoint on http://localhost:{Port}/health/live and /health/ready", port);
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                TcpClient client;
                try
                {
                    client = await listener.AcceptTcpClientAsync(stoppingToken);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                _ = Task.Run(() => Answer(client, stoppingToken), stoppingToken);
            }
        }
        finally
        {
            listener.Stop();
        }
    }

    private async Task Answer(TcpClient client, CancellationToken cancellationToken)
    {
        using var _ = client;
        try
        {
            var stream = client.GetStream();
            using var reader = new StreamReader(stream, Encoding.ASCII, false, 1024, leaveOpen: true);
            var requestLine = await reader.ReadLineAsync(cancellationToken) ?? "";
            while (!string.IsNullOrEmpty(await reader.ReadLineAsync(cancellationToken))) { } // headers
            var parts = requestLine.Split(' ');
            var path = parts.Length > 1 ? parts[1].Split('?')[0].TrimEnd('/') : "";
            string? tag = path switch { "/health/live" => LiveTag, "/health/ready" => ReadyTag, _ => null };
            int status = 404;
            string body = "{\"status\":\"NotFound\"}";
            if (tag is not null)
            {
                var report = await health.CheckHealthAsync(r => r.Tags.Contains(tag), cancellationToken);
                status = report.Status == HealthStatus.Unhealthy ? 503 : 200;
                body = JsonSerializer.Serialize(new
                {
                    status = report.Status.ToString(),
                    checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString(), description = e.Value.Description }),
                });
            }
            var bytes = Encoding.UTF8.GetBytes(body);
            var reason = status switch { 200 => "OK", 503 => "Service Unavailable", _ => "Not Found" };
            var head = Encoding.ASCII.GetBytes(
                $"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n");
            await stream.WriteAsync(head, cancellationToken);
            await stream.WriteAsync(bytes, cancellationToken);
        }
        catch (Exception e)
        {
            log.LogDebug("Health request failed: {Message}", e.Message);
        }
    }
}
