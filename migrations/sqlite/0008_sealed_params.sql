-- The parameters of an execution whose rule used {{ secrets.NAME }}, sealed with
-- the secrets key (nonce then ciphertext) for the worker that runs it; `params`
-- holds the same with ******** where each secret went. Cleared once it ends.
ALTER TABLE execution ADD COLUMN sealed_params BLOB;
