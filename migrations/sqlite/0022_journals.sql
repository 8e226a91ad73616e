-- Replay. Whether a pack's executions record their journal (`record` in
-- pack.toml, on unless set false).
ALTER TABLE pack ADD COLUMN record INTEGER NOT NULL DEFAULT 1;

-- Every version of every pack's actions that was registered, so an
-- execution can be replayed against the version it ran or another one
-- after an upgrade. Components are kept by digest already.
CREATE TABLE pack_version (
    pack       TEXT NOT NULL,
    version    TEXT NOT NULL,
    action     TEXT NOT NULL,              -- export name within the pack
    component  TEXT NOT NULL,              -- component digest
    created_at INTEGER NOT NULL,
    PRIMARY KEY (pack, version, action)
);
INSERT INTO pack_version (pack, version, action, component, created_at)
SELECT p.name, p.version, a.name, a.component, p.updated_at
FROM action a JOIN pack p ON a.pack = p.name WHERE a.component IS NOT NULL;

-- The journal of an execution's last attempt: every answer its sandbox
-- received (see the runtime's journal module), as JSON, with the digest of
-- the component that ran and, when it cannot be replayed, why. Written by
-- the same statement that records how the execution ended.
ALTER TABLE execution ADD COLUMN journal TEXT;
