-- Promotion: a final made from a chosen preview links back to it. `reference_note` says how the
-- preview was used (or why it could not be: its upstream URL no longer resolved).
ALTER TABLE tasks ADD COLUMN preview_task_id INTEGER REFERENCES tasks (id);
ALTER TABLE tasks ADD COLUMN reference_note TEXT;

CREATE INDEX tasks_by_preview ON tasks (preview_task_id) WHERE preview_task_id IS NOT NULL;

-- generations.state gains 'extra': an abandoned (stuck) generation that completed upstream later.
-- Its charge stays; an abandoned one that failed later is refunded ('failed').
