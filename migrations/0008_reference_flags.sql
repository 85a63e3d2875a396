-- A final made by promotion whose preview's URL no longer resolved is made from the prompt alone.
-- Until now only `reference_note`, text written for people, said so, and readers searched it for a
-- phrase. `reference_lost` is that fact as a flag; the note stays, for people only. Ledgers written
-- before this migration are backfilled from the note, in the words every earlier release wrote.
ALTER TABLE tasks ADD COLUMN reference_lost INTEGER NOT NULL DEFAULT 0 CHECK (reference_lost IN (0, 1));
UPDATE tasks SET reference_lost = 1 WHERE reference_note LIKE '%no longer resolves%';
