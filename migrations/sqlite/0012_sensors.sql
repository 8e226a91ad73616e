-- Sensors: exports of a pack's component that watch something and emit
-- events on the pack's own trigger types, polled on a durable schedule.
ALTER TABLE action ADD COLUMN sensor INTEGER NOT NULL DEFAULT FALSE; -- the export a sensor calls: not an action
ALTER TABLE trigger_type ADD COLUMN pack TEXT;       -- the pack whose sensor emits it; NULL when built in

-- A rule may outlive its trigger type (a pack's sensor that went away; the
-- rule is then disabled, saying why), so the rule table is rebuilt without
-- the reference to trigger_type, and with the reason.
CREATE TABLE rule_next (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ref             TEXT NOT NULL UNIQUE,   -- <pack>.<name>
    description     TEXT,
    trigger         TEXT NOT NULL,          -- trigger type ref
    trigger_params  TEXT NOT NULL,          -- JSON object, checked against the trigger type
    criteria        TEXT,                   -- expression over `event`, optional
    action          TEXT NOT NULL,          -- action ref (the action may be re-registered)
    action_params   TEXT NOT NULL,          -- JSON object, literals checked against the action schema
    enabled         INTEGER NOT NULL,       -- 0/1
    timeout_ms      INTEGER,                -- per-rule execution timeout, null = default
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL DEFAULT 1, -- retry policy of the rule's executions
    disabled_reason TEXT                    -- why the server disabled it
);
INSERT INTO rule_next (id, ref, description, trigger, trigger_params, criteria, action, action_params,
                       enabled, timeout_ms, created_at, updated_at, max_attempts)
    SELECT id, ref, description, trigger, trigger_params, criteria, action, action_params,
           enabled, timeout_ms, created_at, updated_at, max_attempts FROM rule;
DROP TABLE rule;
ALTER TABLE rule_next RENAME TO rule;
CREATE INDEX rule_trigger ON rule(trigger, enabled);
CREATE INDEX rule_action ON rule(action);

ALTER TABLE execution ADD COLUMN sensor TEXT;        -- the sensor this execution polls for
CREATE INDEX execution_sensor_unseen ON execution(id) WHERE sensor IS NOT NULL AND parent_seen = FALSE;

CREATE TABLE sensor (
    ref         TEXT PRIMARY KEY,       -- <pack>.<name>, also its trigger type's ref
    pack        TEXT NOT NULL,
    action      TEXT NOT NULL,          -- the export it calls
    every_ms    INTEGER NOT NULL,       -- its interval (0 with a cron schedule)
    schedule    TEXT,                   -- JSON {"cron", "timezone"}, as timers keep it
    description TEXT,
    enabled     INTEGER NOT NULL DEFAULT TRUE,
    next_run_at INTEGER NOT NULL,       -- Unix ms of the next poll
    failures    INTEGER NOT NULL DEFAULT 0, -- failed polls in a row (the backoff)
    created_at  INTEGER NOT NULL
);
CREATE INDEX sensor_due ON sensor(next_run_at);

CREATE TABLE sensor_run (
    execution   INTEGER PRIMARY KEY,    -- the poll's execution
    sensor      TEXT NOT NULL,
    status      TEXT NOT NULL,          -- how the poll ended
    events      INTEGER NOT NULL,       -- events it emitted
    error       TEXT,                   -- JSON
    warning     TEXT,                   -- e.g. records past the cap, dropped
    started_at  INTEGER,
    finished_at INTEGER NOT NULL
);
CREATE INDEX sensor_run_sensor ON sensor_run(sensor, execution);
