-- The ledger: jobs, their passes and budgets, tasks, generations (upstream creates) and the money log.
-- Times are Unix milliseconds (INTEGER); money is integer micro-dollars (INTEGER, never REAL).

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    file_path        TEXT    NOT NULL,
    file_fingerprint TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- One row per (job, pass): its budget, the running totals the budget check reads, and its status.
-- Invariant, checked in the transaction that reserves: spent_micros + reserved_micros <= budget_micros.
CREATE TABLE job_passes (
    job_id                INTEGER NOT NULL REFERENCES jobs (id),
    pass                  TEXT    NOT NULL CHECK (pass IN ('preview', 'final')),
    budget_micros         INTEGER NOT NULL CHECK (budget_micros >= 0),
    spent_micros          INTEGER NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    reserved_micros       INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    status                TEXT    NOT NULL DEFAULT 'new',
    loaded_fingerprint    TEXT,
    started_at            INTEGER,
    finished_at           INTEGER,
    PRIMARY KEY (job_id, pass),
    CHECK (spent_micros + reserved_micros <= budget_micros)
);

CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY,
    job_id          INTEGER NOT NULL REFERENCES jobs (id),
    pass            TEXT    NOT NULL,
    task_key        TEXT    NOT NULL,  -- ROWID or ROWID-VARIANT: the file stem
    row_id          TEXT    NOT NULL,
    line            INTEGER NOT NULL,
    variant         INTEGER NOT NULL,
    variants        INTEGER NOT NULL,
    model           TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    request_json    TEXT    NOT NULL,  -- the create body, without callback_url
    prompt          TEXT    NOT NULL,
    aspect_ratio    TEXT    NOT NULL,
    format          TEXT    NOT NULL,
    metadata_json   TEXT    NOT NULL,
    -- pending reserved submitting submitted downloading done failed blocked skipped cancelled
    state           TEXT    NOT NULL DEFAULT 'pending',
    reason          TEXT,
    price_micros    INTEGER NOT NULL,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    cost_micros     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    cached          INTEGER NOT NULL DEFAULT 0,
    superseded      INTEGER NOT NULL DEFAULT 0, -- the row changed in the job file: a newer task replaces it
    output_path     TEXT,
    generation_id   TEXT,
    first_sent_at   INTEGER,
    finished_at     INTEGER,
    latency_ms      INTEGER,
    UNIQUE (job_id, pass, task_key, fingerprint)
);

CREATE INDEX tasks_by_state ON tasks (job_id, pass, state, id);
CREATE INDEX tasks_by_fingerprint ON tasks (fingerprint) WHERE state = 'done';

-- One row per create we intended to send. The intent is written before the request leaves, the
-- upstream id right after the answer, so a crash at any instant leaves a row to reconcile.
CREATE TABLE generations (
    id                  INTEGER PRIMARY KEY,
    task_id             INTEGER NOT NULL REFERENCES tasks (id),
    attempt             INTEGER NOT NULL,
    upstream_id         TEXT UNIQUE,
    intent_at           INTEGER NOT NULL,
    request_fingerprint TEXT    NOT NULL,
    -- intent (sent or about to be) | unknown (outcome unknown) | not_created | submitted | completed
    -- | failed | kept (its image is the task's) | abandoned
    state               TEXT    NOT NULL DEFAULT 'intent',
    failure_reason      TEXT,
    charge_micros       INTEGER NOT NULL DEFAULT 0,
    image_url           TEXT,
    submitted_at        INTEGER,
    completed_at        INTEGER
);

CREATE INDEX generations_by_task ON generations (task_id);
CREATE INDEX generations_by_state ON generations (state);

-- Append-only money log: a charge when the upstream accepts a create, a refund when it fails it.
CREATE TABLE spend (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL REFERENCES jobs (id),
    pass          TEXT    NOT NULL,
    task_id       INTEGER NOT NULL REFERENCES tasks (id),
    generation_id INTEGER NOT NULL REFERENCES generations (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('charge', 'refund')),
    micros        INTEGER NOT NULL CHECK (micros >= 0),
    at            INTEGER NOT NULL
);

CREATE INDEX spend_by_job ON spend (job_id, pass, at);
