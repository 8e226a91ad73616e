-- Workflows: actions written in YAML whose tasks run as child executions.
-- An action is now a component's export or a workflow (no component, its
-- definition in `workflow`).
ALTER TABLE action ALTER COLUMN component DROP NOT NULL;
ALTER TABLE action ADD COLUMN workflow JSONB;

-- A task's run is a child execution: its workflow's execution, the task it
-- runs (`name`, or `name[item]` for an item of `with_items`), and whether the
-- workflow has taken in how it ended.
ALTER TABLE execution ADD COLUMN parent BIGINT;
ALTER TABLE execution ADD COLUMN task TEXT;
ALTER TABLE execution ADD COLUMN parent_seen BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX execution_parent ON execution(parent, id) WHERE parent IS NOT NULL;
CREATE INDEX execution_unseen ON execution(parent) WHERE parent IS NOT NULL AND parent_seen = FALSE;

-- Each workflow run's state, advanced one step per transaction: a step
-- applies only to the version it read.
CREATE TABLE workflow_run (
    execution  BIGINT PRIMARY KEY,        -- the workflow's execution
    state      JSONB NOT NULL,            -- vars, each task's progress, children in flight
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
