using System.Data.Common;
using System.Net.Sockets;
using AttributionFleet.Worker.Client;
using Npgsql;

namespace AttributionFleet.Worker.Store;

/// <summary>The job store on PostgreSQL (the cluster): job rows are locked with SELECT … FOR UPDATE inside each deciding transaction.</summary>
public sealed class PostgresJobStore : SqlJobStore
{
    private readonly NpgsqlDataSource _dataSource;

    public PostgresJobStore(string connectionString, string? password = null, int connectTimeoutSeconds = 30)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        if (password is not null) builder.Password = password;
        if (!connectionString.Contains("Timeout", StringComparison.OrdinalIgnoreCase)) builder.Timeout = Math.Clamp(connectTimeoutSeconds, 1, 1024);
        Host = $"PostgreSQL {builder.Host}:{builder.Port}/{builder.Database}";
        _dataSource = NpgsqlDataSource.Create(builder);
    }

    private string Host { get; }

    public override string Describe => Host;

    protected override string LockRow => " FOR UPDATE";

    // One migrator at a time across processes (two workers starting together); released when the transaction ends.
    protected override string MigrationLock => "SELECT pg_advisory_xact_lock(140014)";

    protected override async Task<DbConnection> OpenCore(CancellationToken cancellationToken)
    {
        try
        {
            return await _dataSource.OpenConnectionAsync(cancellationToken);
        }
        catch (Exception e) when (e is NpgsqlException or SocketException or TimeoutException)
        {
            // 28xxx: authentication; 3D000: no such database; 42501: no privilege.
            bool refused = e is PostgresException { SqlState: var state } && (state.StartsWith("28", StringComparison.Ordinal) || state is "3D000" or "42501");
            throw new FleetUnavailableException(Host, Cause(e), e, refused);
        }
    }

    /// <summary>One line: the server's own message (e.g. 28P01 password authentication failed) or the innermost cause.</summary>
    internal static string Cause(Exception e)
    {
        if (e is PostgresException p) return $"{p.SqlState} {p.MessageText}";
        var inner = e;
        while (inner.InnerException is not null) inner = inner.InnerException;
        return inner.Message.ReplaceLineEndings(" ");
    }

    public override void Dispose()
    {
        base.Dispose();
        _dataSource.Dispose();
    }
}
