using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using AttributionFleet.Worker.Client;
using Xunit;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// A RabbitMQ node of the test's own (not the shared broker): <c>rabbitmq-server</c> run as a child process on free
/// ports, with its node name, data (mnesia), logs and a private epmd, so it can be stopped and started again while
/// other brokers run on the machine. <see cref="Stop"/> is SIGTERM (a clean broker shutdown, ~2 s);
/// <see cref="Start"/> again reuses the same port and data directory, so durable queues and persistent messages survive.
/// Needs the Debian package (<c>/usr/lib/rabbitmq/bin/rabbitmq-server</c>) and root (it reads <c>/root/.erlang.cookie</c>).
/// </summary>
public sealed class PrivateRabbitMqNode : IDisposable
{
    public const string ServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server";
    private const string Epmd = "/usr/bin/epmd";

    private readonly string _root;
    private readonly string _nodeName;
    private readonly int _distPort;
    private readonly int _epmdPort;
    private readonly StringBuilder _output = new();
    private Process? _epmd;
    private Process? _server;

    public int Port { get; }
    public string Url => $"amqp://guest:guest@127.0.0.1:{Port}/";
    public bool Running => _server is { HasExited: false };

    /// <summary>Null when a private node can be run here; otherwise why not.</summary>
    public static string? SkipReason { get; } = FindSkipReason();

    private static string? FindSkipReason()
    {
        if (!OperatingSystem.IsLinux()) return "private RabbitMQ node: Linux only";
        if (!File.Exists(ServerScript)) return $"private RabbitMQ node: {ServerScript} is not installed (.ci/services/rabbitmq.sh installs it)";
        if (!File.Exists(Epmd)) return $"private RabbitMQ node: {Epmd} is not installed";
        if (geteuid() != 0) return "private RabbitMQ node: needs root (rabbitmq-server with HOME=/root)";
        return null;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern uint geteuid();

    /// <param name="config">rabbitmq.conf content for this node (e.g. <c>max_message_size = …</c>), or null for the defaults.</param>
    public PrivateRabbitMqNode(string? config = null)
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        _root = Path.Combine(Path.GetTempPath(), $"fleet-rabbit-{tag}");
        _nodeName = $"fleet-test-{tag}@localhost";
        Port = WorkerProcess.FreePort();
        _distPort = WorkerProcess.FreePort();
        _epmdPort = WorkerProcess.FreePort();
        Directory.CreateDirectory(Path.Combine(_root, "mnesia"));
        Directory.CreateDirectory(Path.Combine(_root, "log"));
        File.WriteAllText(Path.Combine(_root, "enabled_plugins"), "[].");
        if (config is not null) File.WriteAllText(Path.Combine(_root, "rabbitmq.conf"), config);
    }

    /// <summary>Everything the node printed (both starts), for failure messages.</summary>
    public string Output
    {
        get { lock (_output) return _output.ToString(); }
    }

    /// <summary>Starts the node (first time or again after <see cref="Stop"/>) and waits until its AMQP port answers.</summary>
    public async Task Start(TimeSpan timeout)
    {
        if (Running) throw new InvalidOperationException("the node is running");
        // Our own epmd (not a daemon), so it goes away with the node and the machine's epmd is left alone.
        _epmd ??= StartProcess(Epmd, new[] { "-port", _epmdPort.ToString() }, new Dictionary<string, string>(), "epmd");
        _server = StartProcess(ServerScript, Array.Empty<string>(), new Dictionary<string, string>
        {
            ["HOME"] = "/root",
            ["RABBITMQ_NODENAME"] = _nodeName,
            ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1",
            ["RABBITMQ_NODE_PORT"] = Port.ToString(),
            ["RABBITMQ_DIST_PORT"] = _distPort.ToString(),
            ["RABBITMQ_MNESIA_BASE"] = Path.Combine(_root, "mnesia"),
            ["RABBITMQ_LOG_BASE"] = Path.Combine(_root, "log"),
            ["RABBITMQ_ENABLED_PLUGINS_FILE"] = Path.Combine(_root, "enabled_plugins"),
            ["RABBITMQ_PID_FILE"] = Path.Combine(_root, "rabbit.pid"),
            ["ERL_EPMD_PORT"] = _epmdPort.ToString(),
            ["RABBITMQ_CONFIG_FILE"] = Path.Combine(_root, "rabbitmq.conf"),
        }, "rabbit");
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_server.HasExited) throw new InvalidOperationException($"rabbitmq-server exited with {_server.ExitCode}:\n{Output}");
            if (await Answers()) return;
            await Task.Delay(100);
        }
        throw new TimeoutException($"rabbitmq-server did not open port {Port} in {timeout.TotalSeconds} s:\n{Output}");
    }

    /// <summary>SIGTERM (the script passes it to the Erlang VM: a clean shutdown) and waits for the exit.</summary>
    public async Task Stop(TimeSpan timeout)
    {
        if (_server is null || _server.HasExited) return;
        WorkerProcess.Signal(_server.Id, 15);
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _server.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            _server.Kill(entireProcessTree: true);
            throw new TimeoutException($"rabbitmq-server did not stop in {timeout.TotalSeconds} s (killed)");
        }
    }

    private async Task<bool> Answers()
    {
        try
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync("127.0.0.1", Port).WaitAsync(TimeSpan.FromSeconds(1));
            return true;
        }
        catch (SocketException) { return false; }
        catch (TimeoutException) { return false; }
    }

    private Process StartProcess(string file, string[] args, Dictionary<string, string> environment, string prefix)
    {
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // rabbitmq-server runs with -noinput; no terminal to read from
            UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        foreach (var (k, v) in environment) info.Environment[k] = v;
        var process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => Append(prefix, e.Data);
        process.ErrorDataReceived += (_, e) => Append(prefix, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private void Append(string prefix, string? line)
    {
        if (string.IsNullOrWhiteSpace(line)) return;
        lock (_output) _output.Append(prefix).Append(": ").AppendLine(line);
    }

    private static void KillTree(Process? process)
    {
        if (process is null) return;
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.WaitForExit(5_000);
        }
        catch (InvalidOperationException) { }
        process.Dispose();
    }

    /// <summary>Kills the node and its epmd (whatever state they are in) and deletes the node's files.</summary>
    public void Dispose()
    {
        KillTree(_server);
        KillTree(_epmd);
        try { Directory.Delete(_root, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A fact that runs its own RabbitMQ node: skipped, with the reason, where it cannot.</summary>
public sealed class PrivateRabbitMqFactAttribute : FactAttribute
{
    public PrivateRabbitMqFactAttribute()
    {
        if (PrivateRabbitMqNode.SkipReason is { } reason) Skip = reason;
    }
}
