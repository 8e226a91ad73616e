-- Attune schema, PostgreSQL dialect. Times are Unix milliseconds (BIGINT);
-- JSON values are JSONB.

CREATE TABLE pack (
    name        TEXT PRIMARY KEY,          -- pack name, the first part of every ref
    version     TEXT NOT NULL,             -- version string from the upload
    description TEXT,                      -- from pack.toml or the component's docs
    digest      TEXT NOT NULL,             -- SHA-256 over the pack's manifest and component digests
    created_at  BIGINT NOT NULL,          -- first registration
    updated_at  BIGINT NOT NULL           -- last (re)registration of a new version
);

CREATE TABLE component (
    digest     TEXT PRIMARY KEY,           -- SHA-256 of the bytes, hex
    size       BIGINT NOT NULL,           -- bytes
    bytes      BYTEA NOT NULL,              -- the component itself; files on disk are a cache of this
    created_at BIGINT NOT NULL
);

CREATE TABLE action (
    ref            TEXT PRIMARY KEY,       -- <pack>.<name>
    pack           TEXT NOT NULL REFERENCES pack(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,          -- export name (iface.func for interface exports)
    component      TEXT NOT NULL REFERENCES component(digest),
    params_schema  JSONB NOT NULL,          -- JSON Schema of the parameters, derived from WIT
    result_schema  JSONB NOT NULL,          -- JSON Schema of the success value
    error_schema   JSONB,                   -- JSON Schema of the typed error, if any
    capabilities   JSONB NOT NULL,          -- JSON array of required worker capabilities
    description    TEXT                    -- WIT doc comment
);
CREATE INDEX action_pack ON action(pack);

CREATE TABLE trigger_type (
    ref            TEXT PRIMARY KEY,       -- e.g. core.interval
    description    TEXT NOT NULL,
    params_schema  JSONB NOT NULL,          -- JSON Schema of a rule's trigger_params
    payload_schema JSONB NOT NULL           -- JSON Schema of its events' payloads
);

CREATE TABLE rule (
    id             BIGSERIAL PRIMARY KEY,
    ref            TEXT NOT NULL UNIQUE,   -- <pack>.<name>
    description    TEXT,
    trigger        TEXT NOT NULL REFERENCES trigger_type(ref),
    trigger_params JSONB NOT NULL,          -- JSON object, checked against the trigger type
    criteria       TEXT,                   -- expression over `event`, optional
    action         TEXT NOT NULL,          -- action ref (the action may be re-registered)
    action_params  JSONB NOT NULL,          -- JSON object, literals checked against the action schema
    enabled        BOOLEAN NOT NULL,
    timeout_ms     BIGINT,                -- per-rule execution timeout, null = default
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX rule_trigger ON rule(trigger, enabled);
CREATE INDEX rule_action ON rule(action);
CREATE INDEX rule_action_params ON rule USING GIN (action_params);

CREATE TABLE event (
    id         BIGSERIAL PRIMARY KEY,
    trigger    TEXT NOT NULL,              -- trigger type ref
    payload    JSONB NOT NULL,              -- JSON document
    source     TEXT,                       -- rule ref for timers/webhooks, token name for manual events
    created_at BIGINT NOT NULL
);
CREATE INDEX event_trigger_time ON event(trigger, id);

CREATE TABLE enforcement (
    id         BIGSERIAL PRIMARY KEY,
    rule       TEXT NOT NULL,              -- rule ref at the time
    event      BIGINT NOT NULL REFERENCES event(id) ON DELETE CASCADE,
    status     TEXT NOT NULL,              -- enforced | not_matched | failed
    params     JSONB,                       -- rendered action params (JSON)
    reason     TEXT,                       -- why it was not enforced
    execution  BIGINT,                    -- execution created, if any
    created_at BIGINT NOT NULL,
    UNIQUE (rule, event)
);

CREATE TABLE execution (
    id            BIGSERIAL PRIMARY KEY,
    action        TEXT NOT NULL,           -- action ref
    params        JSONB NOT NULL,           -- JSON object, validated
    status        TEXT NOT NULL,           -- requested | scheduled | running | succeeded | failed | timed_out | cancelled | abandoned
    status_reason TEXT,                    -- e.g. why it still waits
    capabilities  JSONB NOT NULL,           -- JSON array a worker must cover
    rule          TEXT,                    -- rule ref, null for direct runs
    enforcement   BIGINT,
    attempt       BIGINT NOT NULL,        -- current attempt, from 1
    max_attempts  BIGINT NOT NULL,
    timeout_ms    BIGINT,
    worker        BIGINT,                 -- worker holding the lease
    result        JSONB,                    -- JSON
    error         JSONB,                    -- JSON
    stdout        TEXT,
    stderr        TEXT,
    logs          JSONB,                    -- JSON array of log lines
    created_at    BIGINT NOT NULL,
    scheduled_at  BIGINT,
    started_at    BIGINT,
    finished_at   BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX execution_status ON execution(status, id);
CREATE INDEX execution_action ON execution(action, id);
CREATE INDEX execution_rule ON execution(rule, id);

CREATE TABLE worker (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    capabilities   JSONB NOT NULL,          -- JSON array
    labels         JSONB NOT NULL,          -- JSON object
    last_heartbeat BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE api_token (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,              -- admin | operator | viewer | worker
    hash       TEXT NOT NULL UNIQUE,       -- SHA-256 of the token, hex; the token itself is never stored
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
