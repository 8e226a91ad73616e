-- What a pack is granted beyond the sandbox: {"allowed_outbound_hosts": [...], "secrets": [...]}.
ALTER TABLE pack ADD COLUMN grants TEXT NOT NULL DEFAULT '{}';
