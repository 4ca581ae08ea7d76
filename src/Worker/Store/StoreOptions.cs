namespace AttributionFleet.Worker.Store;

/// <summary>The job store (section <c>Store</c>): where jobs, batches and per-text results live.</summary>
public sealed class StoreOptions
{
    public const string Section = "Store";

    /// <summary><c>Sqlite</c> or <c>PostgreSql</c>; empty = guessed from <see cref="ConnectionString"/> (<c>Host=</c> means PostgreSQL).</summary>
    public string? Provider { get; set; }
    /// <summary>
    /// ADO.NET connection string: <c>Data Source=/var/lib/fleet/jobs.db</c> (SQLite) or <c>Host=db;Database=fleet;Username=fleet</c>
    /// (PostgreSQL). Empty = SQLite: a temporary file of this process with the in-memory transport (the job lives as long as the
    /// process), <c>~/.cache/attributionfleet/jobs.db</c> with RabbitMQ (workers and clients on one machine share it).
    /// </summary>
    public string? ConnectionString { get; set; }
    /// <summary>A worker's job API (<c>http://worker:8080</c>): clients read jobs through it instead of opening the database.</summary>
    public string? Api { get; set; }
    /// <summary>A file holding the database password (first line), so it appears neither in <c>ps</c> nor in configuration.</summary>
    public string? PasswordFile { get; set; }
    /// <summary>How long opening a connection may take before the store counts as unreachable.</summary>
    public int ConnectTimeoutSeconds { get; set; } = 30;
    /// <summary>How long a worker keeps retrying a store that is down before it gives the message back to the broker as a fault.</summary>
    public int UnavailableRetrySeconds { get; set; } = 600;
    /// <summary>Finished jobs (completed or failed) are deleted with their results this long after they finished; 0 = kept.</summary>
    public double RetentionHours { get; set; } = 168;
    /// <summary>How often a worker sweeps expired jobs.</summary>
    public double RetentionSweepMinutes { get; set; } = 10;
    /// <summary>How often a waiting client reads a job's progress.</summary>
    public int PollIntervalMs { get; set; } = 200;

    public bool IsPostgreSql => string.Equals(Provider, "PostgreSql", StringComparison.OrdinalIgnoreCase)
        || string.Equals(Provider, "Postgres", StringComparison.OrdinalIgnoreCase)
        || (string.IsNullOrWhiteSpace(Provider) && ConnectionString is { } cs && cs.Contains("Host=", StringComparison.OrdinalIgnoreCase));
}
