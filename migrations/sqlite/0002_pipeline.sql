-- The event pipeline: durable timers, leases, retries.

ALTER TABLE execution ADD COLUMN lease_expires_at INTEGER;           -- worker must heartbeat before this
ALTER TABLE execution ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0; -- retry backoff: not claimable earlier
ALTER TABLE rule ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1; -- retry policy of the rule's executions

CREATE TABLE timer (
    rule         TEXT PRIMARY KEY,        -- rule ref owning the timer
    every_ms     INTEGER NOT NULL,        -- interval
    next_fire_at INTEGER NOT NULL,        -- Unix ms of the next tick
    count        INTEGER NOT NULL DEFAULT 0, -- ticks fired
    skipped      INTEGER NOT NULL DEFAULT 0, -- ticks skipped after downtime (misfire = skip)
    misfire      TEXT NOT NULL            -- fire_once | skip
);
CREATE INDEX timer_due ON timer(next_fire_at);

CREATE TABLE execution_attempt (
    execution   INTEGER NOT NULL,         -- execution id
    attempt     INTEGER NOT NULL,         -- from 1
    worker      INTEGER,                  -- who ran it
    status      TEXT NOT NULL,            -- how the attempt ended
    error       TEXT,                     -- JSON
    started_at  INTEGER,
    finished_at INTEGER NOT NULL,
    PRIMARY KEY (execution, attempt)
);
