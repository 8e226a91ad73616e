-- Key-value state of packs' actions (attune:action/kv), scoped by pack. A key
-- whose expires_at (Unix ms) has passed reads as absent and is pruned.
CREATE TABLE kv (
    pack       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (pack, key)
);
