//! Bearer-token authentication and role checks.
//!
//! Tokens are random 32-byte secrets shown once; only their SHA-256 is
//! stored. [`Caller`] extracts and checks the token; handlers then call
//! [`Caller::require`] with the least role they need. Roles are ordered:
//! `worker` < `viewer` < `operator` < `admin`, except that a worker token is
//! only good for the worker routes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use attune_engine::records::{Role, TokenRecord};

pub use attune_engine::tokens::{TOKEN_PREFIX, hash_token, new_token};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its token's record.
    pub token: TokenRecord,
}

impl Caller {
    /// The caller as one who answers an inquiry.
    pub fn answerer(&self) -> attune_engine::inquiries::By<'_> {
        attune_engine::inquiries::By::Token {
            id: self.token.id,
            name: &self.token.name,
            role: self.token.role,
        }
    }

    /// Fails with 403 unless the caller has at least `role` (worker tokens
    /// pass only worker checks).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        let ok = match (self.token.role, role) {
            (Role::Worker, Role::Worker) => true,
            (Role::Worker, _) => false,
            (have, Role::Worker) => have == Role::Admin,
            (have, need) => have >= need,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role.as_str()))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        let record = attune_engine::tokens::authenticate(state, &hash_token(token))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller { token: record })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            token: TokenRecord {
                id: 1,
                name: "t".into(),
                role,
                created_at: 0,
                revoked_at: None,
            },
        }
    }

    #[test]
    fn roles_are_ordered_and_worker_tokens_are_confined() {
        assert!(caller(Role::Admin).require(Role::Operator).is_ok());
        assert!(caller(Role::Operator).require(Role::Viewer).is_ok());
        assert!(caller(Role::Viewer).require(Role::Operator).is_err());
        assert!(caller(Role::Worker).require(Role::Viewer).is_err());
        assert!(caller(Role::Worker).require(Role::Worker).is_ok());
        assert!(caller(Role::Operator).require(Role::Worker).is_err());
        assert!(caller(Role::Admin).require(Role::Worker).is_ok());
    }

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }
}
