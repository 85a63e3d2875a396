-- Observed prices: what the account was seen to charge per image, beside what the price table said.
-- Money is integer micro-dollars; times are Unix milliseconds.

-- The account's balance as read during a run (or a `prices --check` probe), with the resolution the
-- provider reports it in (Luma: whole cents unless the value shows finer).
CREATE TABLE balance_readings (
    id                INTEGER PRIMARY KEY,
    base_url          TEXT    NOT NULL,
    job_id            INTEGER REFERENCES jobs (id),
    pass              TEXT,
    at                INTEGER NOT NULL,
    balance_micros    INTEGER NOT NULL,
    resolution_micros INTEGER NOT NULL CHECK (resolution_micros > 0)
);

CREATE INDEX balance_readings_by_job ON balance_readings (job_id, pass, at);

-- One row per run and model: the table's price, the price observed on the account (the balance drop
-- attributable to our charges ÷ their number), and from how many images and which drop.
-- job_id is NULL for a `prices --check` probe.
CREATE TABLE price_observations (
    id               INTEGER PRIMARY KEY,
    base_url         TEXT    NOT NULL,
    job_id           INTEGER REFERENCES jobs (id),
    pass             TEXT,
    run_started_at   INTEGER NOT NULL,
    model            TEXT    NOT NULL,
    table_micros     INTEGER NOT NULL CHECK (table_micros >= 0),
    observed_micros  INTEGER NOT NULL CHECK (observed_micros >= 0),
    images           INTEGER NOT NULL CHECK (images > 0),
    drop_micros      INTEGER NOT NULL,
    observed_at      INTEGER NOT NULL,
    UNIQUE (base_url, job_id, pass, run_started_at, model)
);

CREATE INDEX price_observations_by_account ON price_observations (base_url, model, observed_at);

-- The price a pass reserves and charges per image of a model when the account was observed to
-- charge more than the table: from then on, and on every later run of the pass.
CREATE TABLE pass_prices (
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    pass         TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    price_micros INTEGER NOT NULL CHECK (price_micros >= 0),
    set_at       INTEGER NOT NULL,
    PRIMARY KEY (job_id, pass, model)
);
