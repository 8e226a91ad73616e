-- An event is stored before its rules' verdicts are; enforced_at marks the
-- transaction that stored them, so events a crash (or a failed write) left
-- without verdicts are found and enforced again at start and periodically.
-- rules: the rule refs an event is addressed to (a webhook's verified rules,
-- a timer's rule); NULL for every enabled rule on its trigger.
ALTER TABLE event ADD COLUMN enforced_at BIGINT;
ALTER TABLE event ADD COLUMN rules JSONB;
UPDATE event SET enforced_at = created_at;
CREATE INDEX event_unenforced ON event (id) WHERE enforced_at IS NULL;
