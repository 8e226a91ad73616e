//! The registry side of publishing and keeping up to date: pushing an
//! artifact, and asking a registry what stands behind an installed pack's
//! reference now.

use oci_client::Client;

use super::{OciError, OciRef, failed, layout};

/// Pushes `artifact` to `reference`; the manifest's digest.
pub async fn push(
    client: &Client,
    reference: &OciRef,
    auth: &oci_client::secrets::RegistryAuth,
    artifact: layout::Artifact,
) -> Result<String, OciError> {
    client
        .push(
            &reference.reference,
            &artifact.layers,
            artifact.config,
            auth,
            Some(artifact.manifest),
        )
        .await
        .map_err(|e| failed(e, None, &reference.text))?;
    // The registry's digest of the manifest as the client serialized it.
    client
        .fetch_manifest_digest(&reference.reference, auth)
        .await
        .map_err(|e| failed(e, None, &reference.text))
}

/// What a registry says now about an installed pack's reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The digest behind the reference's tag now (`None` for a digest
    /// reference).
    pub digest: Option<String>,
    /// Tags of the repository that sort after the installed one.
    pub newer_tags: Vec<String>,
}

/// Asks the registry about `reference`: the tag's digest and newer tags.
pub async fn remote(
    client: &Client,
    reference: &OciRef,
    auth: &oci_client::secrets::RegistryAuth,
) -> Result<Remote, OciError> {
    let r = &reference.reference;
    let tag = r.tag().filter(|_| r.digest().is_none());
    let digest = match tag {
        Some(_) => Some(
            client
                .fetch_manifest_digest(r, auth)
                .await
                .map_err(|e| failed(e, None, &reference.text))?,
        ),
        None => None,
    };
    let tags = client
        .list_tags(r, auth, None, None)
        .await
        .map_err(|e| failed(e, None, &reference.text))?
        .tags;
    Ok(Remote {
        digest,
        newer_tags: tag.map(|t| newer_tags(t, &tags)).unwrap_or_default(),
    })
}

/// `v1.2.10` → `[1, 2, 10]`; `None` for a tag that is not a version.
fn version_of(tag: &str) -> Option<Vec<u64>> {
    let core = tag.strip_prefix('v').unwrap_or(tag);
    let core = core.split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

/// The tags that are versions greater than `current`, in ascending order.
pub fn newer_tags(current: &str, tags: &[String]) -> Vec<String> {
    let Some(now) = version_of(current) else {
        return Vec::new();
    };
    let mut newer: Vec<(Vec<u64>, &String)> = tags
        .iter()
        .filter_map(|t| version_of(t).map(|v| (v, t)))
        .filter(|(v, t)| *v > now && !t.contains('-'))
        .collect();
    newer.sort();
    newer.into_iter().map(|(_, t)| t.clone()).collect()
}
