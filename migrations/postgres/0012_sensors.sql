-- Sensors: exports of a pack's component that watch something and emit
-- events on the pack's own trigger types, polled on a durable schedule.
ALTER TABLE action ADD COLUMN sensor BOOLEAN NOT NULL DEFAULT FALSE; -- the export a sensor calls: not an action
ALTER TABLE trigger_type ADD COLUMN pack TEXT;       -- the pack whose sensor emits it; NULL when built in
-- A rule may outlive its trigger type (a pack's sensor that went away; the
-- rule is then disabled, saying why).
ALTER TABLE rule DROP CONSTRAINT IF EXISTS rule_trigger_fkey;
ALTER TABLE rule ADD COLUMN disabled_reason TEXT;    -- why the server disabled it
ALTER TABLE execution ADD COLUMN sensor TEXT;        -- the sensor this execution polls for
CREATE INDEX execution_sensor_unseen ON execution(id) WHERE sensor IS NOT NULL AND parent_seen = FALSE;

CREATE TABLE sensor (
    ref         TEXT PRIMARY KEY,       -- <pack>.<name>, also its trigger type's ref
    pack        TEXT NOT NULL,
    action      TEXT NOT NULL,          -- the export it calls
    every_ms    BIGINT NOT NULL,       -- its interval (0 with a cron schedule)
    schedule    TEXT,                   -- JSON {"cron", "timezone"}, as timers keep it
    description TEXT,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    next_run_at BIGINT NOT NULL,       -- Unix ms of the next poll
    failures    BIGINT NOT NULL DEFAULT 0, -- failed polls in a row (the backoff)
    created_at  BIGINT NOT NULL
);
CREATE INDEX sensor_due ON sensor(next_run_at);

CREATE TABLE sensor_run (
    execution   BIGINT PRIMARY KEY,    -- the poll's execution
    sensor      TEXT NOT NULL,
    status      TEXT NOT NULL,          -- how the poll ended
    events      BIGINT NOT NULL,       -- events it emitted
    error       JSONB,                  -- JSON
    warning     TEXT,                   -- e.g. records past the cap, dropped
    started_at  BIGINT,
    finished_at BIGINT NOT NULL
);
CREATE INDEX sensor_run_sensor ON sensor_run(sensor, execution);
