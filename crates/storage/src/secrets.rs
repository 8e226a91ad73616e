//! Secrets as stored: a name, a nonce and a ciphertext. Encryption is the
//! engine's (`engine::secrets`); nothing here ever holds a plaintext.

use super::records::*;
use super::{Pool, Result, Storage, now_ms};

/// A sealed secret.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedSecret {
    /// Its nonce.
    pub nonce: Vec<u8>,
    /// Its ciphertext (with the AEAD tag).
    pub ciphertext: Vec<u8>,
}

impl Storage {
    /// Creates or replaces a sealed secret.
    pub async fn put_secret(&self, name: &str, sealed: &SealedSecret) -> Result<()> {
        let now = now_ms();
        on_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO secret (name, nonce, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
                 updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(now)
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }

    /// A sealed secret by name.
    pub async fn get_secret(&self, name: &str) -> Result<Option<SealedSecret>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_as("SELECT nonce, ciphertext FROM secret WHERE name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// Secret names and times, by name.
    pub async fn list_secrets(&self, page: &Page) -> Result<Vec<SecretRecord>> {
        on_pool!(self, |p| {
            Ok(sqlx::query_as(
                "SELECT name, created_at, updated_at FROM secret WHERE name > $1 ORDER BY name LIMIT $2",
            )
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?)
        })
    }

    /// Deletes a secret; false when there was none.
    pub async fn delete_secret(&self, name: &str) -> Result<bool> {
        on_writer!(self, |p| {
            let done = sqlx::query("DELETE FROM secret WHERE name = $1")
                .bind(name)
                .execute(&mut *p)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }
}
