-- Attune schema, SQLite dialect. Times are Unix milliseconds (INTEGER);
-- JSON values are TEXT holding one JSON document.

CREATE TABLE pack (
    name        TEXT PRIMARY KEY,          -- pack name, the first part of every ref
    version     TEXT NOT NULL,             -- version string from the upload
    description TEXT,                      -- from pack.toml or the component's docs
    digest      TEXT NOT NULL,             -- SHA-256 over the pack's manifest and component digests
    created_at  INTEGER NOT NULL,          -- first registration
    updated_at  INTEGER NOT NULL           -- last (re)registration of a new version
);

CREATE TABLE component (
    digest     TEXT PRIMARY KEY,           -- SHA-256 of the bytes, hex
    size       INTEGER NOT NULL,           -- bytes
    bytes      BLOB NOT NULL,              -- the component itself; files on disk are a cache of this
    created_at INTEGER NOT NULL
);

CREATE TABLE action (
    ref            TEXT PRIMARY KEY,       -- <pack>.<name>
    pack           TEXT NOT NULL REFERENCES pack(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,          -- export name (iface.func for interface exports)
    component      TEXT NOT NULL REFERENCES component(digest),
    params_schema  TEXT NOT NULL,          -- JSON Schema of the parameters, derived from WIT
    result_schema  TEXT NOT NULL,          -- JSON Schema of the success value
    error_schema   TEXT,                   -- JSON Schema of the typed error, if any
    capabilities   TEXT NOT NULL,          -- JSON array of required worker capabilities
    description    TEXT                    -- WIT doc comment
);
CREATE INDEX action_pack ON action(pack);

CREATE TABLE trigger_type (
    ref            TEXT PRIMARY KEY,       -- e.g. core.interval
    description    TEXT NOT NULL,
    params_schema  TEXT NOT NULL,          -- JSON Schema of a rule's trigger_params
    payload_schema TEXT NOT NULL           -- JSON Schema of its events' payloads
);

CREATE TABLE rule (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    ref            TEXT NOT NULL UNIQUE,   -- <pack>.<name>
    description    TEXT,
    trigger        TEXT NOT NULL REFERENCES trigger_type(ref),
    trigger_params TEXT NOT NULL,          -- JSON object, checked against the trigger type
    criteria       TEXT,                   -- expression over `event`, optional
    action         TEXT NOT NULL,          -- action ref (the action may be re-registered)
    action_params  TEXT NOT NULL,          -- JSON object, literals checked against the action schema
    enabled        INTEGER NOT NULL,       -- 0/1
    timeout_ms     INTEGER,                -- per-rule execution timeout, null = default
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX rule_trigger ON rule(trigger, enabled);
CREATE INDEX rule_action ON rule(action);

CREATE TABLE event (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger    TEXT NOT NULL,              -- trigger type ref
    payload    TEXT NOT NULL,              -- JSON document
    source     TEXT,                       -- rule ref for timers/webhooks, token name for manual events
    created_at INTEGER NOT NULL
);
CREATE INDEX event_trigger_time ON event(trigger, id);

CREATE TABLE enforcement (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    rule       TEXT NOT NULL,              -- rule ref at the time
    event      INTEGER NOT NULL REFERENCES event(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,              -- enforced | not_matched | failed
    params     TEXT,                       -- rendered action params (JSON)
    reason     TEXT,                       -- why it was not enforced
    execution  INTEGER,                    -- execution created, if any
    created_at INTEGER NOT NULL,
    UNIQUE (rule, event)
);

CREATE TABLE execution (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    action        TEXT NOT NULL,           -- action ref
    params        TEXT NOT NULL,           -- JSON object, validated
    status        TEXT NOT NULL,           -- requested | scheduled | running | succeeded | failed | timed_out | cancelled | abandoned
    status_reason TEXT,                    -- e.g. why it still waits
    capabilities  TEXT NOT NULL,           -- JSON array a worker must cover
    rule          TEXT,                    -- rule ref, null for direct runs
    enforcement   INTEGER,
    attempt       INTEGER NOT NULL,        -- current attempt, from 1
    max_attempts  INTEGER NOT NULL,
    timeout_ms    INTEGER,
    worker        INTEGER,                 -- worker holding the lease
    result        TEXT,                    -- JSON
    error         TEXT,                    -- JSON
    stdout        TEXT,
    stderr        TEXT,
    logs          TEXT,                    -- JSON array of log lines
    created_at    INTEGER NOT NULL,
    scheduled_at  INTEGER,
    started_at    INTEGER,
    finished_at   INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX execution_status ON execution(status, id);
CREATE INDEX execution_action ON execution(action, id);
CREATE INDEX execution_rule ON execution(rule, id);

CREATE TABLE worker (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE,
    capabilities   TEXT NOT NULL,          -- JSON array
    labels         TEXT NOT NULL,          -- JSON object
    last_heartbeat INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE api_token (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,              -- admin | operator | viewer | worker
    hash       TEXT NOT NULL UNIQUE,       -- SHA-256 of the token, hex; the token itself is never stored
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
