namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// Tests that read the fleet's meters. OpenTelemetry's MeterProvider (and a MeterListener) subscribe to meters by
/// name, process-wide: while another test's host in this process has a meter of the same name, its instruments are
/// counted too, and disposing that host drops the shared metric streams mid-test (seen in CI: a series Prometheus had
/// scraped vanished). In production one process holds one host, so these tests run alone.
/// </summary>
[Xunit.CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TelemetryCollection
{
    public const string Name = "Fleet meters (run alone)";
}
