-- An image is identified by its content, not its path. Every kept image's BLAKE3 hash (64 lowercase
-- hex digits) and size in bytes are recorded when its task becomes done (a download or a cache hit);
-- a cache hit reuses only bytes with that hash, and `darkroom verify` checks files against it.
-- Tasks done by a release before this one have neither (NULL): their files are "unverified".
ALTER TABLE tasks ADD COLUMN content_hash TEXT;
ALTER TABLE tasks ADD COLUMN content_bytes INTEGER CHECK (content_bytes IS NULL OR content_bytes >= 0);

-- What is wrong with a done task's file, once something found it: 'missing' or 'changed'. Such a
-- task is never offered as a cache source; the next run of its pass restores it (downloads its kept
-- generation again, or remakes it when the upstream no longer has it). Cleared when done again.
ALTER TABLE tasks ADD COLUMN damage TEXT CHECK (damage IS NULL OR damage IN ('missing', 'changed'));

-- generations.state gains 'lost': a kept generation whose image was lost on our side and that the
-- upstream no longer serves. Its charge stays (it was paid); the task was made again.

-- Before an image is written, the tasks that still record its path as their image are looked up
-- (their bytes are moved aside first).
CREATE INDEX tasks_by_content_path ON tasks (output_path) WHERE state = 'done';
