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
    /// <summary>Host the scrape endpoint answers to: the exporter serves only requests for exactly this name (no wildcards).
    /// <c>localhost</c> (default), a DNS name, or <c>auto</c>: this machine's first non-loopback IPv4 address (the container
    /// or pod IP, which is what Prometheus uses with DNS or Kubernetes service discovery).</summary>
    public string PrometheusHost { get; set; } = "localhost";

    /// <summary><see cref="PrometheusHost"/> with <c>auto</c> resolved.</summary>
    public string ResolvedPrometheusHost()
    {
        if (!string.Equals(PrometheusHost, "auto", StringComparison.OrdinalIgnoreCase)) return PrometheusHost;
        var address = System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .Where(n => n.OperationalStatus == System.Net.NetworkInformation.OperationalStatus.Up)
            .SelectMany(n => n.GetIPProperties().UnicastAddresses)
            .Select(a => a.Address)
            .FirstOrDefault(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && !System.Net.IPAddress.IsLoopback(a));
        return address?.ToString() ?? "localhost";
    }
    /// <summary>Trace sampling ratio (parent-based).</summary>
    public double TraceSampleRatio { get; set; } = 1.0;

    public bool UsesOtlp => !string.IsNullOrWhiteSpace(OtlpEndpoint)
        || !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));
}
