-- `darkroom trial`: a trial is a job of its own (the sampled rows, previews with Flash and finals
-- with Photon 1), recorded here with the job it trials, the sample's size and seed.
CREATE TABLE trials (
    job_id     INTEGER PRIMARY KEY REFERENCES jobs (id),
    of_job     TEXT    NOT NULL,   -- the name of the job the trial samples
    sample     INTEGER NOT NULL CHECK (sample > 0),
    seed       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- What the side-by-side review decided: the finals of a row, or of every row of a `group`, made
-- with this model. Keyed by the job's name, so a choice made before the job's first run holds.
CREATE TABLE routing_choices (
    job_name   TEXT    NOT NULL,
    scope      TEXT    NOT NULL CHECK (scope IN ('row', 'group')),
    key        TEXT    NOT NULL,
    model      TEXT    NOT NULL CHECK (model IN ('photon-1', 'photon-flash-1')),
    chosen_at  INTEGER NOT NULL,
    PRIMARY KEY (job_name, scope, key)
);
