-- The API token that registered a worker (0: the server's own embedded worker).
-- Only that token (or an admin) may act as the worker.
ALTER TABLE worker ADD COLUMN token_id BIGINT;
