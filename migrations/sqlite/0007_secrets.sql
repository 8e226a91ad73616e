-- Secrets, encrypted with the key in <data-dir>/secrets.key (XChaCha20-Poly1305,
-- a random nonce per write, the name as associated data). No plaintext here.
CREATE TABLE secret (
    name       TEXT PRIMARY KEY,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
