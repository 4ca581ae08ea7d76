-- Version 1 of the job store. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Times are Unix milliseconds (BIGINT); flags are 0/1 integers; ids are text (job ids as 32 hex digits).

CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    -- SHA-256 of the job's texts and options: the same job id with other content is refused, not mixed in.
    fingerprint TEXT NOT NULL,
    -- running | completed | failed
    status TEXT NOT NULL,
    text_count INTEGER NOT NULL,
    batch_count INTEGER NOT NULL,
    batches_done INTEGER NOT NULL DEFAULT 0,
    texts_done INTEGER NOT NULL DEFAULT 0,
    delta_threshold DOUBLE PRECISION NULL,
    relative_delta_threshold DOUBLE PRECISION NULL,
    submitted_at BIGINT NOT NULL,
    accepted_at BIGINT NOT NULL,
    finished_at BIGINT NULL,
    -- AttributionJobCompleted or AttributionJobFailed as JSON, written by whoever ended the job.
    outcome_json TEXT NULL,
    -- 1 once that event was published (a worker killed between commit and publish leaves 0: the redelivery publishes it).
    outcome_published INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX jobs_by_finish ON jobs (status, finished_at);

-- One row per explained batch: the primary key makes a redelivered batch a no-op.
CREATE TABLE batches (
    job_id TEXT NOT NULL,
    batch_index INTEGER NOT NULL,
    worker TEXT NOT NULL,
    text_count INTEGER NOT NULL,
    queue_ms DOUBLE PRECISION NOT NULL,
    explain_ms DOUBLE PRECISION NOT NULL,
    completed_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, batch_index)
);

-- One row per explained text, the result as JSON (so new fields, a status and null numbers fit without a migration).
CREATE TABLE results (
    job_id TEXT NOT NULL,
    batch_index INTEGER NOT NULL,
    position INTEGER NOT NULL,
    text_id TEXT NOT NULL,
    -- |delta|, NULL when it is not a finite number (the summary then reports NaN as its max)
    abs_delta DOUBLE PRECISION NULL,
    over_threshold INTEGER NOT NULL,
    result_json TEXT NOT NULL,
    PRIMARY KEY (job_id, batch_index, position)
);
