using System.Data;
using System.Data.Common;
using System.Runtime.CompilerServices;
using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;

namespace AttributionFleet.Worker.Store;

/// <summary>
/// The job store in plain SQL over ADO.NET; the SQL is the same on SQLite and PostgreSQL, the dialects (<see cref="SqliteJobStore"/>,
/// <see cref="PostgresJobStore"/>) only open connections, lock a job row and serialize migrations.
/// Every write that decides something (admission, a batch, a failure) is one transaction that first locks the job's row, so
/// commits of one job are serialized: exactly one of them sees the last batch arrive, exactly one failure fails the job.
/// </summary>
public abstract class SqlJobStore : IJobStore, IDisposable
{
    /// <summary>
    /// How results and end events are stored and served (the job API uses the same options): camelCase JSON; NaN and
    /// infinities as null (<see cref="NonFiniteAsNull"/>, never "NaN" strings), read back as NaN; a text's <c>status</c>
    /// is non_finite when it has them.
    /// </summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new NonFiniteAsNull() },
    };

    private readonly SemaphoreSlim _migrationGate = new(1, 1);
    private volatile bool _migrated;

    public abstract string Describe { get; }

    /// <summary>An open connection; failures to connect become <see cref="FleetUnavailableException"/> naming <see cref="Describe"/>.</summary>
    protected abstract Task<DbConnection> OpenCore(CancellationToken cancellationToken);

    /// <summary>Appended to the SELECT of a job row inside a deciding transaction (PostgreSQL: FOR UPDATE; SQLite's write
    /// transactions are already exclusive).</summary>
    protected abstract string LockRow { get; }

    /// <summary>Run first inside the migration transaction so that two processes starting together migrate one after the other.</summary>
    protected abstract string MigrationLock { get; }

    /// <summary>Begins a transaction that may write (SQLite: BEGIN IMMEDIATE, so two writers never deadlock upgrading a read lock).</summary>
    protected virtual DbTransaction BeginWrite(DbConnection connection) => connection.BeginTransaction(IsolationLevel.ReadCommitted);

    private async Task<DbConnection> Open(CancellationToken cancellationToken)
    {
        await EnsureReady(cancellationToken);
        return await OpenCore(cancellationToken);
    }

    // ---- migrations -------------------------------------------------------------------------------------------------

    /// <summary>The migrations shipped in this assembly (Store/Migrations/NNNN_name.sql), by version.</summary>
    public static IReadOnlyList<(int Version, string Name, string Sql)> Migrations()
    {
        var assembly = typeof(SqlJobStore).Assembly;
        const string prefix = "AttributionFleet.Worker.Store.Migrations.";
        return assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && n.EndsWith(".sql", StringComparison.Ordinal))
            .Select(n =>
            {
                var name = n[prefix.Length..^4];
                using var reader = new StreamReader(assembly.GetManifestResourceStream(n)!);
                return (int.Parse(name[..name.IndexOf('_')]), name, reader.ReadToEnd());
            })
            .OrderBy(m => m.Item1)
            .ToList();
    }

    public async Task EnsureReady(CancellationToken cancellationToken = default)
    {
        if (_migrated) return;
        await _migrationGate.WaitAsync(cancellationToken);
        try
        {
            if (_migrated) return;
            await using var connection = await OpenCore(cancellationToken);
            await using var tx = BeginWrite(connection);
            if (MigrationLock.Length > 0) await Execute(connection, tx, MigrationLock, cancellationToken);
            await Execute(connection, tx, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)", cancellationToken);
            var applied = new HashSet<int>();
            await using (var cmd = Command(connection, tx, "SELECT version FROM schema_migrations"))
            await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
                while (await reader.ReadAsync(cancellationToken)) applied.Add(reader.GetInt32(0));
            foreach (var (version, name, sql) in Migrations().Where(m => !applied.Contains(m.Version)))
            {
                foreach (var statement in Statements(sql)) await Execute(connection, tx, statement, cancellationToken);
                await Execute(connection, tx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, @t)", cancellationToken,
                    ("v", version), ("n", name), ("t", Now()));
            }
            await tx.CommitAsync(cancellationToken);
            _migrated = true;
        }
        finally
        {
            _migrationGate.Release();
        }
    }

    /// <summary>The statements of a migration file: split at semicolons that end a line, comments dropped.</summary>
    internal static IEnumerable<string> Statements(string sql)
    {
        var lines = sql.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => !l.TrimStart().StartsWith("--", StringComparison.Ordinal));
        var current = new List<string>();
        foreach (var line in lines)
        {
            current.Add(line);
            if (!line.TrimEnd().EndsWith(';')) continue;
            var statement = string.Join('\n', current).Trim().TrimEnd(';');
            current.Clear();
            if (statement.Length > 0) yield return statement;
        }
        var rest = string.Join('\n', current).Trim();
        if (rest.Length > 0) yield return rest;
    }

    // ---- writes -----------------------------------------------------------------------------------------------------

    public async Task<Admission> Admit(NewJob job, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var tx = BeginWrite(connection);
        int inserted = await Execute(connection, tx,
            "INSERT INTO jobs (job_id, model_id, fingerprint, status, text_count, batch_count, delta_threshold, relative_delta_threshold, submitted_at, accepted_at) " +
            "VALUES (@j, @m, @f, @s, @tc, @bc, @dt, @rdt, @sub, @acc) ON CONFLICT (job_id) DO NOTHING", cancellationToken,
            ("j", Id(job.JobId)), ("m", job.ModelId), ("f", job.Fingerprint), ("s", JobStates.Running), ("tc", job.TextCount), ("bc", job.BatchCount),
            ("dt", job.DeltaThreshold), ("rdt", job.RelativeDeltaThreshold), ("sub", job.SubmittedAt.ToUnixTimeMilliseconds()), ("acc", Now()));
        Admission admission = Admission.New;
        if (inserted == 0)
        {
            await using var cmd = Command(connection, tx, "SELECT fingerprint, status FROM jobs WHERE job_id = @j" + LockRow, ("j", Id(job.JobId)));
            await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            string fingerprint = reader.GetString(0), status = reader.GetString(1);
            // A job refused before admission has an empty fingerprint and is failed: finished either way.
            admission = status != JobStates.Running ? Admission.Finished : fingerprint != job.Fingerprint ? Admission.Conflict : Admission.Running;
        }
        await tx.CommitAsync(cancellationToken);
        return admission;
    }

    public async Task<BatchCommit> CommitBatch(AttributionBatchCompleted batch, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var tx = BeginWrite(connection);
        var job = await LockJob(connection, tx, batch.JobId, cancellationToken);
        if (job is null || job.Status != JobStates.Running)
        {
            var pending = job is null ? null : Pending(job);
            await tx.CommitAsync(cancellationToken);
            return new BatchCommit(BatchCommitKind.JobNotRunning, PendingOutcome: pending);
        }
        int inserted = await Execute(connection, tx,
            "INSERT INTO batches (job_id, batch_index, worker, text_count, queue_ms, explain_ms, completed_at) VALUES (@j, @b, @w, @n, @q, @e, @c) " +
            "ON CONFLICT (job_id, batch_index) DO NOTHING", cancellationToken,
            ("j", Id(batch.JobId)), ("b", batch.BatchIndex), ("w", batch.Worker), ("n", batch.Results.Count), ("q", batch.QueueMilliseconds),
            ("e", batch.ExplainMilliseconds), ("c", batch.CompletedAt.ToUnixTimeMilliseconds()));
        if (inserted == 0)
        {
            await tx.CommitAsync(cancellationToken);
            return new BatchCommit(BatchCommitKind.Duplicate);
        }
        for (int i = 0; i < batch.Results.Count; i++)
        {
            var r = batch.Results[i];
            double abs = Math.Abs(r.Delta);
            await Execute(connection, tx,
                "INSERT INTO results (job_id, batch_index, position, text_id, abs_delta, over_threshold, result_json) VALUES (@j, @b, @p, @t, @d, @o, @r)",
                cancellationToken, ("j", Id(batch.JobId)), ("b", batch.BatchIndex), ("p", i), ("t", r.Id), ("d", double.IsFinite(abs) ? abs : null),
                ("o", r.OverThreshold ? 1 : 0), ("r", JsonSerializer.Serialize(r, Json)));
        }
        await Execute(connection, tx, "UPDATE jobs SET batches_done = batches_done + 1, texts_done = texts_done + @n WHERE job_id = @j", cancellationToken,
            ("n", batch.Results.Count), ("j", Id(batch.JobId)));
        if (job.BatchesDone + 1 < job.BatchCount)
        {
            await tx.CommitAsync(cancellationToken);
            return new BatchCommit(BatchCommitKind.Stored);
        }
        // The last batch: this transaction holds the job's row, so no other commit can also be the last one.
        var completed = new AttributionJobCompleted
        {
            JobId = batch.JobId,
            ModelId = job.ModelId,
            TextCount = job.TextsDone + batch.Results.Count,
            BatchCount = job.BatchCount,
            DuplicateBatches = 0,
            Delta = await Summary(connection, tx, batch.JobId, job.DeltaThreshold, cancellationToken),
            WallMilliseconds = (DateTimeOffset.UtcNow - job.SubmittedAt).TotalMilliseconds,
            CompletedAt = DateTimeOffset.UtcNow,
        };
        var (faithfulness, weakReferences) = await Extras(connection, tx, batch.JobId, cancellationToken);
        completed = completed with { Faithfulness = faithfulness, WeakReferences = weakReferences };
        await Execute(connection, tx, "UPDATE jobs SET status = @s, finished_at = @t, outcome_json = @o WHERE job_id = @j", cancellationToken,
            ("s", JobStates.Completed), ("t", completed.CompletedAt.ToUnixTimeMilliseconds()), ("o", JsonSerializer.Serialize(completed, Json)), ("j", Id(batch.JobId)));
        await tx.CommitAsync(cancellationToken);
        return new BatchCommit(BatchCommitKind.CompletedJob, completed);
    }

    public async Task<JobOutcomeEvent?> Fail(AttributionJobFailed failed, string modelId, bool onlyIfUnknown = false, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var tx = BeginWrite(connection);
        var job = await LockJob(connection, tx, failed.JobId, cancellationToken);
        JobOutcomeEvent? result;
        var json = JsonSerializer.Serialize(failed, Json);
        long at = failed.FailedAt.ToUnixTimeMilliseconds();
        if (job is null)
        {
            await Execute(connection, tx,
                "INSERT INTO jobs (job_id, model_id, fingerprint, status, text_count, batch_count, submitted_at, accepted_at, finished_at, outcome_json) " +
                "VALUES (@j, @m, '', @s, 0, 0, @t, @t, @t, @o)", cancellationToken,
                ("j", Id(failed.JobId)), ("m", modelId), ("s", JobStates.Failed), ("t", at), ("o", json));
            result = new JobOutcomeEvent(null, failed);
        }
        else if (job.Status == JobStates.Running && !onlyIfUnknown)
        {
            await Execute(connection, tx, "UPDATE jobs SET status = @s, finished_at = @t, outcome_json = @o WHERE job_id = @j", cancellationToken,
                ("s", JobStates.Failed), ("t", at), ("o", json), ("j", Id(failed.JobId)));
            result = new JobOutcomeEvent(null, failed);
        }
        else result = Pending(job);
        await tx.CommitAsync(cancellationToken);
        return result;
    }

    public async Task MarkOutcomePublished(Guid jobId, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await Execute(connection, null, "UPDATE jobs SET outcome_published = 1 WHERE job_id = @j", cancellationToken, ("j", Id(jobId)));
    }

    public async Task<JobOutcomeEvent?> PendingOutcome(Guid jobId, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        var job = await ReadJob(connection, null, jobId, "", cancellationToken);
        return job is null ? null : Pending(job);
    }

    public async Task<bool> Delete(Guid jobId, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var tx = BeginWrite(connection);
        await Execute(connection, tx, "DELETE FROM results WHERE job_id = @j", cancellationToken, ("j", Id(jobId)));
        await Execute(connection, tx, "DELETE FROM batches WHERE job_id = @j", cancellationToken, ("j", Id(jobId)));
        int jobs = await Execute(connection, tx, "DELETE FROM jobs WHERE job_id = @j", cancellationToken, ("j", Id(jobId)));
        await tx.CommitAsync(cancellationToken);
        return jobs > 0;
    }

    public async Task<int> DeleteFinishedBefore(DateTimeOffset cutoff, CancellationToken cancellationToken = default)
    {
        var expired = new List<string>();
        await using (var connection = await Open(cancellationToken))
        await using (var cmd = Command(connection, null, "SELECT job_id FROM jobs WHERE status <> @s AND finished_at < @t", ("s", JobStates.Running),
                         ("t", cutoff.ToUnixTimeMilliseconds())))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
            while (await reader.ReadAsync(cancellationToken)) expired.Add(reader.GetString(0));
        int deleted = 0;
        foreach (var id in expired)
            if (await Delete(Guid.ParseExact(id, "N"), cancellationToken)) deleted++;
        return deleted;
    }

    // ---- reads ------------------------------------------------------------------------------------------------------

    public async Task<JobStatus?> Get(Guid jobId, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        var job = await ReadJob(connection, null, jobId, "", cancellationToken);
        if (job is null) return null;
        var outcome = Outcome(job);
        return new JobStatus(jobId, job.ModelId, job.Status, job.TextCount, job.TextsDone, job.BatchCount, job.BatchesDone, job.SubmittedAt,
            job.FinishedAt, outcome?.Completed, outcome?.Failed);
    }

    public async Task<IReadOnlyList<int>> BatchIndexes(Guid jobId, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var cmd = Command(connection, null, "SELECT batch_index FROM batches WHERE job_id = @j ORDER BY batch_index", ("j", Id(jobId)));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        var indexes = new List<int>();
        while (await reader.ReadAsync(cancellationToken)) indexes.Add(reader.GetInt32(0));
        return indexes;
    }

    public async Task<AttributionBatchCompleted?> Batch(Guid jobId, int batchIndex, CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        var job = await ReadJob(connection, null, jobId, "", cancellationToken);
        if (job is null) return null;
        AttributionBatchCompleted batch;
        await using (var cmd = Command(connection, null,
                         "SELECT worker, queue_ms, explain_ms, completed_at FROM batches WHERE job_id = @j AND batch_index = @b", ("j", Id(jobId)), ("b", batchIndex)))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
        {
            if (!await reader.ReadAsync(cancellationToken)) return null;
            batch = new AttributionBatchCompleted
            {
                JobId = jobId,
                ModelId = job.ModelId,
                BatchIndex = batchIndex,
                BatchCount = job.BatchCount,
                TextCount = job.TextCount,
                DeltaThreshold = job.DeltaThreshold,
                RelativeDeltaThreshold = job.RelativeDeltaThreshold,
                SubmittedAt = job.SubmittedAt,
                Worker = reader.GetString(0),
                QueueMilliseconds = reader.GetDouble(1),
                ExplainMilliseconds = reader.GetDouble(2),
                CompletedAt = DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(3)),
            };
        }
        var results = new List<TextAttribution>();
        await using (var cmd = Command(connection, null, "SELECT result_json FROM results WHERE job_id = @j AND batch_index = @b ORDER BY position",
                         ("j", Id(jobId)), ("b", batchIndex)))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
            while (await reader.ReadAsync(cancellationToken)) results.Add(JsonSerializer.Deserialize<TextAttribution>(reader.GetString(0), Json)!);
        return batch with { Results = results };
    }

    public async IAsyncEnumerable<TextAttribution> Results(Guid jobId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await Open(cancellationToken);
        await using var cmd = Command(connection, null, "SELECT result_json FROM results WHERE job_id = @j ORDER BY batch_index, position", ("j", Id(jobId)));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken)) yield return JsonSerializer.Deserialize<TextAttribution>(reader.GetString(0), Json)!;
    }

    // ---- helpers ----------------------------------------------------------------------------------------------------

    private sealed record JobRow(string ModelId, string Status, int TextCount, int BatchCount, int BatchesDone, int TextsDone, double? DeltaThreshold,
        double? RelativeDeltaThreshold, DateTimeOffset SubmittedAt, DateTimeOffset? FinishedAt, string? OutcomeJson, bool OutcomePublished);

    private Task<JobRow?> LockJob(DbConnection connection, DbTransaction tx, Guid jobId, CancellationToken cancellationToken) =>
        ReadJob(connection, tx, jobId, LockRow, cancellationToken);

    private static async Task<JobRow?> ReadJob(DbConnection connection, DbTransaction? tx, Guid jobId, string suffix, CancellationToken cancellationToken)
    {
        await using var cmd = Command(connection, tx,
            "SELECT model_id, status, text_count, batch_count, batches_done, texts_done, delta_threshold, relative_delta_threshold, submitted_at, " +
            "finished_at, outcome_json, outcome_published FROM jobs WHERE job_id = @j" + suffix, ("j", Id(jobId)));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        if (!await reader.ReadAsync(cancellationToken)) return null;
        return new JobRow(reader.GetString(0), reader.GetString(1), reader.GetInt32(2), reader.GetInt32(3), reader.GetInt32(4), reader.GetInt32(5),
            reader.IsDBNull(6) ? null : reader.GetDouble(6), reader.IsDBNull(7) ? null : reader.GetDouble(7),
            DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(8)), reader.IsDBNull(9) ? null : DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(9)),
            reader.IsDBNull(10) ? null : reader.GetString(10), reader.GetInt32(11) != 0);
    }

    private static JobOutcomeEvent? Outcome(JobRow job) => job.OutcomeJson is null ? null
        : job.Status == JobStates.Completed ? new JobOutcomeEvent(JsonSerializer.Deserialize<AttributionJobCompleted>(job.OutcomeJson, Json), null)
        : job.Status == JobStates.Failed ? new JobOutcomeEvent(null, JsonSerializer.Deserialize<AttributionJobFailed>(job.OutcomeJson, Json))
        : null;

    private static JobOutcomeEvent? Pending(JobRow job) => job.OutcomePublished ? null : Outcome(job);

    /// <summary>|delta| over every text of the job: max (NaN when any delta is not finite), mean, p95 (nearest rank) of the finite ones.</summary>
    private static async Task<DeltaSummary> Summary(DbConnection connection, DbTransaction tx, Guid jobId, double? threshold, CancellationToken cancellationToken)
    {
        var finite = new List<double>();
        int nonFinite = 0, over = 0;
        await using (var cmd = Command(connection, tx, "SELECT abs_delta, over_threshold FROM results WHERE job_id = @j", ("j", Id(jobId))))
        await using (var reader = await cmd.ExecuteReaderAsync(cancellationToken))
            while (await reader.ReadAsync(cancellationToken))
            {
                if (reader.IsDBNull(0)) nonFinite++;
                else finite.Add(reader.GetDouble(0));
                if (reader.GetInt32(1) != 0) over++;
            }
        finite.Sort();
        double P(double q) => finite.Count == 0 ? 0 : finite[Math.Min(finite.Count - 1, (int)Math.Ceiling(q * finite.Count) - 1)];
        return new DeltaSummary
        {
            Max = nonFinite > 0 ? double.NaN : finite.LastOrDefault(),
            Mean = finite.Count == 0 ? 0 : finite.Average(),
            P95 = P(0.95),
            OverThreshold = over,
            Threshold = threshold,
        };
    }

    /// <summary>
    /// The job's faithfulness summary (mean, p5, p95 per metric) and weak-reference count, from the stored results; null
    /// when no text carried them (the job did not ask for faithfulness, or the head has no probability to check).
    /// </summary>
    private static async Task<(JobFaithfulnessSummary? Faithfulness, int? WeakReferences)> Extras(DbConnection connection, DbTransaction tx,
        Guid jobId, CancellationToken cancellationToken)
    {
        var faithfulness = new List<TextFaithfulness>();
        int? weak = null;
        await using var cmd = Command(connection, tx, "SELECT result_json FROM results WHERE job_id = @j", ("j", Id(jobId)));
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var r = JsonSerializer.Deserialize<TextAttribution>(reader.GetString(0), Json);
            if (r?.Faithfulness is { } f) faithfulness.Add(f);
            if (r?.WeakReference is { } w) weak = (weak ?? 0) + (w ? 1 : 0);
        }
        return (Models.ResultExtras.Summarize(faithfulness), weak);
    }

    /// <summary>Job ids as 32 hex digits: the same text on both databases.</summary>
    private static string Id(Guid jobId) => jobId.ToString("N");

    private static long Now() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private static DbCommand Command(DbConnection connection, DbTransaction? tx, string sql, params (string Name, object? Value)[] parameters)
    {
        var cmd = connection.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = tx;
        foreach (var (name, value) in parameters)
        {
            var p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value ?? DBNull.Value;
            if (value is null) p.DbType = DbType.Double; // the only nullable parameters are numbers
            cmd.Parameters.Add(p);
        }
        return cmd;
    }

    private static async Task<int> Execute(DbConnection connection, DbTransaction? tx, string sql, CancellationToken cancellationToken,
        params (string Name, object? Value)[] parameters)
    {
        await using var cmd = Command(connection, tx, sql, parameters);
        return await cmd.ExecuteNonQueryAsync(cancellationToken);
    }

    public virtual void Dispose() => _migrationGate.Dispose();
}
