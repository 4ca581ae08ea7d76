using AttributionFleet.Cli.Parsing;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet worker</c>.</summary>
public sealed record WorkerRunOptions(int? HealthPort, int? Concurrency, string? Device, FleetConnection Fleet);

/// <summary><c>fleet worker</c>: runs an attribution worker until Ctrl+C / SIGTERM (same as <c>dotnet run --project src/Worker</c>).</summary>
public static class WorkerCommand
{
    public const string Description = "Run an attribution worker until SIGINT/SIGTERM (same as dotnet run --project src/Worker).";

    public static int Run(WorkerRunOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        var extra = new Dictionary<string, string?>();
        if (o.HealthPort is { } port) extra["Worker:HealthPort"] = port.ToString();
        if (o.Concurrency is { } n) extra["Worker:ConcurrentBatches"] = n.ToString();
        if (o.Device is { } device) extra["Worker:Device"] = device;
        using var host = FleetHost.Build(o.Fleet, consumeJobs: true, LogLevel.Information, extra);
        FleetHost.EnsureBrokerReachable(host, o.Fleet.ConnectTimeout, cancel).GetAwaiter().GetResult();
        host.RunAsync(cancel).GetAwaiter().GetResult();
        return 0;
    }
}
