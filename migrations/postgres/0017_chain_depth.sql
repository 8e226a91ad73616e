-- How deep in a chain of causes an event or an execution is: a posted
-- event, a webhook, a tick is 0; the `core.execution_finished` event of an
-- execution is one deeper than the event behind it; a workflow's tasks
-- inherit. Past the server's --max-chain-depth an event is stored with the
-- reason in `held_reason` and no rule sees it.
ALTER TABLE event ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE event ADD COLUMN held_reason TEXT;
ALTER TABLE execution ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
