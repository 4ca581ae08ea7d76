using Xunit;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// Where the PostgreSQL tests find a database: <c>FLEET_TEST_POSTGRES</c>, an Npgsql connection string (.ci/services/postgresql.sh
/// starts a cluster and prints it). Without it those tests skip with the reason.
/// </summary>
public static class PostgresDatabase
{
    public const string Variable = "FLEET_TEST_POSTGRES";

    public static string? ConnectionString => Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } cs ? cs : null;

    public static string? SkipReason => ConnectionString is null
        ? $"no PostgreSQL: {Variable} is not set (run .ci/services/postgresql.sh and export the line it prints)"
        : null;
}

/// <summary>A fact that needs PostgreSQL: skipped, with the reason, when there is none.</summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        if (PostgresDatabase.SkipReason is { } reason) Skip = reason;
    }
}
