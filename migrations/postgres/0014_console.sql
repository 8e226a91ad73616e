-- Console sessions: a login's random cookie value is stored by its SHA-256
-- only, with the token it stands for; the token's revocation ends it.
CREATE TABLE console_session (
    hash       TEXT PRIMARY KEY,
    token      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
