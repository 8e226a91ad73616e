-- Workflows: actions written in YAML whose tasks run as child executions.
-- An action is now a component's export or a workflow (no component, its
-- definition in `workflow`), so the table is rebuilt with `component`
-- nullable.
CREATE TABLE action_next (
    ref            TEXT PRIMARY KEY,       -- <pack>.<name>
    pack           TEXT NOT NULL REFERENCES pack(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,          -- export name, or the workflow's name
    component      TEXT REFERENCES component(digest), -- NULL for a workflow
    params_schema  TEXT NOT NULL,          -- JSON Schema of the parameters
    result_schema  TEXT NOT NULL,          -- JSON Schema of the success value
    error_schema   TEXT,                   -- JSON Schema of the typed error, if any
    capabilities   TEXT NOT NULL,          -- JSON array of required worker capabilities
    description    TEXT,                   -- WIT doc comment or the workflow's description
    workflow       TEXT                    -- JSON: the workflow's definition
);
INSERT INTO action_next (ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description)
    SELECT ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description FROM action;
DROP TABLE action;
ALTER TABLE action_next RENAME TO action;
CREATE INDEX action_pack ON action(pack);

-- A task's run is a child execution: its workflow's execution, the task it
-- runs (`name`, or `name[item]` for an item of `with_items`), and whether the
-- workflow has taken in how it ended.
ALTER TABLE execution ADD COLUMN parent INTEGER;
ALTER TABLE execution ADD COLUMN task TEXT;
ALTER TABLE execution ADD COLUMN parent_seen INTEGER NOT NULL DEFAULT FALSE;
CREATE INDEX execution_parent ON execution(parent, id) WHERE parent IS NOT NULL;
CREATE INDEX execution_unseen ON execution(parent) WHERE parent IS NOT NULL AND parent_seen = FALSE;

-- Each workflow run's state, advanced one step per transaction: a step
-- applies only to the version it read.
CREATE TABLE workflow_run (
    execution  INTEGER PRIMARY KEY,       -- the workflow's execution
    state      TEXT NOT NULL,             -- JSON: vars, each task's progress, children in flight
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
