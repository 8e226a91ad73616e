//! `attune pack push` and `attune pack outdated`: the client's side of
//! packs in OCI registries. Both talk to the registry from this machine
//! with its own credentials; `attune pack install` asks the server to pull
//! (see `pack.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use attune_engine::packs::oci::{self, OciRef, auth::Credentials, layout};
use attune_engine::packs::{Manifest, archive};

/// How this machine reaches registries.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry credentials in Docker's `config.json` format; default
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` when present.
    #[arg(long, env = "ATTUNE_REGISTRY_AUTH")]
    pub registry_auth: Option<PathBuf>,
    /// Speak plain HTTP to the registry (one on this machine without TLS).
    #[arg(long)]
    pub plain_http: bool,
}

impl RegistryArgs {
    fn credentials(&self) -> anyhow::Result<Credentials> {
        let default = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"))
            .filter(|p| p.is_file());
        match self.registry_auth.as_ref().or(default.as_ref()) {
            Some(path) => Credentials::from_docker_config(path).context("--registry-auth"),
            None => Ok(Credentials::default()),
        }
    }

    fn client(&self, r: &OciRef, ca: Option<&Path>) -> anyhow::Result<oci::RegistryClient> {
        let plain = if self.plain_http {
            vec![r.registry().to_string()]
        } else {
            Vec::new()
        };
        Ok(oci::client(
            plain,
            ca,
            None,
            std::time::Duration::from_secs(60),
        )?)
    }
}

/// The artifact for the pack at `path`: a component (`.wasm`, with its
/// name and version), a pack archive (`.tar.gz`), or a pack directory
/// (`pack.toml` and the files it names).
fn artifact(
    path: &Path,
    name: Option<String>,
    version: Option<String>,
) -> anyhow::Result<layout::Artifact> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if path.is_dir() {
        let toml = read(&path.join("pack.toml"))?;
        let manifest: Manifest =
            toml::from_str(std::str::from_utf8(&toml).context("pack.toml is not UTF-8")?)
                .context("pack.toml")?;
        let mut files = archive::Files::from([("pack.toml".to_string(), toml)]);
        for file in manifest.components.iter().chain(&manifest.workflows) {
            let rel = file.trim_start_matches("./");
            if rel.split('/').any(|p| p == ".." || p.is_empty()) {
                anyhow::bail!("`{file}` in pack.toml leaves the pack's directory");
            }
            files.insert(rel.to_string(), read(&path.join(rel))?);
        }
        return layout::pack(files).map_err(anyhow::Error::msg);
    }
    let bytes = read(path)?;
    if path.extension().is_some_and(|e| e == "wasm") {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("pack");
        let name = name.unwrap_or_else(|| stem.to_string());
        let version = version.ok_or_else(|| anyhow::anyhow!("a .wasm push needs --version"))?;
        return Ok(layout::single(&name, &version, None, bytes));
    }
    let files = archive::unpack(&bytes, 1 << 30).map_err(|e| anyhow::anyhow!("{e}"))?;
    layout::pack(files).map_err(anyhow::Error::msg)
}

/// `attune pack push PATH REF`: the reference and digest pushed.
pub(super) async fn push(
    path: &Path,
    reference: &str,
    name: Option<String>,
    version: Option<String>,
    registry: &RegistryArgs,
    ca: Option<&Path>,
) -> anyhow::Result<Value> {
    let r = OciRef::parse(reference)?;
    let artifact = artifact(path, name, version)?;
    let client = registry.client(&r, ca)?;
    let auth = registry.credentials()?.for_registry(r.registry());
    let digest = oci::push(&client, &r, &auth, artifact).await?;
    Ok(json!({"reference": reference, "digest": digest}))
}

/// `attune pack outdated`: for each pack installed from a registry, what
/// the registry holds now.
///
/// Rows as `--json` prints them; [`table_rows`] shortens them for a table.
pub(super) async fn outdated(
    packs: &[Value],
    registry: &RegistryArgs,
    ca: Option<&Path>,
) -> anyhow::Result<Vec<Value>> {
    let credentials = registry.credentials()?;
    let mut rows = Vec::new();
    for pack in packs {
        let (Some(reference), Some(installed)) = (
            pack["source"]["reference"].as_str(),
            pack["source"]["digest"].as_str(),
        ) else {
            continue;
        };
        let r = OciRef::parse(reference)?;
        let client = registry.client(&r, ca)?;
        let auth = credentials.for_registry(r.registry());
        let (status, newer) = match oci::remote(&client, &r, &auth).await {
            Ok(remote) => {
                let moved = remote.digest.as_deref().is_some_and(|d| d != installed);
                let status = match (moved, remote.newer_tags.is_empty()) {
                    (true, _) => "new digest behind the tag",
                    (false, false) => "newer tags",
                    (false, true) => "up to date",
                };
                (status.to_string(), remote.newer_tags)
            }
            Err(e) => (format!("unknown: {e}"), Vec::new()),
        };
        rows.push(json!({
            "pack": pack["name"],
            "version": pack["version"],
            "reference": reference,
            "digest": installed,
            "status": status,
            "newer_tags": newer,
        }));
    }
    Ok(rows)
}

/// The rows of [`outdated`] for a table: digests shortened, tags joined.
pub(super) fn table_rows(rows: &[Value]) -> Value {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            let digest = r["digest"].as_str().unwrap_or_default();
            r["digest"] = json!(digest.get(..19).unwrap_or(digest));
            let tags: Vec<&str> = r["newer_tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            r["newer_tags"] = json!(tags.join(", "));
            r
        })
        .collect()
}
