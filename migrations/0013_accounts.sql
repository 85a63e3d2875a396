-- Limits and budgets that belong to an upstream account, shared by every run on it (issue 17).

-- One row per account: the same key and base URL, or a name given in config (`[account] name`,
-- `--account`). The key itself is never stored: `key_hash` is a keyed BLAKE3 hash of it.
-- `tat_ms` is the create rate's theoretical arrival time (GCRA, Unix ms): the earliest instant the
-- next create may be sent without going over the rate; `paused_until_ms` the end of the last
-- Retry-After any run on the account was given.
CREATE TABLE accounts (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    key_hash           TEXT    NOT NULL,
    base_url           TEXT    NOT NULL,
    create_interval_ms INTEGER NOT NULL DEFAULT 0 CHECK (create_interval_ms >= 0),  -- 0: no rate
    max_in_flight      INTEGER NOT NULL DEFAULT 0 CHECK (max_in_flight >= 0),       -- 0: no cap
    tat_ms             INTEGER NOT NULL DEFAULT 0,
    paused_until_ms    INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- A run taking part in an account's limits, alive while `heartbeat_at` is recent. A killed run's
-- row stays behind with a stale heartbeat; a run that ends removes its own.
CREATE TABLE account_holders (
    id           INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts (id),
    job_id       INTEGER REFERENCES jobs (id),
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
CREATE INDEX account_holders_by_account ON account_holders (account_id, heartbeat_at);

-- The account and the run a create was sent on: its in-flight slot is the generation itself, held
-- from the intent until the generation is seen to end (any state but intent/unknown/submitted).
ALTER TABLE generations ADD COLUMN account_id INTEGER REFERENCES accounts (id);
ALTER TABLE generations ADD COLUMN holder_id INTEGER;
CREATE INDEX generations_in_flight ON generations (account_id, state) WHERE account_id IS NOT NULL;

-- The account a job last ran on (its name) and the label it runs under (`--label`): what its
-- spend counts toward.
ALTER TABLE jobs ADD COLUMN account TEXT;
ALTER TABLE jobs ADD COLUMN label TEXT;

-- Daily and monthly spending limits of an account or a label (`darkroom budget`), in micro-dollars.
CREATE TABLE spending_limits (
    scope        TEXT    NOT NULL CHECK (scope IN ('account', 'label')),
    name         TEXT    NOT NULL,
    period       TEXT    NOT NULL CHECK (period IN ('day', 'month')),
    limit_micros INTEGER NOT NULL CHECK (limit_micros >= 0),
    set_at       INTEGER NOT NULL,
    PRIMARY KEY (scope, name, period)
);

-- Net spend (charges less refunds) per account and label per UTC day ('YYYY-MM-DD') and month
-- ('YYYY-MM'), kept by the trigger below from every row of the money log, so a limit's check reads
-- one row instead of summing the log.
CREATE TABLE period_spend (
    scope      TEXT    NOT NULL CHECK (scope IN ('account', 'label')),
    name       TEXT    NOT NULL,
    period     TEXT    NOT NULL CHECK (period IN ('day', 'month')),
    period_key TEXT    NOT NULL,
    net_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name, period, period_key)
);

CREATE TRIGGER spend_by_period AFTER INSERT ON spend
BEGIN
    INSERT INTO period_spend (scope, name, period, period_key, net_micros)
    SELECT s.scope, s.name, p.period, strftime(p.format, NEW.at / 1000, 'unixepoch'),
           CASE NEW.kind WHEN 'refund' THEN -NEW.micros ELSE NEW.micros END
    FROM (SELECT 'account' AS scope, account AS name FROM jobs WHERE id = NEW.job_id AND account IS NOT NULL
          UNION ALL
          SELECT 'label', label FROM jobs WHERE id = NEW.job_id AND label IS NOT NULL) AS s,
         (SELECT 'day' AS period, '%Y-%m-%d' AS format UNION ALL SELECT 'month', '%Y-%m') AS p
    WHERE true
    ON CONFLICT (scope, name, period, period_key) DO UPDATE SET net_micros = net_micros + excluded.net_micros;
END;
