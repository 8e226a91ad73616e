//! Registry credentials from a Docker `config.json` (`--registry-auth`).
//!
//! Only the `auths` section is read: per registry either `auth`
//! (base64 of `user:password`) or `username` and `password`. Credentials
//! stay in memory: they are never stored, shown in `Debug`, logged or
//! answered; errors name the file and the registry, never a value.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Credentials by registry host (`ghcr.io`, `registry.example.com:5000`).
#[derive(Clone, Default)]
pub struct Credentials(BTreeMap<String, (String, Zeroizing<String>)>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<Zeroizing<String>>,
    username: Option<String>,
    password: Option<Zeroizing<String>>,
}

impl Credentials {
    /// Reads the `auths` of the Docker `config.json` at `path`.
    pub fn from_docker_config(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses a Docker `config.json`'s text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: DockerConfig =
            serde_json::from_str(text).map_err(|e| format!("not a Docker config.json: {e}"))?;
        let mut found = BTreeMap::new();
        for (key, entry) in config.auths {
            let host = registry_host(&key);
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = Zeroizing::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(auth.trim().as_bytes())
                            .map_err(|_| format!("the `auth` of {host} is not base64"))?,
                    );
                    let text = std::str::from_utf8(&decoded)
                        .map_err(|_| format!("the `auth` of {host} is not UTF-8"))?;
                    let (user, password) = text
                        .split_once(':')
                        .ok_or_else(|| format!("the `auth` of {host} is not user:password"))?;
                    (user.to_string(), Zeroizing::new(password.to_string()))
                }
                (_, Some(user), Some(password)) => (user, password),
                // Credential helpers and identity tokens are not read.
                _ => continue,
            };
            found.insert(host, pair);
        }
        Ok(Credentials(found))
    }

    /// What to present to `registry`: its credentials, or none.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        let host = registry_host(registry);
        let host = if host == "index.docker.io" {
            "docker.io".to_string()
        } else {
            host
        };
        match self.0.get(&host) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.to_string()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `ghcr.io` stays.
fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries_and_hides_them_in_debug() {
        let text = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpzM2NyZXQ="},
            "127.0.0.1:5000": {"username": "bob", "password": "hunter2"},
            "ghcr.io": {"identitytoken": "x"}
        }, "credsStore": "desktop"}"#;
        let c = Credentials::parse(text).unwrap();
        assert!(matches!(c.for_registry("docker.io"),
            RegistryAuth::Basic(u, p) if u == "user" && p == "s3cret"));
        assert!(matches!(c.for_registry("127.0.0.1:5000"),
            RegistryAuth::Basic(u, p) if u == "bob" && p == "hunter2"));
        assert!(matches!(c.for_registry("ghcr.io"), RegistryAuth::Anonymous));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn refuses_an_auth_that_is_not_user_colon_password() {
        let err = Credentials::parse(r#"{"auths": {"a.io": {"auth": "bm9jb2xvbg=="}}}"#)
            .err()
            .unwrap();
        assert!(err.contains("a.io"), "{err}");
    }
}
