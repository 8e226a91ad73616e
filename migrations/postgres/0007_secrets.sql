-- Secrets, encrypted with the key in <data-dir>/secrets.key (XChaCha20-Poly1305,
-- a random nonce per write, the name as associated data). No plaintext here.
CREATE TABLE secret (
    name       TEXT PRIMARY KEY,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
