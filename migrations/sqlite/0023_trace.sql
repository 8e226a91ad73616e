-- Tracing. The W3C `traceparent` of the span an execution's own span is a
-- child of (the request, the rule's enforcement or the workflow that
-- caused it), when tracing was on as it was queued; its own span's id is
-- derived from the trace id and the execution id.
ALTER TABLE execution ADD COLUMN trace TEXT;
