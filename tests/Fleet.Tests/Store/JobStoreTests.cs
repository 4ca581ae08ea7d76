using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Store;
using Xunit;

namespace AttributionFleet.Fleet.Tests.Store;

/// <summary>The job store's rules, the same on both databases: one job per id, a batch stored once, exactly one completion and
/// one failure however many writers race, results read back as written (NaN and offsets included), retention and deletion.</summary>
public abstract class JobStoreContract : IDisposable
{
    private readonly List<SqlJobStore> _stores = new();

    /// <summary>A new store object on the same database (another process, as far as the database can tell).</summary>
    protected abstract SqlJobStore Open();

    protected SqlJobStore NewStore()
    {
        var s = Open();
        lock (_stores) _stores.Add(s);
        return s;
    }

    public virtual void Dispose()
    {
        foreach (var s in _stores) s.Dispose();
    }

    private static NewJob Job(Guid id, int texts, int batches, string fingerprint = "f1") =>
        new(id, "tiny", fingerprint, texts, batches, 1e-3, null, DateTimeOffset.UtcNow.AddSeconds(-1));

    private static AttributionBatchCompleted Batch(Guid id, int index, int count, int texts, string worker = "w", double delta = 1e-7) => new()
    {
        JobId = id,
        ModelId = "tiny",
        BatchIndex = index,
        BatchCount = count,
        TextCount = count * texts,
        Worker = worker,
        QueueMilliseconds = 1.5,
        ExplainMilliseconds = 12.25,
        CompletedAt = DateTimeOffset.UtcNow,
        Results = Enumerable.Range(0, texts).Select(i => new TextAttribution
        {
            Id = $"b{index}-t{i}",
            Text = "some text",
            Tokens = new[] { "[CLS]", "some", "text", "[SEP]" },
            Offsets = new[] { new TokenSpan { Start = 0, Length = 0 }, new TokenSpan { Start = 0, Length = 4 }, new TokenSpan { Start = 5, Length = 4 }, new TokenSpan { Start = 9, Length = 0 } },
            Scores = new[] { 0.0, 0.25, -0.5, 0.0 },
            Delta = delta * (i + 1),
            Method = "deeplift",
        }).ToList(),
    };

    [SkippableFact]
    public async Task Migrations_are_applied_once_whoever_starts_first()
    {
        var stores = Enumerable.Range(0, 3).Select(_ => NewStore()).ToList();
        await Task.WhenAll(stores.Select(s => s.EnsureReady()));
        var id = Guid.NewGuid();
        Assert.Equal(Admission.New, await stores[2].Admit(Job(id, 2, 1)));
        Assert.NotEmpty(SqlJobStore.Migrations());
        Assert.Equal(1, SqlJobStore.Migrations()[0].Version);
    }

    [SkippableFact]
    public async Task A_job_id_is_one_job_and_another_job_under_it_is_a_conflict()
    {
        var store = NewStore();
        var id = Guid.NewGuid();
        Assert.Equal(Admission.New, await store.Admit(Job(id, 4, 2)));
        Assert.Equal(Admission.Running, await NewStore().Admit(Job(id, 4, 2)));
        Assert.Equal(Admission.Conflict, await store.Admit(Job(id, 5, 3, fingerprint: "other")));
        var status = await store.Get(id);
        Assert.Equal(4, status!.TextCount);
        Assert.Equal(2, status.BatchCount);
        Assert.Equal(JobStates.Running, status.State);
    }

    [SkippableFact]
    public async Task A_batch_stored_twice_is_stored_once()
    {
        var store = NewStore();
        var id = Guid.NewGuid();
        await store.Admit(Job(id, 6, 3));
        Assert.Equal(BatchCommitKind.Stored, (await store.CommitBatch(Batch(id, 1, 3, 2))).Kind);
        Assert.Equal(BatchCommitKind.Duplicate, (await NewStore().CommitBatch(Batch(id, 1, 3, 2, worker: "other"))).Kind);
        var status = await store.Get(id);
        Assert.Equal(1, status!.BatchesDone);
        Assert.Equal(2, status.TextsDone);
        Assert.Equal(new[] { 1 }, await store.BatchIndexes(id));
        Assert.Equal("w", (await store.Batch(id, 1))!.Worker);
        Assert.Equal(2, await Count(store.Results(id)));
    }

    [SkippableFact]
    public async Task Racing_writers_complete_a_job_exactly_once()
    {
        const int batches = 24, perBatch = 3;
        var id = Guid.NewGuid();
        await NewStore().Admit(Job(id, batches * perBatch, batches));
        var writers = Enumerable.Range(0, 4).Select(_ => NewStore()).ToList();
        // Every batch twice (a redelivery), from four store objects at once.
        var commits = await Task.WhenAll(Enumerable.Range(0, batches * 2).Select(i =>
            Task.Run(() => writers[i % writers.Count].CommitBatch(Batch(id, i % batches, batches, perBatch, worker: $"w{i % writers.Count}")))));

        var completions = commits.Where(c => c.Kind == BatchCommitKind.CompletedJob).ToList();
        Assert.Single(completions);
        Assert.Equal(batches, commits.Count(c => c.Kind is BatchCommitKind.Stored or BatchCommitKind.CompletedJob));
        Assert.All(commits.Where(c => c.Kind is not (BatchCommitKind.Stored or BatchCommitKind.CompletedJob)),
            c => Assert.True(c.Kind is BatchCommitKind.Duplicate or BatchCommitKind.JobNotRunning, c.Kind.ToString()));
        var completed = completions[0].Completed!;
        Assert.Equal(batches * perBatch, completed.TextCount);
        Assert.Equal(batches, completed.BatchCount);
        Assert.Equal(3e-7, completed.Delta.Max, 12);
        Assert.Equal(1e-3, completed.Delta.Threshold);

        var status = await writers[0].Get(id);
        Assert.Equal(JobStates.Completed, status!.State);
        Assert.Equal(batches * perBatch, status.TextsDone);
        Assert.Equal(completed.TextCount, status.Completed!.TextCount);
        var ids = new List<string>();
        await foreach (var r in writers[1].Results(id)) ids.Add(r.Id);
        Assert.Equal(batches * perBatch, ids.Count);
        Assert.Equal(ids.Count, ids.Distinct().Count());
    }

    [SkippableFact]
    public async Task An_unpublished_end_is_handed_out_until_it_is_marked_published()
    {
        var store = NewStore();
        var id = Guid.NewGuid();
        await store.Admit(Job(id, 2, 1));
        var commit = await store.CommitBatch(Batch(id, 0, 1, 2));
        Assert.Equal(BatchCommitKind.CompletedJob, commit.Kind);
        // The worker died before publishing: the redelivered batch gets the completion to publish.
        var again = await store.CommitBatch(Batch(id, 0, 1, 2));
        Assert.Equal(BatchCommitKind.JobNotRunning, again.Kind);
        Assert.Equal(commit.Completed!.CompletedAt, again.PendingOutcome!.Completed!.CompletedAt);
        await store.MarkOutcomePublished(id);
        Assert.Null((await store.CommitBatch(Batch(id, 0, 1, 2))).PendingOutcome);
        Assert.Null(await store.PendingOutcome(id));
    }

    [SkippableFact]
    public async Task Racing_failures_fail_a_job_once_and_a_refused_resubmission_leaves_it_alone()
    {
        var id = Guid.NewGuid();
        await NewStore().Admit(Job(id, 4, 2));
        var refusal = Failure(id, FailureReasons.LimitExceeded);
        Assert.Null(await NewStore().Fail(refusal, "tiny", onlyIfUnknown: true));
        Assert.Equal(JobStates.Running, (await NewStore().Get(id))!.State);

        var stores = Enumerable.Range(0, 4).Select(_ => NewStore()).ToList();
        var results = await Task.WhenAll(stores.Select((s, i) => Task.Run(() => s.Fail(Failure(id, FailureReasons.EngineError, i), "tiny"))));
        var firsts = results.Where((r, i) => r?.Failed?.BatchIndex == i).ToList();
        Assert.Single(firsts);
        var status = await stores[0].Get(id);
        Assert.Equal(JobStates.Failed, status!.State);
        Assert.Equal(FailureReasons.EngineError, status.Failed!.ReasonCode);
        Assert.Equal(BatchCommitKind.JobNotRunning, (await stores[0].CommitBatch(Batch(id, 0, 2, 2))).Kind);

        // A job refused before admission gets a failed row: the same id later is the same (failed) job.
        var refused = Guid.NewGuid();
        Assert.NotNull((await stores[1].Fail(Failure(refused, FailureReasons.UnknownModel), "nope", onlyIfUnknown: true))?.Failed);
        Assert.Equal(Admission.Finished, await stores[2].Admit(Job(refused, 2, 1)));
    }

    private static AttributionJobFailed Failure(Guid id, string reason, int? batch = null) => new()
    {
        JobId = id,
        ReasonCode = reason,
        Message = "because",
        Field = "Limits:MaxTextsPerJob",
        BatchIndex = batch,
        FailedAt = DateTimeOffset.UtcNow,
    };

    [SkippableFact]
    public async Task Results_read_back_as_written_with_offsets_and_non_finite_deltas()
    {
        var store = NewStore();
        var id = Guid.NewGuid();
        await store.Admit(Job(id, 4, 2));
        await store.CommitBatch(Batch(id, 1, 2, 2, delta: double.NaN));
        var commit = await store.CommitBatch(Batch(id, 0, 2, 2));
        Assert.True(double.IsNaN(commit.Completed!.Delta.Max), "a NaN delta makes the max NaN");
        var results = new List<TextAttribution>();
        await foreach (var r in NewStore().Results(id)) results.Add(r);
        Assert.Equal(new[] { "b0-t0", "b0-t1", "b1-t0", "b1-t1" }, results.Select(r => r.Id));
        Assert.True(double.IsNaN(results[2].Delta));
        Assert.Equal(2e-7, results[1].Delta, 15);
        Assert.Equal(new[] { 0, 0, 5, 9 }, results[0].Offsets!.Select(o => o.Start));
        Assert.Equal(new[] { 0, 4, 4, 0 }, results[0].Offsets!.Select(o => o.Length));
        Assert.Equal(new[] { 0.0, 0.25, -0.5, 0.0 }, results[0].Scores);
        var batch = await store.Batch(id, 0);
        Assert.Equal(12.25, batch!.ExplainMilliseconds);
        Assert.Equal(2, batch.BatchCount);
    }

    [SkippableFact]
    public async Task Deleted_and_expired_jobs_are_gone_with_their_results()
    {
        var store = NewStore();
        var (old, kept, running) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        foreach (var id in new[] { old, kept, running }) await store.Admit(Job(id, 2, 1));
        await store.CommitBatch(Batch(old, 0, 1, 2));
        await store.CommitBatch(Batch(kept, 0, 1, 2));
        await Task.Delay(20);
        var cutoff = DateTimeOffset.UtcNow;
        Assert.True(await store.Delete(kept));
        Assert.False(await store.Delete(kept));
        Assert.Null(await store.Get(kept));
        Assert.Equal(0, await Count(store.Results(kept)));
        Assert.True(await store.DeleteFinishedBefore(cutoff) >= 1);
        Assert.Null(await store.Get(old));
        Assert.Equal(0, await Count(store.Results(old)));
        Assert.NotNull(await store.Get(running)); // a running job is never expired
        Assert.Equal(BatchCommitKind.JobNotRunning, (await store.CommitBatch(Batch(kept, 0, 1, 2))).Kind);
    }

    private static async Task<int> Count<T>(IAsyncEnumerable<T> items)
    {
        int n = 0;
        await foreach (var _ in items) n++;
        return n;
    }
}

public sealed class SqliteJobStoreTests : JobStoreContract
{
    private readonly string _file = Path.Combine(Path.GetTempPath(), $"fleet-store-test-{Guid.NewGuid():N}.db");

    protected override SqlJobStore Open() => new SqliteJobStore($"Data Source={_file}");

    public override void Dispose()
    {
        base.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        foreach (var suffix in new[] { "", "-wal", "-shm" })
            try { File.Delete(_file + suffix); } catch (IOException) { }
    }
}

public sealed class PostgresJobStoreTests : JobStoreContract
{
    protected override SqlJobStore Open()
    {
        Skip.If(PostgresDatabase.SkipReason is not null, PostgresDatabase.SkipReason);
        return new PostgresJobStore(PostgresDatabase.ConnectionString!);
    }
}
