-- The account audit: what each check of the account's generations against the ledger found (the
-- end of every run, and `darkroom audit`). A generation the ledger did not know is adopted by a task
-- that still needed an image, or recorded on its task as an extra charge ('extra' when it completed,
-- 'abandoned' with its charge while unfinished, so the next run settles it, 'failed' with charge and
-- refund when the upstream failed it).
--
-- generations.state also gains 'unusable': a terminal answer that could not be used (completed
-- without an image, an image URL that never serves an image). Its charge stays, as the upstream
-- keeps it.

CREATE TABLE audits (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL REFERENCES jobs (id),
    pass          TEXT    NOT NULL,
    at            INTEGER NOT NULL,
    -- Generations created at or after this instant (Unix milliseconds) were read.
    since_ms      INTEGER NOT NULL,
    read_count    INTEGER NOT NULL,
    adopted       INTEGER NOT NULL,
    extra         INTEGER NOT NULL,
    extra_micros  INTEGER NOT NULL CHECK (extra_micros >= 0),
    -- Generations that match no task of this ledger: reported, charged to no one.
    foreign_count INTEGER NOT NULL,
    foreign_ids   TEXT    NOT NULL, -- a JSON array of the first few ids
    -- Generations matching a create another run still has open: left to that run to settle.
    left_count    INTEGER NOT NULL,
    -- 0 when the read stopped early (its page bound, or the list could not be read).
    complete      INTEGER NOT NULL
);

CREATE INDEX audits_by_job ON audits (job_id, pass, id);
