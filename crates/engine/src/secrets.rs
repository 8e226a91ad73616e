//! Secrets: values admins set, stored encrypted, never returned.
//!
//! Each value is sealed with XChaCha20-Poly1305 under a 32-byte key kept in
//! `<data-dir>/secrets.key` (hex, mode 0600, created on first start; a key
//! file others can read is refused), with a random nonce per write and the
//! secret's name as associated data, so a ciphertext moved to another name
//! does not open. The database holds no plaintext; the API lists names and
//! times only.

use std::collections::BTreeMap;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::worker::protocol::RunSecrets;
use super::{Core, EngineError};
use attune_runtime::PathError;
use attune_storage::{ExecutionRecord, SealedSecret};

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or creating it failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Others may read it.
    #[error("{0} is readable by others (mode {1:o}); chmod 600 it")]
    Exposed(String, u32),
    /// It does not hold 32 bytes of hex.
    #[error("{0} does not hold a 32-byte key in hex")]
    Malformed(String),
}

/// The key that seals secrets.
pub struct SecretsKey {
    key: Zeroizing<[u8; 32]>,
    /// A value sealed with this key, sealed on first use (see [`Self::open_decoy`]).
    decoy: std::sync::OnceLock<SealedSecret>,
}

impl SecretsKey {
    /// Reads the key at `path`, creating a random one (0600) when there is
    /// none. A key file readable by group or others is refused.
    pub fn open_or_create(path: &Path) -> Result<SecretsKey, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        if !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(key.as_mut());
            attune_util::files::write_private(path, &hex::encode(key.as_ref())).map_err(io)?;
            return Ok(SecretsKey::new(key));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Exposed(shown, mode));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| KeyError::Malformed(shown.clone()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Malformed(shown))?;
        Ok(SecretsKey::new(Zeroizing::new(key)))
    }

    fn new(key: Zeroizing<[u8; 32]>) -> SecretsKey {
        SecretsKey {
            key,
            decoy: std::sync::OnceLock::new(),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }

    /// An HMAC-SHA256 of `message` under a key derived from this one for
    /// `purpose` alone (so a tag made for one use is worth nothing in
    /// another, and the sealing key itself never signs).
    pub fn sign(&self, purpose: &str, message: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = self.signer(purpose);
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is [`Self::sign`]'s for `purpose` and `message`,
    /// compared in constant time.
    pub fn verify(&self, purpose: &str, message: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let mut mac = self.signer(purpose);
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }

    fn signer(&self, purpose: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        type HmacSha256 = hmac::Hmac<sha2::Sha256>;
        let mut derive =
            <HmacSha256 as Mac>::new_from_slice(self.key.as_ref()).expect("HMAC takes any key");
        derive.update(b"attune sign: ");
        derive.update(purpose.as_bytes());
        let subkey: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
        <HmacSha256 as Mac>::new_from_slice(subkey.as_ref()).expect("HMAC takes any key")
    }

    /// Seals `value` for the secret `name`.
    pub fn seal(&self, name: &str, value: &str) -> SealedSecret {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("sealing never fails for in-memory data");
        SealedSecret {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed secret; `None` when it was not sealed with this key
    /// for this name.
    pub fn open(&self, name: &str, sealed: &SealedSecret) -> Option<Zeroizing<String>> {
        if sealed.nonce.len() != 24 {
            return None;
        }
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    XNonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: name.as_bytes(),
                    },
                )
                .ok()?,
        );
        String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new)
    }

    /// Opens a value sealed with this key, copied as a secret is out of the
    /// read cache: the work of revealing a secret, for paths that must cost
    /// the same as one without having one (an unknown webhook).
    pub fn open_decoy(&self) -> Zeroizing<String> {
        const NAME: &str = "\0decoy";
        let sealed = self
            .decoy
            .get_or_init(|| self.seal(NAME, "attune: a decoy of a secret's size"))
            .clone();
        self.open(NAME, &sealed).unwrap_or_default()
    }
}

/// Largest secret value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// Whether `name` is a valid secret name: 1-128 letters, digits, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn invalid(path: &str, message: &str) -> EngineError {
    EngineError::invalid(
        "the secret is invalid",
        "",
        vec![PathError::new(path, message)],
    )
}

/// Names of webhook rules' own keys begin with this (`webhook:<rule ref>`).
/// No name [`set`] takes holds a `:`, and no rule ref does, so such a name
/// is one rule's alone and only saving that rule writes it: neither an
/// admin's `PUT /secrets` nor another rule can replace a rule's key.
pub const WEBHOOK_KEY_PREFIX: &str = "webhook:";

/// Whether `name` belongs to a webhook rule's own key, which only saving
/// (or deleting) that rule may change.
pub fn is_rule_key(name: &str) -> bool {
    name.starts_with(WEBHOOK_KEY_PREFIX)
}

fn reserved(name: &str) -> EngineError {
    invalid(
        "/name",
        &format!(
            "`{name}` is a webhook rule's key: it changes with its rule's `trigger_params.secret`"
        ),
    )
}

/// Sets (creates or replaces) a secret.
pub async fn set(core: &Core, name: &str, value: &str) -> Result<(), EngineError> {
    if is_rule_key(name) {
        return Err(reserved(name));
    }
    if !valid_name(name) {
        return Err(invalid(
            "/name",
            "a secret name is 1-128 letters, digits, `_` or `-`",
        ));
    }
    if value.is_empty() || value.len() > MAX_VALUE_BYTES {
        return Err(invalid(
            "/value",
            &format!("a value is 1 to {MAX_VALUE_BYTES} bytes"),
        ));
    }
    put(core, name, value).await
}

/// Seals and stores `value` as the secret `name`, whatever the name: for
/// [`set`], and for webhook rules' own keys.
pub(crate) async fn put(core: &Core, name: &str, value: &str) -> Result<(), EngineError> {
    let sealed = core.secrets.seal(name, value);
    core.storage.put_secret(name, &sealed).await?;
    core.cache.secrets_changed();
    Ok(())
}

/// Deletes a secret an admin set; false when there was none. A webhook
/// rule's key goes with its rule, not through here.
pub async fn delete(core: &Core, name: &str) -> Result<bool, EngineError> {
    if is_rule_key(name) {
        return Err(reserved(name));
    }
    remove(core, name).await
}

/// Deletes the secret `name`, whatever the name; false when there was none.
pub(crate) async fn remove(core: &Core, name: &str) -> Result<bool, EngineError> {
    let deleted = core.storage.delete_secret(name).await?;
    if deleted {
        core.cache.secrets_changed();
    }
    Ok(deleted)
}

/// The value of a secret, for the host's own use (verifying a webhook,
/// rendering a rule, handing a run its grant); `None` when there is none.
/// Read through the read cache, which holds only the sealed form.
pub async fn reveal(core: &Core, name: &str) -> Result<Option<Zeroizing<String>>, EngineError> {
    let Some(sealed) = core.cache.secret(&core.storage, name).await? else {
        return Ok(None);
    };
    match core.secrets.open(name, &sealed) {
        Some(v) => Ok(Some(v)),
        None => Err(EngineError::Internal(anyhow::anyhow!(
            "secret `{name}` does not open with this server's key"
        ))),
    }
}

/// Associated data of sealed execution params: a sealed secret cannot be
/// passed off as params, nor the reverse.
const PARAMS_AAD: &str = "\0execution-params";

/// What an execution's sealed params hold.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedRun {
    params: serde_json::Value,
    secrets: BTreeMap<String, String>,
}

/// Seals the real `params` of an execution together with the values of
/// the secrets its templates used (for its worker to redact): nonce, then
/// ciphertext.
pub fn seal_params(
    core: &Core,
    params: &serde_json::Value,
    used: &[(String, Zeroizing<String>)],
) -> Vec<u8> {
    let run = SealedRun {
        params: params.clone(),
        secrets: used
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_string()))
            .collect(),
    };
    let text = Zeroizing::new(serde_json::to_string(&run).expect("JSON values serialize"));
    let sealed = core.secrets.seal(PARAMS_AAD, &text);
    let mut out = sealed.nonce;
    out.extend_from_slice(&sealed.ciphertext);
    out
}

/// Opens what [`seal_params`] sealed: the real params and the secrets
/// they carry. `None` when it does not open with this server's key.
fn open_params(core: &Core, bytes: &[u8]) -> Option<(serde_json::Value, BTreeMap<String, String>)> {
    if bytes.len() < 24 {
        return None;
    }
    let (nonce, ciphertext) = bytes.split_at(24);
    let sealed = SealedSecret {
        nonce: nonce.to_vec(),
        ciphertext: ciphertext.to_vec(),
    };
    let text = core.secrets.open(PARAMS_AAD, &sealed)?;
    let run: SealedRun = serde_json::from_str(&text).ok()?;
    Some((run.params, run.secrets))
}

/// The params and secrets of a run of `execution`, an action of a pack
/// granted `granted`: its real params (opened from the sealed copy when its
/// record masks secrets) and every value it may read or carries.
pub async fn for_run(
    core: &Core,
    execution: &ExecutionRecord,
    granted: &[String],
) -> Result<(serde_json::Value, RunSecrets), EngineError> {
    let (params, mut values) = match &execution.sealed_params {
        Some(bytes) => open_params(core, bytes).ok_or_else(|| {
            EngineError::Internal(anyhow::anyhow!(
                "the parameters of execution {} do not open with this server's key",
                execution.id
            ))
        })?,
        None => (execution.params.clone(), BTreeMap::new()),
    };
    for name in granted {
        if let Some(v) = reveal(core, name).await? {
            values.insert(name.clone(), v.as_str().to_string());
        }
    }
    Ok((
        params,
        RunSecrets {
            granted: granted.to_vec(),
            values,
        },
    ))
}

/// A page of secrets' names and times, by name; never a value.
pub async fn list(
    core: &Core,
    page: &attune_storage::Page,
) -> Result<Vec<attune_storage::SecretRecord>, EngineError> {
    Ok(core.storage.list_secrets(page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretsKey::open_or_create(&dir.path().join("k")).unwrap();
        let sealed = key.seal("slack", "xoxb-123");
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"xoxb-123"));
        assert_eq!(key.open("slack", &sealed).unwrap().as_str(), "xoxb-123");
        assert!(key.open("github", &sealed).is_none(), "the name is bound");
        let again = SecretsKey::open_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(
            again.open("slack", &sealed).unwrap().as_str(),
            "xoxb-123",
            "the key persists"
        );
        let other = SecretsKey::open_or_create(&dir.path().join("other")).unwrap();
        assert!(other.open("slack", &sealed).is_none());
        assert_ne!(
            key.seal("slack", "xoxb-123").nonce,
            sealed.nonce,
            "a fresh nonce per write"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        SecretsKey::open_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SecretsKey::open_or_create(&path),
            Err(KeyError::Exposed(..))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            SecretsKey::open_or_create(&path),
            Err(KeyError::Malformed(..))
        ));
    }
}
