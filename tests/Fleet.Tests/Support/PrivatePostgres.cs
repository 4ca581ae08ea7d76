using System.Diagnostics;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// A PostgreSQL server of one test: its own data directory (initdb) and free port on 127.0.0.1, trust authentication on
/// loopback, run as the postgres user through pg_ctl; stopped and started again on the same data to restart "the database"
/// mid-job. Needs root and Debian's postgresql package (<see cref="SkipReason"/>).
/// </summary>
public sealed class PrivatePostgres : IDisposable
{
    private readonly string _root = Path.Combine("/var/tmp", $"fleet-test-pg-{Guid.NewGuid():N}");
    public int Port { get; } = Tools.FreePort();
    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Database=postgres;Username=postgres;Timeout=5";

    public static string? Bin { get; } = Directory.Exists("/usr/lib/postgresql")
        ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "pg_ctl"))).OrderBy(d => d).LastOrDefault()
        : null;

    public static string? SkipReason =>
        Bin is null ? "no PostgreSQL binaries under /usr/lib/postgresql (apt-get install postgresql; .ci/services/postgresql.sh does)"
        : Environment.UserName != "root" ? "a private PostgreSQL needs root (to run pg_ctl as the postgres user)"
        : null;

    public void Init()
    {
        Directory.CreateDirectory(_root);
        Run("chown", "postgres:postgres", _root);
        AsPostgres(Path.Combine(Bin!, "initdb"), "-D", Data, "-U", "postgres", "--auth=trust");
    }

    private string Data => Path.Combine(_root, "data");

    public void Start() => AsPostgres(Path.Combine(Bin!, "pg_ctl"), "-D", Data, "-l", Path.Combine(_root, "server.log"), "-w", "-t", "60",
        "-o", $"-p {Port} -k {_root} -c listen_addresses=127.0.0.1", "start");

    /// <summary>Fast shutdown: open connections are cut, in-flight transactions roll back.</summary>
    public void Stop() => AsPostgres(Path.Combine(Bin!, "pg_ctl"), "-D", Data, "-m", "fast", "-w", "stop");

    private static void AsPostgres(params string[] command) => Run("runuser", new[] { "-u", "postgres", "--" }.Concat(command).ToArray());

    private static void Run(string file, params string[] args)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var error = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(90_000)) { p.Kill(); throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {p.ExitCode}: {output.Result} {error.Result}");
    }

    public void Dispose()
    {
        try { Stop(); } catch (Exception) { /* not running */ }
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
