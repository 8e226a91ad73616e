-- Where a direct run was asked for: `mcp` for an agent's tool call, or what
-- the caller said; NULL for the API's own and for rules' runs.
ALTER TABLE execution ADD COLUMN source TEXT;
