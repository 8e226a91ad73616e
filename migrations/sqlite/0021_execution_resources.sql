-- What each execution used, as its worker measured it: a JSON object of
-- cpu_us, peak_memory_bytes, instances, outbound_requests, stdout_bytes and
-- stderr_bytes (NULL for executions that never ran in a sandbox).
ALTER TABLE execution ADD COLUMN resources TEXT;
