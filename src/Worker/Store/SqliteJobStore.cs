using System.Data.Common;
using AttributionFleet.Worker.Client;
using Microsoft.Data.Sqlite;

namespace AttributionFleet.Worker.Store;

/// <summary>
/// The job store in one SQLite file: the embedded default (in-memory transport, or workers and clients on one machine).
/// WAL journal, so readers never block the writer; writes are BEGIN IMMEDIATE transactions, one at a time across processes.
/// </summary>
public sealed class SqliteJobStore : SqlJobStore
{
    private readonly string _connectionString;
    private readonly string _path;
    private readonly bool _deleteOnDispose;
    private volatile bool _walSet;

    /// <param name="deleteOnDispose">The file belongs to this process (in-memory transport): deleted when the store is disposed.</param>
    public SqliteJobStore(string connectionString, bool deleteOnDispose = false)
    {
        var builder = new SqliteConnectionStringBuilder(connectionString);
        if (string.IsNullOrWhiteSpace(builder.DataSource)) throw new ArgumentException("the SQLite connection string names no Data Source (Store:ConnectionString)");
        _path = Path.GetFullPath(builder.DataSource);
        builder.DataSource = _path;
        builder.Pooling = true;
        if (builder.DefaultTimeout < 30) builder.DefaultTimeout = 30; // seconds a command waits for the other writers (SQLITE_BUSY)
        _connectionString = builder.ToString();
        _deleteOnDispose = deleteOnDispose;
    }

    /// <summary>The database file.</summary>
    public string FilePath => _path;

    public override string Describe => $"the SQLite job store {_path}";

    protected override string LockRow => "";

    protected override string MigrationLock => "";

    protected override DbTransaction BeginWrite(DbConnection connection) => ((SqliteConnection)connection).BeginTransaction(deferred: false);

    protected override async Task<DbConnection> OpenCore(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        try
        {
            var directory = Path.GetDirectoryName(_path);
            if (!string.IsNullOrEmpty(directory)) Directory.CreateDirectory(directory);
            await connection.OpenAsync(cancellationToken);
            await using var pragma = connection.CreateCommand();
            // The journal mode is a property of the file (set once per store object); asking for it on every open takes a lock
            // that collides with the other processes' readers and writers. busy_timeout and synchronous are per connection.
            pragma.CommandText = (_walSet ? "" : "PRAGMA journal_mode=WAL; ") + "PRAGMA busy_timeout=30000; PRAGMA synchronous=NORMAL;";
            await pragma.ExecuteNonQueryAsync(cancellationToken);
            _walSet = true;
            return connection;
        }
        catch (Exception e) when (e is SqliteException or IOException or UnauthorizedAccessException)
        {
            await connection.DisposeAsync();
            throw new FleetUnavailableException(Describe, e.Message, e);
        }
    }

    public override void Dispose()
    {
        base.Dispose();
        if (!_deleteOnDispose) return;
        SqliteConnection.ClearAllPools();
        foreach (var suffix in new[] { "", "-wal", "-shm" })
            try { File.Delete(_path + suffix); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
