-- The event pipeline: durable timers, leases, retries.

ALTER TABLE execution ADD COLUMN lease_expires_at BIGINT;           -- worker must heartbeat before this
ALTER TABLE execution ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0; -- retry backoff: not claimable earlier
ALTER TABLE rule ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 1; -- retry policy of the rule's executions

CREATE TABLE timer (
    rule         TEXT PRIMARY KEY,        -- rule ref owning the timer
    every_ms     BIGINT NOT NULL,        -- interval
    next_fire_at BIGINT NOT NULL,        -- Unix ms of the next tick
    count        BIGINT NOT NULL DEFAULT 0, -- ticks fired
    skipped      BIGINT NOT NULL DEFAULT 0, -- ticks skipped after downtime (misfire = skip)
    misfire      TEXT NOT NULL            -- fire_once | skip
);
CREATE INDEX timer_due ON timer(next_fire_at);

CREATE TABLE execution_attempt (
    execution   BIGINT NOT NULL,         -- execution id
    attempt     BIGINT NOT NULL,         -- from 1
    worker      BIGINT,                  -- who ran it
    status      TEXT NOT NULL,            -- how the attempt ended
    error       JSONB,                    -- JSON
    started_at  BIGINT,
    finished_at BIGINT NOT NULL,
    PRIMARY KEY (execution, attempt)
);
