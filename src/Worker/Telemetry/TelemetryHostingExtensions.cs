using System.Reflection;
using AttributionFleet.Engine;
using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace AttributionFleet.Worker.Telemetry;

public static class TelemetryHostingExtensions
{
    /// <summary>Activity sources exported as traces: MassTransit's (send, receive, consume), the worker's and the engine's.</summary>
    public static readonly string[] TraceSources = { "MassTransit", FleetMetrics.WorkerSourceName, EngineTelemetry.SourceName };

    /// <summary>Meters exported: the fleet's and MassTransit's (<c>messaging_masstransit_*</c>).</summary>
    public static readonly string[] Meters = { FleetMetrics.MeterName, "MassTransit" };

    private static readonly string[] MassTransitTagKeys =
    {
        "messaging.masstransit.consumer_type", "messaging.masstransit.message_type", "messaging.masstransit.exception_type",
        "messaging.masstransit.service",
    };

    /// <summary>The instruments (always) and, from section <c>Telemetry</c>, the OpenTelemetry exporters: OTLP (traces, metrics,
    /// logs with scopes) and/or a Prometheus scrape endpoint.</summary>
    public static IServiceCollection AddFleetTelemetry(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddFleetMetrics();
        services.Configure<TelemetryOptions>(configuration.GetSection(TelemetryOptions.Section));
        var t = configuration.GetSection(TelemetryOptions.Section).Get<TelemetryOptions>() ?? new TelemetryOptions();
        var worker = configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>() ?? new WorkerOptions();
        // /metrics is served by the worker's HTTP server (Kestrel) on either port.
        bool prometheus = t.PrometheusPort > 0 || worker.HealthPort > 0;
        if (!t.UsesOtlp && !prometheus) return services;

        var serviceName = t.ServiceName ?? Assembly.GetEntryAssembly()?.GetName().Name ?? "attribution-fleet";
        var otel = services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(serviceName, serviceVersion: typeof(FleetMetrics).Assembly.GetName().Version?.ToString(),
                serviceInstanceId: worker.WorkerName))
            .WithMetrics(m =>
            {
                m.AddMeter(Meters);
                // MassTransit tags its instruments with the destination, and every job has its own result queue: keep only
                // low-cardinality attributes (the batch and job queues are told apart by consumer type).
                m.AddView(instrument => instrument.Meter.Name == "MassTransit"
                    ? new MetricStreamConfiguration { TagKeys = MassTransitTagKeys }
                    : null);
                if (prometheus) m.AddPrometheusExporter();
            });
        if (t.UsesOtlp)
        {
            otel.WithTracing(tr => tr
                    .AddSource(TraceSources)
                    .SetSampler(new ParentBasedSampler(new TraceIdRatioBasedSampler(Math.Clamp(t.TraceSampleRatio, 0, 1)))))
                .WithLogging(configureBuilder: null, configureOptions: o =>
                {
                    o.IncludeScopes = true;
                    o.IncludeFormattedMessage = true;
                });
            var protocol = string.Equals(t.OtlpProtocol, "http/protobuf", StringComparison.OrdinalIgnoreCase) || string.Equals(t.OtlpProtocol, "http", StringComparison.OrdinalIgnoreCase)
                ? OtlpExportProtocol.HttpProtobuf : OtlpExportProtocol.Grpc;
            if (string.IsNullOrWhiteSpace(t.OtlpEndpoint)) otel.UseOtlpExporter();
            else otel.UseOtlpExporter(protocol, new Uri(t.OtlpEndpoint));
        }
        return services;
    }

    /// <summary>Whether this host exports metrics for Prometheus to scrape (served at /metrics by the HTTP server).</summary>
    public static bool PrometheusEnabled(IServiceProvider services)
    {
        var t = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<TelemetryOptions>>().Value;
        var w = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<WorkerOptions>>().Value;
        return t.PrometheusPort > 0 || w.HealthPort > 0;
    }

    /// <summary>The meter factory and <see cref="FleetMetrics"/> (no exporter).</summary>
    public static IServiceCollection AddFleetMetrics(this IServiceCollection services)
    {
        services.AddMetrics();
        services.TryAddSingleton<FleetMetrics>();
        return services;
    }
}
