-- Charges darkroom did not reserve for: a create the upstream committed after darkroom stopped
-- waiting (found by the end-of-run audit), or a price the account was observed to charge above the
-- price table. They are real money, so the ledger records them even when they take a pass past its
-- budget; the budget invariant moves from a CHECK on the totals to what it always meant: a
-- reservation may only be made (or a budget lowered) while spent + reserved stays within the budget.
--
-- SQLite cannot drop a CHECK constraint, so `job_passes` is rebuilt (nothing references it).

CREATE TABLE job_passes_new (
    job_id                INTEGER NOT NULL REFERENCES jobs (id),
    pass                  TEXT    NOT NULL CHECK (pass IN ('preview', 'final')),
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
                            loaded_fingerprint, started_at, finished_at, deadline_at)
SELECT job_id, pass, budget_micros, spent_micros, reserved_micros, status,
       loaded_fingerprint, started_at, finished_at, deadline_at
FROM job_passes;

DROP TABLE job_passes;
ALTER TABLE job_passes_new RENAME TO job_passes;

-- The budget invariant: growing a reservation, or lowering a budget, must keep
-- spent + reserved <= budget. Unplanned charges may pass it; nothing may be reserved on top of them.
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
