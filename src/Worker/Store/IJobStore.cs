using AttributionFleet.Contracts.V1;

namespace AttributionFleet.Worker.Store;

/// <summary>Job states in the store.</summary>
public static class JobStates
{
    public const string Running = "running";
    public const string Completed = "completed";
    public const string Failed = "failed";
}

/// <summary>A job as the planner admits it: its identity, content fingerprint and how it was split.</summary>
public sealed record NewJob(Guid JobId, string ModelId, string Fingerprint, int TextCount, int BatchCount, double? DeltaThreshold,
    double? RelativeDeltaThreshold, DateTimeOffset SubmittedAt);

/// <summary>What <see cref="IJobStore.Admit"/> found.</summary>
public enum Admission
{
    /// <summary>First time this job id is seen: send its batches.</summary>
    New,
    /// <summary>Already admitted with the same content and still running (a redelivered job): send the batches again, they are no-ops if done.</summary>
    Running,
    /// <summary>Already completed or failed: nothing to send.</summary>
    Finished,
    /// <summary>The job id is taken by a job with other texts or options: refused, the stored job stays as it is.</summary>
    Conflict,
}

/// <summary>What <see cref="IJobStore.CommitBatch"/> did.</summary>
public enum BatchCommitKind
{
    /// <summary>Stored; the job goes on.</summary>
    Stored,
    /// <summary>Stored and it was the job's last batch: <see cref="BatchCommit.Completed"/> is to be published (once, by this caller).</summary>
    CompletedJob,
    /// <summary>This batch was already stored (redelivery, job split twice): nothing written.</summary>
    Duplicate,
    /// <summary>The job is finished (failed, or complete) or unknown (deleted): nothing written.</summary>
    JobNotRunning,
}

/// <summary>The result of committing a batch; <see cref="PendingOutcome"/> is a job end whose event is still unpublished.</summary>
public sealed record BatchCommit(BatchCommitKind Kind, AttributionJobCompleted? Completed = null, JobOutcomeEvent? PendingOutcome = null);

/// <summary>A job's end event as stored: exactly one of the two is set.</summary>
public sealed record JobOutcomeEvent(AttributionJobCompleted? Completed, AttributionJobFailed? Failed);

/// <summary>A job's state as readers see it.</summary>
public sealed record JobStatus(Guid JobId, string ModelId, string State, int TextCount, int TextsDone, int BatchCount, int BatchesDone,
    DateTimeOffset SubmittedAt, DateTimeOffset? FinishedAt, AttributionJobCompleted? Completed, AttributionJobFailed? Failed)
{
    public bool IsFinished => State != JobStates.Running;
}

/// <summary>What readers of jobs need: the store itself, or the worker's job API over HTTP (<see cref="Http.HttpJobReader"/>).</summary>
public interface IJobReader
{
    /// <summary>Where the jobs are read from, for messages (never a password).</summary>
    string Describe { get; }

    Task<JobStatus?> Get(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>Indexes of the stored batches of a job.</summary>
    Task<IReadOnlyList<int>> BatchIndexes(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>One stored batch with its results in the order they were explained, or null.</summary>
    Task<AttributionBatchCompleted?> Batch(Guid jobId, int batchIndex, CancellationToken cancellationToken = default);

    /// <summary>Every stored result of a job, batch by batch.</summary>
    IAsyncEnumerable<TextAttribution> Results(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>Deletes a job with its batches and results; false when there was none.</summary>
    Task<bool> Delete(Guid jobId, CancellationToken cancellationToken = default);
}

/// <summary>
/// Jobs, batches and per-text results, written idempotently: a batch is keyed by (job, batch index), so a redelivered batch
/// is a no-op, and a job id is one job however often it is submitted. The store decides, in one transaction, which
/// commit completes a job, and which failure fails it: each end is reported to exactly one caller.
/// </summary>
public interface IJobStore : IJobReader
{
    /// <summary>Applies the schema migrations (once per process; also done lazily by every call).</summary>
    Task EnsureReady(CancellationToken cancellationToken = default);

    Task<Admission> Admit(NewJob job, CancellationToken cancellationToken = default);

    /// <summary>Stores one explained batch; the call that stores a job's last batch gets the completion to publish.</summary>
    Task<BatchCommit> CommitBatch(AttributionBatchCompleted batch, CancellationToken cancellationToken = default);

    /// <summary>
    /// Fails the job (creating its row when the job was refused before being admitted). Returns the failure to publish when
    /// this call failed it, the still unpublished end when the job had already ended and its event never went out, else null.
    /// <paramref name="onlyIfUnknown"/>: a refusal at admission, which must not fail a job already stored under that id.
    /// </summary>
    Task<JobOutcomeEvent?> Fail(AttributionJobFailed failed, string modelId, bool onlyIfUnknown = false, CancellationToken cancellationToken = default);

    /// <summary>The job's end event went out: later redeliveries do not publish it again.</summary>
    Task MarkOutcomePublished(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>The job's end event if it is stored but not yet published (a worker died between commit and publish), else null.</summary>
    Task<JobOutcomeEvent?> PendingOutcome(Guid jobId, CancellationToken cancellationToken = default);

    /// <summary>Deletes the jobs that finished before <paramref name="cutoff"/>; returns how many.</summary>
    Task<int> DeleteFinishedBefore(DateTimeOffset cutoff, CancellationToken cancellationToken = default);
}
