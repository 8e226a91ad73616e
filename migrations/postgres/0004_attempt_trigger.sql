-- An execution's attempt is recorded in its history by the database as the
-- attempt ends, so recording results takes one statement per batch.

CREATE FUNCTION execution_attempt_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO execution_attempt (execution, attempt, worker, status, error, started_at, finished_at)
    VALUES (NEW.id, NEW.attempt, NEW.worker, NEW.status, NEW.error, NEW.started_at, NEW.finished_at)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER execution_attempt_ended AFTER UPDATE OF status ON execution
FOR EACH ROW
WHEN (OLD.status IN ('scheduled', 'running')
      AND NEW.status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'abandoned')
      AND (NEW.status <> 'cancelled' OR OLD.status = 'running')) -- cancelled before it ran: no attempt
EXECUTE FUNCTION execution_attempt_ended();
