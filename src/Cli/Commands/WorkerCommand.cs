using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet worker</c>: runs an attribution worker until Ctrl+C / SIGTERM (same as <c>dotnet run --project src/Worker</c>).</summary>
public static class WorkerCommand
{
    public const string Usage = "fleet worker " + FleetHost.OptionsUsage + " [--model ID] [--health-port N] [--concurrency N] [--device cpu|cuda]";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, FleetHost.ValueOptions.Concat(new[] { "model", "health-port", "concurrency", "device" }).ToArray(), Array.Empty<string>());
        var extra = new Dictionary<string, string?>();
        if (cl.Value("health-port") is not null) extra["Worker:HealthPort"] = cl.Int("health-port", 0).ToString();
        if (cl.Value("concurrency") is not null) extra["Worker:ConcurrentBatches"] = cl.Int("concurrency", 1).ToString();
        if (cl.Value("device") is { } device) extra["Worker:Device"] = device;
        using var host = FleetHost.Build(cl, consumeJobs: true, LogLevel.Information, extra);
        host.Run();
        return 0;
    }
}
