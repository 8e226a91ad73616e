-- People in the loop. A workflow's `ask` or `wait` task runs as a child
-- execution in status `pending` that no worker claims; this row says what
-- it waits for. An answer, a matching event or the deadline ends the
-- execution (only while it is `pending`, so once) in the transaction that
-- records the row's end.
CREATE TABLE inquiry (
    id           BIGINT PRIMARY KEY,        -- the task's own execution
    workflow     BIGINT NOT NULL,           -- its workflow's execution
    task         TEXT NOT NULL,         -- the task's name
    kind         TEXT NOT NULL,         -- ask | wait
    spec         JSONB NOT NULL,           -- prompt, schema, approvers, … (see engine `workflows::pause::Spec`)
    trigger      TEXT,                  -- a wait's trigger type
    after_event  BIGINT NOT NULL DEFAULT 0, -- a wait looks at events after this id
    deadline     BIGINT,                    -- Unix ms; none: waits until answered or cancelled
    requested_by BIGINT,  -- the id of the token that started the workflow (its chain of causes)
    rule_by      BIGINT,  -- the id of the token that last saved the rule that started it
    looked_at    BIGINT NOT NULL DEFAULT 0, -- when a wait last looked at events (Unix ms), for turns
    state        TEXT NOT NULL DEFAULT 'open', -- open | answered | timed_out | closed
    answered_by  TEXT,
    answered_at  BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX inquiry_open ON inquiry(state, kind);

-- Who caused it, as the server knows it (never what the caller says): the
-- id of the token that asked for a direct run or posted an event, carried
-- on to what that caused (an ended execution's event, an answer's event),
-- for asks that refuse self-approval.
ALTER TABLE execution ADD COLUMN requested_by BIGINT;
ALTER TABLE event ADD COLUMN requested_by BIGINT;

-- Who last saved (created, changed, enabled or disabled) each rule through
-- the API or the console: what its rule starts is that token's doing too.
CREATE TABLE rule_author (
    ref   TEXT PRIMARY KEY,
    token BIGINT NOT NULL,
    at    BIGINT NOT NULL
);
