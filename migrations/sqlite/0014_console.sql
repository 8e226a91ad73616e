-- Console sessions: a login's random cookie value is stored by its SHA-256
-- only, with the token it stands for; the token's revocation ends it.
CREATE TABLE console_session (
    hash       TEXT PRIMARY KEY,
    token      INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
