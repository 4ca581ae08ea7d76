using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>External tools the deployment tests use (installed by .ci/services/prometheus.sh); null when missing.</summary>
public static class Tools
{
    public static string? Promtool => Find("PROMTOOL", "promtool");
    public static string? Prometheus => Find("PROMETHEUS", "prometheus");
    public static string? DockerCompose => Find("DOCKER_COMPOSE", "docker-compose");

    private static string? Find(string variable, string name)
    {
        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } p && File.Exists(p)) return p;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':').Append("/usr/bin"))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    public sealed record Result(int ExitCode, string Output);

    /// <summary>Runs a tool to completion (stdout and stderr together).</summary>
    public static async Task<Result> Run(string fileName, IEnumerable<string> arguments, string? workingDirectory = null, int timeoutSeconds = 60)
    {
        var info = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null) info.WorkingDirectory = workingDirectory;
        foreach (var a in arguments) info.ArgumentList.Add(a);
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{fileName} {string.Join(' ', arguments)} did not finish in {timeoutSeconds} s");
        }
        return new Result(process.ExitCode, await stdout + await stderr);
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>A fact skipped (with the reason) when a tool is not installed (.ci/services/prometheus.sh installs them).</summary>
public sealed class ToolFactAttribute : Xunit.FactAttribute
{
    public ToolFactAttribute(string tool)
    {
        var path = tool switch
        {
            "promtool" => Tools.Promtool,
            "prometheus" => Tools.Prometheus,
            "docker-compose" => Tools.DockerCompose,
            _ => throw new ArgumentOutOfRangeException(nameof(tool)),
        };
        if (path is null) Skip = $"{tool} is not installed (Debian package {(tool == "docker-compose" ? "docker-compose" : "prometheus")}; .ci/services/prometheus.sh installs it)";
    }
}
