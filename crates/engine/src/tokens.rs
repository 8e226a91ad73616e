//! API tokens and the console's sessions over them. A token's secret is
//! never stored: callers hand in its hash ([`hash_token`]).

use attune_storage::{Page, Role, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{Core, EngineError};

/// Prefix of every Attune token, so they are easy to spot in logs and leaks.
pub const TOKEN_PREFIX: &str = "attune_";

/// A fresh random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a token: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Records a new token under the hash of its secret.
pub async fn create(
    core: &Core,
    name: &str,
    role: Role,
    hash: &str,
) -> Result<TokenRecord, EngineError> {
    Ok(core.storage.insert_token(name, role, hash).await?)
}

/// A page of tokens, by id.
pub async fn list(core: &Core, page: &Page) -> Result<Vec<TokenRecord>, EngineError> {
    Ok(core.storage.list_tokens(page).await?)
}

/// Revokes a token; whether there was a live one. It stops working on this
/// node at once (the cache is dropped) and on others within the cache's
/// lifetime.
pub async fn revoke(core: &Core, id: i64) -> Result<bool, EngineError> {
    let revoked = core.storage.revoke_token(id).await?;
    if revoked {
        core.cache.tokens_changed();
    }
    Ok(revoked)
}

/// The live token with this hash, if any.
pub async fn authenticate(core: &Core, hash: &str) -> Result<Option<TokenRecord>, EngineError> {
    Ok(core.cache.token(&core.storage, hash).await?)
}

/// The live token with this id, if any.
pub async fn live(core: &Core, id: i64) -> Result<Option<TokenRecord>, EngineError> {
    Ok(core.storage.get_live_token(id).await?)
}

/// Opens a console session for `token` under the hash of its cookie.
pub async fn open_session(
    core: &Core,
    hash: &str,
    token: i64,
    expires_at: i64,
) -> Result<(), EngineError> {
    Ok(core.storage.insert_session(hash, token, expires_at).await?)
}

/// The live token behind the session with this cookie hash.
pub async fn session(core: &Core, hash: &str) -> Result<Option<TokenRecord>, EngineError> {
    Ok(core.storage.session_token(hash).await?)
}

/// Ends the session with this cookie hash.
pub async fn close_session(core: &Core, hash: &str) -> Result<(), EngineError> {
    Ok(core.storage.delete_session(hash).await?)
}
