-- Concurrency and rate policies: pack.toml's `[[policies]]` on an action,
-- a rule's `policies`; JSON arrays of {concurrency, key, rate, on_limit}.
ALTER TABLE action ADD COLUMN policies JSONB NOT NULL DEFAULT '[]';
ALTER TABLE rule ADD COLUMN policies JSONB NOT NULL DEFAULT '[]';

-- One policy's hold on one execution: written with the execution (which
-- starts `delayed`), let through by an admission pass (waiting = false;
-- it holds a slot until the execution ends), forgotten once the execution
-- ended and its start left the rate window. The limits are copied from the
-- policy the execution was created under.
CREATE TABLE execution_gate (
    execution   BIGINT NOT NULL,           -- the execution it limits
    policy      TEXT NOT NULL,            -- <action ref>#<n> or rule:<rule ref>#<n>
    gate_key    TEXT NOT NULL,            -- the rendered key ('' without a key template)
    concurrency BIGINT,                     -- at most this many holding a slot at once
    rate_count  BIGINT,                     -- at most this many started per window
    rate_ms     BIGINT NOT NULL DEFAULT 0, -- the window (0: no rate limit)
    on_limit    TEXT NOT NULL,            -- queue | cancel | drop
    waiting     BOOLEAN NOT NULL,           -- not let through yet
    PRIMARY KEY (execution, policy)
);
CREATE INDEX execution_gate_key ON execution_gate(policy, gate_key, waiting, execution);
-- What waits, found without reading every gate.
CREATE INDEX execution_gate_waiting ON execution_gate(execution) WHERE waiting;
