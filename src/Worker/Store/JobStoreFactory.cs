using System.Data.Common;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;

namespace AttributionFleet.Worker.Store;

/// <summary>Builds the configured store (section <c>Store</c>) and tells passing failures of a store from real ones.</summary>
public static class JobStoreFactory
{
    /// <summary>Where the store lives when nothing is configured and workers may be other processes on this machine.</summary>
    public static string DefaultSharedFile() =>
        Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "attributionfleet", "jobs.db");

    public static SqlJobStore Create(StoreOptions store, WorkerOptions worker)
    {
        string? password = null;
        if (!string.IsNullOrWhiteSpace(store.PasswordFile))
        {
            if (!File.Exists(store.PasswordFile)) throw new FileNotFoundException($"Store:PasswordFile not found: {store.PasswordFile}", store.PasswordFile);
            password = File.ReadLines(store.PasswordFile).FirstOrDefault()?.Trim() ?? "";
        }
        if (store.IsPostgreSql)
        {
            if (string.IsNullOrWhiteSpace(store.ConnectionString))
                throw new ArgumentException("Store:Provider is PostgreSql but Store:ConnectionString is empty");
            return new PostgresJobStore(store.ConnectionString, password, store.ConnectTimeoutSeconds);
        }
        if (!string.IsNullOrWhiteSpace(store.ConnectionString)) return new SqliteJobStore(store.ConnectionString);
        if (worker.UsesRabbitMq) return new SqliteJobStore($"Data Source={DefaultSharedFile()}");
        // In memory the job lives as long as this process: so does its store.
        var file = Path.Combine(Path.GetTempPath(), $"attributionfleet-jobs-{Environment.ProcessId}-{Guid.NewGuid():N}.db");
        return new SqliteJobStore($"Data Source={file}", deleteOnDispose: true);
    }

    /// <summary>A failure that goes away by itself: the store unreachable, restarting, busy, or a connection cut mid-transaction.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        FleetUnavailableException => true,
        DbException { IsTransient: true } => true,
        Npgsql.NpgsqlException { InnerException: IOException or System.Net.Sockets.SocketException or TimeoutException } => true,
        TimeoutException => true,
        _ => false,
    };
}
