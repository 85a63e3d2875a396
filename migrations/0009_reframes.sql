-- Reframes (`darkroom reframe`): a chosen image extended to another aspect ratio by the upstream.
-- They are tasks of a third pass, `reframe`, with their own budget row, each linked to the task
-- whose image is its source (`source_task_id`). A reframe's task_key is
-- `SOURCEKEY-W-H` (e.g. `jar-9-16`); its source is looked up through the link, never by name.
--
-- SQLite cannot change a CHECK constraint, so `job_passes` is rebuilt as 0004 did (nothing
-- references it), with every column and both budget triggers as they stand after 0004.

CREATE TABLE job_passes_new (
    job_id                INTEGER NOT NULL REFERENCES jobs (id),
    pass                  TEXT    NOT NULL CHECK (pass IN ('preview', 'final', 'reframe')),
    budget_micros         INTEGER NOT NULL CHECK (budget_micros >= 0),
    spent_micros          INTEGER NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    reserved_micros       INTEGER NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    status                TEXT    NOT NULL DEFAULT 'new',
    loaded_fingerprint    TEXT,
    started_at            INTEGER,
    finished_at           INTEGER,
    deadline_at           INTEGER,
    -- The part of spent_micros that no reservation covered (audit extras, price corrections).
    unplanned_micros      INTEGER NOT NULL DEFAULT 0 CHECK (unplanned_micros >= 0),
    PRIMARY KEY (job_id, pass)
);

INSERT INTO job_passes_new (job_id, pass, budget_micros, spent_micros, reserved_micros, status,
                            loaded_fingerprint, started_at, finished_at, deadline_at, unplanned_micros)
SELECT job_id, pass, budget_micros, spent_micros, reserved_micros, status,
       loaded_fingerprint, started_at, finished_at, deadline_at, unplanned_micros
FROM job_passes;

DROP TABLE job_passes;
ALTER TABLE job_passes_new RENAME TO job_passes;

CREATE TRIGGER job_passes_reservation_within_budget
BEFORE UPDATE OF reserved_micros ON job_passes
WHEN NEW.reserved_micros > OLD.reserved_micros
 AND NEW.spent_micros + NEW.reserved_micros > NEW.budget_micros
BEGIN
    SELECT RAISE(ABORT, 'a reservation would take the pass past its budget');
END;

CREATE TRIGGER job_passes_budget_covers_spend
BEFORE UPDATE OF budget_micros ON job_passes
WHEN NEW.budget_micros < OLD.budget_micros
 AND NEW.spent_micros + NEW.reserved_micros > NEW.budget_micros
BEGIN
    SELECT RAISE(ABORT, 'the budget would be below what the pass has spent or reserved');
END;

-- The task whose image a reframe extends (a done final or preview of the same job).
ALTER TABLE tasks ADD COLUMN source_task_id INTEGER REFERENCES tasks (id);
CREATE INDEX tasks_by_source ON tasks (source_task_id) WHERE source_task_id IS NOT NULL;
