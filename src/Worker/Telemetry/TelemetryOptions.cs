namespace AttributionFleet.Worker.Telemetry;

/// <summary>
/// OpenTelemetry exporters (section <c>Telemetry</c>). Nothing is exported unless an exporter is configured; the
/// instruments exist regardless (any <see cref="System.Diagnostics.Metrics.MeterListener"/> sees them).
/// </summary>
public sealed class TelemetryOptions
{
    public const string Section = "Telemetry";

    /// <summary><c>service.name</c> of the resource (default: the entry assembly's name).</summary>
    public string? ServiceName { get; set; }
    /// <summary>OTLP endpoint for traces, metrics and logs, e.g. <c>http://otel-collector:4317</c>; null = none
    /// (unless <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set in the environment).</summary>
    public string? OtlpEndpoint { get; set; }
    /// <summary><c>grpc</c> (default) or <c>http/protobuf</c>.</summary>
    public string OtlpProtocol { get; set; } = "grpc";
    /// <summary>Port of the Prometheus scrape endpoint (<c>/metrics</c>); 0 = none.</summary>
    public int PrometheusPort { get; set; }
    /// <summary>Host name the scrape endpoint answers to: only requests for exactly this name are served
    /// (<c>localhost</c>; <c>*</c> for every name, as in containers).</summary>
    public string PrometheusHost { get; set; } = "localhost";
    /// <summary>Export interval of metrics over OTLP.</summary>
    public int MetricExportIntervalMs { get; set; } = 10_000;
    /// <summary>Trace sampling ratio (parent-based).</summary>
    public double TraceSampleRatio { get; set; } = 1.0;

    public bool UsesOtlp => !string.IsNullOrWhiteSpace(OtlpEndpoint)
        || !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
}
