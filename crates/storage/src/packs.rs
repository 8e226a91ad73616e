//! Packs, their components and actions, and trigger types.

use sqlx::types::Json;

use super::records::*;
use super::{Pool, Result, Storage, StorageError, now_ms};

impl Storage {
    /// Replaces a pack's grants; false when there is no such pack.
    pub async fn set_grants(&self, name: &str, grants: &Grants) -> Result<bool> {
        on_writer!(self, |p| {
            let done = sqlx::query("UPDATE pack SET grants = $2, updated_at = $3 WHERE name = $1")
                .bind(name)
                .bind(Json(grants))
                .bind(now_ms())
                .execute(&mut *p)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Registers a pack with its components and actions, all or nothing.
    ///
    /// Same name and version with the same digest is a no-op
    /// ([`Registered::Unchanged`]); with a different digest it is a conflict.
    /// A new version replaces the pack's actions.
    pub async fn register_pack(&self, pack: &NewPack) -> Result<Registered> {
        let now = now_ms();
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            let existing: Option<(String, String)> =
                sqlx::query_as("SELECT version, digest FROM pack WHERE name = $1")
                    .bind(&pack.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let outcome = match existing {
                Some((version, digest)) => {
                    if version == pack.version && digest == pack.digest {
                        // The same content pulled again (by digest after
                        // a tag, or from another repository) records where
                        // it came from this time.
                        if let Some(source) = &pack.source {
                            sqlx::query("UPDATE pack SET oci_reference = $2, oci_digest = $3 WHERE name = $1")
                                .bind(&pack.name)
                                .bind(&source.reference)
                                .bind(&source.digest)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                        }
                        return Ok(Registered::Unchanged);
                    }
                    if version == pack.version {
                        return Err(StorageError::Conflict(format!(
                            "pack {} {} is already registered with different content",
                            pack.name, pack.version
                        )));
                    }
                    Registered::Upgraded
                }
                None => Registered::Created,
            };
            // One statement registers a new pack or a new version of one.
            sqlx::query(
                "INSERT INTO pack (name, version, description, digest, created_at, updated_at, grants, oci_reference, oci_digest, record) \
                 VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9) ON CONFLICT (name) DO UPDATE SET \
                 version = excluded.version, description = excluded.description, digest = excluded.digest, \
                 updated_at = excluded.updated_at, grants = excluded.grants, \
                 oci_reference = excluded.oci_reference, oci_digest = excluded.oci_digest, record = excluded.record",
            )
            .bind(&pack.name)
            .bind(&pack.version)
            .bind(&pack.description)
            .bind(&pack.digest)
            .bind(now)
            .bind(Json(&pack.grants))
            .bind(pack.source.as_ref().map(|s| &s.reference))
            .bind(pack.source.as_ref().map(|s| &s.digest))
            .bind(pack.record)
            .execute(&mut *tx)
            .await?;
            if outcome == Registered::Upgraded {
                // A new version replaces the pack's actions and sensors, and
                // the trigger types its sensors emitted.
                for sql in [
                    "DELETE FROM action WHERE pack = $1",
                    "DELETE FROM sensor WHERE pack = $1",
                    "DELETE FROM trigger_type WHERE pack = $1",
                ] {
                    sqlx::query(sql).bind(&pack.name).execute(&mut *tx).await?;
                }
            }
            for t in &pack.trigger_types {
                sqlx::query(
                    "INSERT INTO trigger_type (ref, description, params_schema, payload_schema, pack) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.r#ref)
                .bind(&t.description)
                .bind(Json(&t.params_schema))
                .bind(Json(&t.payload_schema))
                .bind(&pack.name)
                .execute(&mut *tx)
                .await
                .map_err(|e| StorageError::from_sqlx(e, || format!("trigger type {} exists already", t.r#ref)))?;
            }
            for s in &pack.sensors {
                sqlx::query(
                    "INSERT INTO sensor (ref, pack, action, every_ms, schedule, description, enabled, next_run_at, failures, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, 0, $8)",
                )
                .bind(&s.r#ref)
                .bind(&pack.name)
                .bind(&s.action)
                .bind(s.every_ms)
                .bind(&s.schedule)
                .bind(&s.description)
                .bind(s.first_run_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            // Rules whose trigger type an upgrade removed are disabled,
            // saying why (a new pack removes none).
            if outcome == Registered::Upgraded {
                sqlx::query(DISABLE_ORPHANED_RULES)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            for c in &pack.components {
                sqlx::query(
                    "INSERT INTO component (digest, size, bytes, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&c.digest)
                .bind(c.bytes.len() as i64)
                .bind(&c.bytes[..])
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            for a in &pack.actions {
                sqlx::query(
                    "INSERT INTO action (ref, pack, name, component, params_schema, result_schema, error_schema, capabilities, description, workflow, sensor, policies) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&a.r#ref)
                .bind(&pack.name)
                .bind(&a.name)
                .bind(a.workflow.is_none().then_some(&a.component))
                .bind(Json(&a.params_schema))
                .bind(Json(&a.result_schema))
                .bind(a.error_schema.as_ref().map(Json))
                .bind(Json(&a.capabilities))
                .bind(&a.description)
                .bind(a.workflow.as_ref().map(Json))
                .bind(a.sensor)
                .bind(Json(&a.policies))
                .execute(&mut *tx)
                .await
                .map_err(|e| StorageError::from_sqlx(e, || format!("action {} exists in another pack", a.r#ref)))?;
                // Every version stays replayable after an upgrade.
                if a.workflow.is_none() {
                    sqlx::query(
                        "INSERT INTO pack_version (pack, version, action, component, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (pack, version, action) DO UPDATE \
                         SET component = excluded.component, created_at = excluded.created_at",
                    )
                    .bind(&pack.name)
                    .bind(&pack.version)
                    .bind(&a.name)
                    .bind(&a.component)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// Packs ordered by name, after `after`.
    pub async fn list_packs(&self, page: &Page) -> Result<Vec<PackRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<PackRecord> = sqlx::query_as(
                "SELECT name, version, description, digest, created_at, updated_at, grants, oci_reference, oci_digest, record FROM pack WHERE name > $1 ORDER BY name LIMIT $2",
            )
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// One pack by name.
    pub async fn get_pack(&self, name: &str) -> Result<Option<PackRecord>> {
        on_pool!(self, |p| {
            let row: Option<PackRecord> = sqlx::query_as(
                "SELECT name, version, description, digest, created_at, updated_at, grants, oci_reference, oci_digest, record FROM pack WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// Deletes a pack, its actions, sensors, their trigger types and its
    /// key-value state (rules on those trigger types are disabled, saying
    /// why); false when there was none.
    pub async fn delete_pack(&self, name: &str) -> Result<bool> {
        on_writer!(self, |p| {
            let mut tx = p.begin_with(self.begin_sql()).await?;
            for sql in [
                "DELETE FROM action WHERE pack = $1",
                "DELETE FROM pack_version WHERE pack = $1",
                "DELETE FROM kv WHERE pack = $1",
                "DELETE FROM sensor WHERE pack = $1",
                "DELETE FROM trigger_type WHERE pack = $1",
            ] {
                sqlx::query(sql).bind(name).execute(&mut *tx).await?;
            }
            sqlx::query(DISABLE_ORPHANED_RULES)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM pack WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// The bytes of a stored component.
    pub async fn component_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        on_pool!(self, |p| {
            Ok(
                sqlx::query_scalar("SELECT bytes FROM component WHERE digest = $1")
                    .bind(digest)
                    .fetch_optional(p)
                    .await?,
            )
        })
    }

    /// Actions ordered by ref, optionally of one pack.
    pub async fn list_actions(&self, pack: Option<&str>, page: &Page) -> Result<Vec<ActionRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<ActionRecord> = sqlx::query_as(
                "SELECT ref, pack, name, COALESCE(component, '') AS component, params_schema, result_schema, error_schema, capabilities, description, workflow, sensor, policies \
                 FROM action WHERE ref > $1 AND ($2 IS NULL OR pack = $2) AND sensor = FALSE ORDER BY ref LIMIT $3",
            )
            .bind(page.after_text())
            .bind(pack)
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// One action by ref.
    pub async fn get_action(&self, r#ref: &str) -> Result<Option<ActionRecord>> {
        on_pool!(self, |p| {
            let row: Option<ActionRecord> = sqlx::query_as(
                "SELECT ref, pack, name, COALESCE(component, '') AS component, params_schema, result_schema, error_schema, capabilities, description, workflow, sensor, policies \
                 FROM action WHERE ref = $1",
            )
            .bind(r#ref)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }

    /// Inserts or refreshes a trigger type.
    pub async fn upsert_trigger_type(&self, t: &TriggerTypeRecord) -> Result<()> {
        on_writer!(self, |p| {
            sqlx::query(
                "INSERT INTO trigger_type (ref, description, params_schema, payload_schema) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (ref) DO UPDATE SET description = excluded.description, \
                 params_schema = excluded.params_schema, payload_schema = excluded.payload_schema",
            )
            .bind(&t.r#ref)
            .bind(&t.description)
            .bind(Json(&t.params_schema))
            .bind(Json(&t.payload_schema))
            .execute(&mut *p)
            .await?;
            Ok(())
        })
    }

    /// Trigger types ordered by ref.
    pub async fn list_trigger_types(&self, page: &Page) -> Result<Vec<TriggerTypeRecord>> {
        on_pool!(self, |p| {
            let rows: Vec<TriggerTypeRecord> = sqlx::query_as(
                "SELECT ref, description, params_schema, payload_schema FROM trigger_type WHERE ref > $1 ORDER BY ref LIMIT $2",
            )
            .bind(page.after_text())
            .bind(page.limit())
            .fetch_all(p)
            .await?;
            Ok(rows)
        })
    }

    /// One trigger type.
    pub async fn get_trigger_type(&self, r#ref: &str) -> Result<Option<TriggerTypeRecord>> {
        on_pool!(self, |p| {
            let row: Option<TriggerTypeRecord> = sqlx::query_as(
                "SELECT ref, description, params_schema, payload_schema FROM trigger_type WHERE ref = $1",
            )
            .bind(r#ref)
            .fetch_optional(p)
            .await?;
            Ok(row)
        })
    }
}

/// Disables the enabled rules whose trigger type no longer exists, with the
/// reason (a pack's sensor went away). `$1`: now.
const DISABLE_ORPHANED_RULES: &str = "UPDATE rule SET enabled = FALSE, updated_at = $1, \
     disabled_reason = 'its trigger type ' || trigger || ' was removed with its pack' \
     WHERE enabled = TRUE AND trigger NOT IN (SELECT ref FROM trigger_type)";
