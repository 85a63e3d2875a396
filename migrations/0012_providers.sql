-- The provider that made each task, generation and charge: 'luma', 'replicate' or 'fal'. A task's
-- provider is set when its create intent is written (NULL: never sent), so a job resumed on
-- another provider settles each unsettled create against the provider that received it, never
-- against the wrong provider's list. Ledgers made before this migration spoke only Luma.
ALTER TABLE tasks ADD COLUMN provider TEXT CHECK (provider IN ('luma', 'replicate', 'fal'));
ALTER TABLE generations ADD COLUMN provider TEXT CHECK (provider IN ('luma', 'replicate', 'fal'));
ALTER TABLE spend ADD COLUMN provider TEXT CHECK (provider IN ('luma', 'replicate', 'fal'));

UPDATE generations SET provider = 'luma';
UPDATE spend SET provider = 'luma';
UPDATE tasks SET provider = 'luma' WHERE EXISTS (SELECT 1 FROM generations g WHERE g.task_id = tasks.id);

