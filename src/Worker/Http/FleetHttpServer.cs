using System.Text.Json;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Telemetry;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;

namespace AttributionFleet.Worker.Http;

/// <summary>
/// The worker's HTTP face on Kestrel: <c>/health/live</c>, <c>/health/ready</c> (MapHealthChecks), <c>/metrics</c> (the
/// OpenTelemetry Prometheus exporter) and the job API (<see cref="JobApi"/>, described at <c>/openapi/v1.json</c>), on
/// <c>Worker:HealthPort</c> and <c>Telemetry:PrometheusPort</c>. A small web application of its own whose endpoints use this
/// host's services, so any fleet host (the worker, <c>fleet worker</c>, tests) serves it by configuration alone.
/// Bound to loopback unless <c>Worker:HttpListen</c> is <c>any</c> (containers and pods, where probes and Prometheus come
/// from outside).
/// </summary>
public sealed class FleetHttpServer(IServiceProvider services, IOptions<WorkerOptions> worker, IOptions<TelemetryOptions> telemetry,
    ILogger<FleetHttpServer> log) : IHostedService, IAsyncDisposable
{
    public const string LiveTag = "live";
    public const string ReadyTag = "ready";

    private WebApplication? _app;

    public IReadOnlyList<int> Ports => new[] { worker.Value.HealthPort, telemetry.Value.PrometheusPort }.Where(p => p > 0).Distinct().ToList();

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var ports = Ports;
        if (ports.Count == 0) return;
        bool any = string.Equals(worker.Value.HttpListen, "any", StringComparison.OrdinalIgnoreCase)
            || !string.Equals(telemetry.Value.PrometheusHost, "localhost", StringComparison.OrdinalIgnoreCase);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = Array.Empty<string>() });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            foreach (var port in ports)
                if (any) k.ListenAnyIP(port);
                else k.ListenLocalhost(port);
        });
        builder.Services.AddHealthChecks();
        builder.Services.AddSingleton(services.GetRequiredService<HealthCheckService>()); // this host's checks, not the façade's
        builder.Services.AddOpenApi();
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.Converters.Add(new Store.NonFiniteAsNull())); // NaN as null, as stored
        _app = builder.Build();
        _app.MapHealthChecks("/health/live", Checks(LiveTag, degraded: StatusCodes.Status200OK));
        // Degraded is not ready: MassTransit reports a faulted receive endpoint (the job queue) as Degraded.
        _app.MapHealthChecks("/health/ready", Checks(ReadyTag, degraded: StatusCodes.Status503ServiceUnavailable));
        if (services.GetService<MeterProvider>() is { } meters && TelemetryHostingExtensions.PrometheusEnabled(services))
            _app.MapPrometheusScrapingEndpoint("/metrics", meters, null, null);
        _app.MapOpenApi();
        JobApi.Map(_app, services);
        await _app.StartAsync(cancellationToken);
        log.LogInformation("HTTP on {Scope} port(s) {Ports}: /health/live, /health/ready, /metrics, /jobs, /openapi/v1.json",
            any ? "all interfaces" : "loopback", string.Join(", ", ports));
    }

    /// <summary>Healthy = 200, Unhealthy = 503, Degraded as given. The body names each check and why.</summary>
    private static HealthCheckOptions Checks(string tag, int degraded) => new()
    {
        Predicate = r => r.Tags.Contains(tag),
        ResultStatusCodes =
        {
            [HealthStatus.Healthy] = StatusCodes.Status200OK,
            [HealthStatus.Degraded] = degraded,
            [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
        },
        ResponseWriter = (context, report) =>
        {
            context.Response.ContentType = "application/json";
            return context.Response.WriteAsync(JsonSerializer.Serialize(new
            {
                status = report.Status.ToString(),
                checks = report.Entries.ToDictionary(e => e.Key, e => new { status = e.Value.Status.ToString(), description = e.Value.Description }),
            }));
        },
    };

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is not null) await _app.StopAsync(cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null) await _app.DisposeAsync();
    }
}
