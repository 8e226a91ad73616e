-- Policy gates are written with each limited execution and deleted when it
-- ends: without a rowid, a gate is one entry in the table's own B-tree
-- (keyed by execution and policy) instead of a row plus the index of its
-- primary key, so each write and delete touches one B-tree fewer.
CREATE TABLE execution_gate_new (
    execution   INTEGER NOT NULL,
    policy      TEXT NOT NULL,
    gate_key    TEXT NOT NULL,
    concurrency INTEGER,
    rate_count  INTEGER,
    rate_ms     INTEGER NOT NULL DEFAULT 0,
    on_limit    TEXT NOT NULL,
    waiting     INTEGER NOT NULL,
    PRIMARY KEY (execution, policy)
) WITHOUT ROWID;
INSERT INTO execution_gate_new
    SELECT execution, policy, gate_key, concurrency, rate_count, rate_ms, on_limit, waiting
    FROM execution_gate;
DROP TABLE execution_gate;
ALTER TABLE execution_gate_new RENAME TO execution_gate;
CREATE INDEX execution_gate_key ON execution_gate(policy, gate_key, waiting, execution);
-- What waits, found without reading every gate.
CREATE INDEX execution_gate_waiting ON execution_gate(execution) WHERE waiting;
