//! Packs in OCI registries: references, the registries a server may pull
//! from, pulling an artifact into an [`Upload`], and the client side of
//! pushing and comparing tags.
//!
//! The registry protocol is `oci-client`'s. A server pulls only from the
//! registries its admin allowed, every connection through a [`gate`] that
//! applies the outbound rules of actions; every layer is checked against
//! the manifest's size and digest, and against the upload limits, before
//! the pack goes through the same registration as an upload
//! ([`super::install`]). The artifact layout is in [`layout`].

pub mod auth;
pub mod gate;
pub mod layout;
mod publish;

pub use publish::{Remote, newer_tags, push, remote};

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciImageManifest,
};
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::{PackError, Upload};
use crate::{Core, EngineError};
use attune_storage::PackSource;
pub use oci_client::Client as RegistryClient;

/// Why a pull or push failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference is malformed or names no tag or digest.
    #[error("{0}")]
    BadReference(String),
    /// The registry or an address it led to is not allowed.
    #[error("{0}")]
    NotAllowed(String),
    /// The registry has no such repository, tag or digest.
    #[error("{0}")]
    NotFound(String),
    /// The artifact is not a pack.
    #[error("{0}")]
    WrongMediaType(String),
    /// A layer or the whole artifact is over the limits.
    #[error("{0}")]
    TooLarge(String),
    /// The registry failed, could not be reached, or sent content that
    /// does not match its digest.
    #[error("{0}")]
    Registry(String),
    /// The pack in it is not valid.
    #[error(transparent)]
    Pack(PackError),
}

/// A parsed `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:…`.
#[derive(Debug, Clone)]
pub struct OciRef {
    /// As given, with `oci://`.
    pub text: String,
    /// Parsed.
    pub reference: Reference,
}

impl OciRef {
    /// Parses `text`, which must name its registry and a tag or digest.
    pub fn parse(text: &str) -> Result<OciRef, OciError> {
        let bad = |m: &str| OciError::BadReference(format!("`{text}`: {m}"));
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("a reference starts with oci://"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("name the registry and the repository: oci://REGISTRY/REPO:TAG"))?;
        let last = path.rsplit('/').next().unwrap_or(path);
        if !last.contains(':') && !last.contains('@') {
            return Err(bad("missing tag: add :TAG or @sha256:DIGEST"));
        }
        let reference: Reference = rest.parse().map_err(|e| bad(&format!("{e}")))?;
        if !reference.registry().eq_ignore_ascii_case(host) {
            return Err(bad("name the registry: oci://REGISTRY/REPO:TAG"));
        }
        Ok(OciRef {
            text: text.to_string(),
            reference,
        })
    }

    /// The registry's `host[:port]`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// `REGISTRY/REPO`, without tag or digest.
    pub fn repository(&self) -> String {
        format!(
            "{}/{}",
            self.reference.registry().to_ascii_lowercase(),
            self.reference.repository()
        )
    }
}

/// The registries a server pulls from, and how.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host` or `host:port` of each registry packs may be pulled from.
    pub allowed: Vec<String>,
    /// Loopback registries reached over plain HTTP (allowed too).
    pub insecure: Vec<String>,
    /// Credentials by registry.
    pub credentials: auth::Credentials,
    /// A private CA to trust besides the webpki roots (PEM).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Longest to connect, and longest silence while reading.
    pub timeout: Duration,
    /// Longest a whole pull may take, however steadily the registry sends.
    pub deadline: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            allowed: Vec::new(),
            insecure: Vec::new(),
            credentials: auth::Credentials::default(),
            ca_cert: None,
            timeout: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

fn matches(list: &[String], registry: &str) -> bool {
    let registry = registry.to_ascii_lowercase();
    let host = registry
        .rsplit_once(':')
        .map_or(registry.as_str(), |(h, _)| h);
    list.iter()
        .any(|e| e.eq_ignore_ascii_case(&registry) || e.eq_ignore_ascii_case(host))
}

impl RegistryConfig {
    /// Whether packs may be pulled from `registry`.
    pub fn allows(&self, registry: &str) -> bool {
        matches(&self.allowed, registry) || matches(&self.insecure, registry)
    }

    /// Whether `registry` is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        matches(&self.insecure, registry)
    }
}

/// A registry client: TLS with the webpki roots (and a private CA), plain
/// HTTP only for `plain_http` registries, every request through `proxy`
/// when given.
pub fn client(
    plain_http: Vec<String>,
    ca_cert: Option<&std::path::Path>,
    proxy: Option<String>,
    timeout: Duration,
) -> Result<Client, OciError> {
    // The registry client's TLS uses the process's provider: ring, as
    // everywhere else in Attune.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots: Vec<oci_client::client::Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Der,
            data: c.to_vec(),
        })
        .collect();
    if let Some(path) = ca_cert {
        for c in
            attune_util::tls::certificates(path).map_err(|e| OciError::Registry(e.to_string()))?
        {
            roots.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: c.to_vec(),
            });
        }
    }
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        tls_certs_only: roots,
        platform_resolver: None,
        connect_timeout: Some(timeout),
        read_timeout: Some(timeout),
        max_concurrent_download: 1,
        https_proxy: proxy.clone(),
        http_proxy: proxy,
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| OciError::Registry(format!("registry client: {e}")))
}

/// Classifies a registry client error, preferring what the gate refused.
fn failed(
    e: oci_client::errors::OciDistributionError,
    gate: Option<&gate::Gate>,
    what: &str,
) -> OciError {
    if let Some(refusal) = gate.and_then(gate::Gate::refusal) {
        return refused(refusal, what);
    }
    let scrubbed = |e: OciError| match (gate, e) {
        (Some(g), OciError::Registry(m)) => OciError::Registry(g.scrub(&m)),
        (_, e) => e,
    };
    match scrubbed(classify(e, what)) {
        OciError::Registry(m) => OciError::Registry(cut(m, MAX_REGISTRY_ERROR)),
        e => e,
    }
}

/// Most bytes of a registry's own words quoted in an error: a registry
/// answers with a page of HTML as readily as with a reason.
const MAX_REGISTRY_ERROR: usize = 512;

/// `text`, cut to at most `max` bytes on a character boundary, with `…`
/// when it was longer.
fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// What a registry client error means.
fn classify(e: oci_client::errors::OciDistributionError, what: &str) -> OciError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let unknown = |envelope: &oci_client::errors::OciEnvelope| {
        envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, C::ManifestUnknown | C::NameUnknown | C::BlobUnknown))
    };
    match e {
        E::ImageManifestNotFoundError(_) => {
            OciError::NotFound(format!("{what}: not found in the registry"))
        }
        E::RegistryError { envelope, .. } if unknown(&envelope) => {
            OciError::NotFound(format!("{what}: not found in the registry"))
        }
        E::ServerError { code: 404, .. } => {
            OciError::NotFound(format!("{what}: not found in the registry"))
        }
        E::RequestError(e) => OciError::Registry(format!(
            "{what}: the registry could not be reached: {}",
            error_chain(&e)
        )),
        other => OciError::Registry(format!("{what}: {other}")),
    }
}

fn refused(refusal: gate::Refusal, what: &str) -> OciError {
    match refusal {
        gate::Refusal::Address(why) => OciError::NotAllowed(why),
        gate::Refusal::TooLarge(why) => OciError::TooLarge(why),
        gate::Refusal::Unreachable(why) => {
            OciError::Registry(format!("{what}: the registry could not be reached: {why}"))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Limits on what a pull may fetch.
#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    /// Largest layer (the upload limit).
    pub max_layer: u64,
    /// Largest sum of layers (what an archive may unpack to).
    pub max_total: u64,
}

/// Pulls the pack `text` names from an allowed registry, every layer
/// checked against its size and digest.
pub async fn pull(
    config: &RegistryConfig,
    text: &str,
    limits: PullLimits,
) -> Result<Upload, OciError> {
    tokio::time::timeout(config.deadline, pull_within(config, text, limits))
        .await
        .unwrap_or_else(|_| {
            Err(OciError::Registry(format!(
                "{text}: the registry took longer than {} s to send the pack",
                config.deadline.as_secs()
            )))
        })
}

/// Refuses an artifact that would replace a pack of the same name
/// installed from elsewhere (another repository, or an upload): a pack's
/// name is its actions' refs, which rules call, and its grants. An
/// artifact from the repository the pack came from upgrades it; `replace`
/// says the admin means to swap its origin.
pub async fn check_origin(core: &Core, upload: &Upload, replace: bool) -> Result<(), EngineError> {
    let Some(new) = &upload.source else {
        return Ok(());
    };
    if replace {
        return Ok(());
    }
    let name = &upload.manifest.name;
    let Some(old) = core.storage.get_pack(name).await? else {
        return Ok(());
    };
    let repository = |reference: &str| OciRef::parse(reference).ok().map(|r| r.repository());
    let from = old.source();
    if let Some(from) = &from
        && repository(&from.reference).is_some()
        && repository(&from.reference) == repository(&new.reference)
    {
        return Ok(());
    }
    Err(EngineError::Conflict(format!(
        "pack `{name}` is installed from {}, and the artifact at {} names the same pack; \
         send \"replace\": true to replace it",
        from.map_or_else(|| "an upload".to_string(), |f| f.reference),
        new.reference
    )))
}

async fn pull_within(
    config: &RegistryConfig,
    text: &str,
    limits: PullLimits,
) -> Result<Upload, OciError> {
    let r = OciRef::parse(text)?;
    let registry = r.registry().to_string();
    if !config.allows(&registry) {
        return Err(OciError::NotAllowed(format!(
            "registry {registry} is not allowed on this server (--allow-registry)"
        )));
    }
    // Only the registry pulled from is exempt from the address rules, not
    // every insecure one: a redirect or token realm of this registry must
    // not reach another loopback service.
    let gate = gate::Gate::open(gate::Policy {
        insecure: if config.is_insecure(&registry) {
            vec![registry.to_ascii_lowercase()]
        } else {
            Vec::new()
        },
        budget: limits
            .max_total
            .saturating_add(limits.max_layer)
            .saturating_add(8 << 20),
        connect_timeout: config.timeout,
    })
    .await
    .map_err(|e| OciError::Registry(format!("opening the registry gate: {e}")))?;
    let plain = if config.is_insecure(&registry) {
        vec![registry.clone()]
    } else {
        Vec::new()
    };
    let client = client(
        plain,
        config.ca_cert.as_deref(),
        Some(gate.proxy_url()),
        config.timeout,
    )?;
    let auth = config.credentials.for_registry(&registry);
    // Indexes and Docker manifests are accepted too, to be named as what
    // they are rather than answered as missing.
    let accepted = [
        OCI_IMAGE_MEDIA_TYPE,
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        IMAGE_MANIFEST_MEDIA_TYPE,
        IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    ];
    let (raw, _) = client
        .pull_manifest_raw(&r.reference, &auth, &accepted)
        .await
        .map_err(|e| failed(e, Some(&gate), text))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    if let Some(wanted) = r.reference.digest()
        && wanted != digest
    {
        return Err(OciError::Registry(format!(
            "the manifest the registry sent is {digest}, not {wanted}"
        )));
    }
    let kind: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| OciError::Registry(format!("the manifest is not JSON: {e}")))?;
    if let Some(other) = kind["mediaType"]
        .as_str()
        .filter(|m| *m != OCI_IMAGE_MEDIA_TYPE)
    {
        return Err(OciError::WrongMediaType(format!(
            "the manifest is `{other}`, not `{OCI_IMAGE_MEDIA_TYPE}`"
        )));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&raw).map_err(|e| {
        OciError::WrongMediaType(format!(
            "not an OCI image manifest ({OCI_IMAGE_MEDIA_TYPE}): {e}"
        ))
    })?;
    let shape = layout::shape(&manifest)?;
    // Sizes are checked against the manifest before anything is fetched.
    let mut total: u64 = 0;
    for l in &manifest.layers {
        let size = u64::try_from(l.size).map_err(|_| {
            OciError::WrongMediaType(format!("layer {} has a negative size", l.digest))
        })?;
        if size > limits.max_layer {
            return Err(OciError::TooLarge(format!(
                "layer {} is {size} bytes; uploads are limited to {} bytes",
                l.digest, limits.max_layer
            )));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_total {
        return Err(OciError::TooLarge(format!(
            "the layers add up to {total} bytes, more than {}",
            limits.max_total
        )));
    }
    let mut layers = Vec::new();
    for l in &manifest.layers {
        layers.push(fetch_layer(&client, &r.reference, l, &gate, text).await?);
    }
    let mut upload = layout::upload(
        &manifest,
        shape,
        layers,
        r.reference.repository(),
        r.reference.tag(),
    )?;
    upload.source = Some(PackSource {
        reference: r.text.clone(),
        digest,
    });
    Ok(upload)
}

/// One layer's bytes, never more than its declared size, checked against
/// its digest.
async fn fetch_layer(
    client: &Client,
    reference: &Reference,
    layer: &oci_client::manifest::OciDescriptor,
    gate: &gate::Gate,
    text: &str,
) -> Result<Vec<u8>, OciError> {
    let size = layer.size as u64;
    let mut stream = client
        .pull_blob_stream(reference, layer)
        .await
        .map_err(|e| failed(e, Some(gate), text))?
        .stream;
    let mut bytes = Vec::with_capacity(size as usize);
    let mut hasher = Sha256::new();
    let mismatch = || {
        OciError::Registry(format!(
            "layer {} does not match its digest or size in the manifest",
            layer.digest
        ))
    };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                if let Some(r) = gate.refusal() {
                    return Err(refused(r, text));
                }
                // The client's own digest check fails the stream too.
                return Err(if e.to_string().to_ascii_lowercase().contains("digest") {
                    mismatch()
                } else {
                    OciError::Registry(
                        gate.scrub(&format!("{text}: reading layer {}: {e}", layer.digest)),
                    )
                });
            }
        };
        if (bytes.len() + chunk.len()) as u64 > size {
            return Err(mismatch());
        }
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if bytes.len() as u64 != size || got != layer.digest {
        return Err(mismatch());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_names_its_registry_and_a_tag_or_digest() {
        let r = OciRef::parse("oci://127.0.0.1:5000/acme/tools:1.0").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference.tag(), Some("1.0"));
        let d = format!("oci://ghcr.io/acme/tools@sha256:{}", "a".repeat(64));
        assert!(OciRef::parse(&d).unwrap().reference.digest().is_some());
        for bad in [
            "ghcr.io/a:1",
            "oci://ghcr.io/acme/tools",
            "oci://tools:1",
            "oci://ghcr.io/A B:1",
        ] {
            assert!(
                matches!(OciRef::parse(bad), Err(OciError::BadReference(_))),
                "{bad}"
            );
        }
        let missing = OciRef::parse("oci://ghcr.io/acme/tools")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing tag"), "{missing}");
    }

    #[test]
    fn a_registry_s_long_answer_is_cut_in_the_error() {
        let page = format!("<html>{}é</html>", "x".repeat(5000));
        let e = oci_client::errors::OciDistributionError::ServerError {
            code: 500,
            url: "https://registry.example/v2/acme/tools/manifests/1".into(),
            message: page,
        };
        let OciError::Registry(m) = failed(e, None, "pulling oci://registry.example/acme/tools:1")
        else {
            panic!("a server error is the registry's")
        };
        assert!(
            m.len() <= MAX_REGISTRY_ERROR + '…'.len_utf8(),
            "{}",
            m.len()
        );
        assert!(
            m.starts_with("pulling oci://registry.example/acme/tools:1") && m.ends_with('…'),
            "{m}"
        );
        assert_eq!(cut("é".repeat(3), 3), "é…");
        assert_eq!(cut("short".into(), 512), "short");
    }

    #[test]
    fn allowed_registries_match_by_host_or_host_and_port() {
        let c = RegistryConfig {
            allowed: vec!["ghcr.io".into()],
            insecure: vec!["127.0.0.1:5000".into()],
            ..RegistryConfig::default()
        };
        assert!(c.allows("ghcr.io") && c.allows("GHCR.io"));
        assert!(c.allows("127.0.0.1:5000") && c.is_insecure("127.0.0.1:5000"));
        assert!(!c.allows("127.0.0.1:5001") && !c.allows("docker.io"));
    }

    #[test]
    fn newer_tags_are_greater_versions_in_order() {
        let tags: Vec<String> = [
            "0.9.0",
            "1.0.0",
            "1.2.0",
            "v1.10.0",
            "latest",
            "1.1.0-rc1",
            "1.1.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(newer_tags("1.0.0", &tags), ["1.1.0", "1.2.0", "v1.10.0"]);
        assert!(newer_tags("latest", &tags).is_empty());
    }
}
