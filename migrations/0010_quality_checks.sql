-- Quality checks (issue 15): each kept image is measured once, as it is downloaded, and the flags
-- that call for a person's eye are recorded with the value measured and the limit it crossed, so a
-- resumed run, the outputs, the report and the review page read them without decoding an image again.

-- What was measured of a task's kept image: its pixel size and its perceptual hash (64-bit
-- gradient hash, hex), which is what a later variant of the same row is compared with. One row per
-- task, replaced when the task keeps another image.
CREATE TABLE image_checks (
    task_id         INTEGER PRIMARY KEY REFERENCES tasks (id),
    content_hash    TEXT    NOT NULL,   -- the file measured (tasks.content_hash when it was kept)
    width           INTEGER NOT NULL,
    height          INTEGER NOT NULL,
    perceptual_hash TEXT    NOT NULL,
    checked_at      INTEGER NOT NULL
);

-- A flag raised on a task's kept image. `kind` is blank | dimensions | duplicate | small_file;
-- `measured` and `threshold` are in the kind's unit (blank: the spread of the brightness, 0-255;
-- dimensions: how far width ÷ height is from the aspect ratio asked for, percent; duplicate: the
-- perceptual hashes' distance in bits of 64; small_file: the file's size in bytes).
-- A duplicate is flagged on the later variant of the two (`other_task_id` is the earlier one).
CREATE TABLE qc_flags (
    task_id       INTEGER NOT NULL REFERENCES tasks (id),
    kind          TEXT    NOT NULL,
    measured      REAL    NOT NULL,
    threshold     REAL    NOT NULL,
    detail        TEXT    NOT NULL,
    other_task_id INTEGER REFERENCES tasks (id),
    PRIMARY KEY (task_id, kind)
);

CREATE INDEX qc_flags_by_other ON qc_flags (other_task_id) WHERE other_task_id IS NOT NULL;
