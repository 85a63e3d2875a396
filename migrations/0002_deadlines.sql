-- A pass's deadline (Unix milliseconds): a resumed run keeps it unless given a new one.
ALTER TABLE job_passes ADD COLUMN deadline_at INTEGER;
