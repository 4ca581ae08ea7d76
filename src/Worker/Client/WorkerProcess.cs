using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace AttributionFleet.Worker.Client;

/// <summary>
/// A worker run as a child process (for tests and benchmarks): its configuration in environment variables,
/// its output kept in memory, readiness from its health endpoint.
/// </summary>
public sealed class WorkerProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    public int HealthPort { get; }
    public string Name { get; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;

    private WorkerProcess(Process process, int healthPort, string name)
    {
        _process = process;
        HealthPort = healthPort;
        Name = name;
    }

    /// <summary>
    /// Starts <paramref name="fileName"/> <paramref name="arguments"/> with <paramref name="environment"/> added
    /// (e.g. <c>Worker__Transport=RabbitMq</c>); a free health port and the worker name are set here.
    /// </summary>
    public static WorkerProcess Start(string fileName, IEnumerable<string> arguments, IDictionary<string, string> environment, string name)
    {
        int port = FreePort();
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments) info.ArgumentList.Add(a);
        foreach (var (k, v) in environment) info.Environment[k] = v;
        info.Environment["Worker__HealthPort"] = port.ToString();
        info.Environment["Worker__Name"] = name;
        info.Environment["DOTNET_NOLOGO"] = "1";
        var process = new Process { StartInfo = info };
        var worker = new WorkerProcess(process, port, name);
        process.OutputDataReceived += (_, e) => worker.Append(e.Data);
        process.ErrorDataReceived += (_, e) => worker.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return worker;
    }

    /// <summary>The command that runs a built worker assembly: <c>dotnet AttributionFleet.Worker.dll</c>.</summary>
    public static (string FileName, string[] Arguments) DotnetCommand(string assemblyPath) =>
        (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet", new[] { assemblyPath });

    private void Append(string? line)
    {
        if (line is null) return;
        lock (_output) _output.AppendLine(line);
    }

    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Waits until /health/ready answers 200 (bus connected, models loaded).</summary>
    public async Task WaitReady(TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited) throw new InvalidOperationException($"worker {Name} exited with {_process.ExitCode}:\n{Output}");
            try
            {
                var response = await http.GetAsync($"http://localhost:{HealthPort}/health/ready");
                last = await response.Content.ReadAsStringAsync();
                if (response.StatusCode == HttpStatusCode.OK) return;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            await Task.Delay(100);
        }
        throw new TimeoutException($"worker {Name} not ready after {timeout.TotalSeconds} s (last: {last}):\n{Output}");
    }

    /// <summary>SIGKILL: the process dies at once, whatever it was doing.</summary>
    public void Kill()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.WaitForExit(10_000);
    }

    /// <summary>SIGTERM (graceful shutdown), then waits for the exit.</summary>
    public bool Terminate(TimeSpan timeout)
    {
        if (_process.HasExited) return true;
        if (OperatingSystem.IsWindows()) Kill();
        else _ = SysKill(_process.Id, 15);
        return _process.WaitForExit(timeout);
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);

    /// <summary>Sends a POSIX signal to any process (e.g. SIGTERM to a broker).</summary>
    public static void Signal(int pid, int signal) => _ = SysKill(pid, signal);

    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited) Kill();
        }
        catch (InvalidOperationException) { }
        _process.Dispose();
    }
}
