//! How a pack looks as an OCI artifact, both ways: what `attune pack push`
//! builds and what an install accepts.
//!
//! - One component is a standard Wasm OCI artifact (the CNCF layout that
//!   `wkg` and `oras` read): config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer.
//! - A pack of several files has artifact type `application/vnd.attune.pack.v1`,
//!   the empty config, and one layer per file, each titled with its path in
//!   the pack (`org.opencontainers.image.title`, as `oras` names files):
//!   `pack.toml` as `application/vnd.attune.pack.manifest.v1+toml`,
//!   components as `application/wasm`, workflows as
//!   `application/vnd.attune.pack.workflow.v1+yaml`.
//!
//! Both carry the pack's name, version and description as the standard
//! `org.opencontainers.image.*` annotations.

use std::collections::BTreeMap;

use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;

use super::super::{Manifest, Upload, archive};
use super::OciError;

/// Config media type of a Wasm component artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Media type of a component layer.
pub const WASM_LAYER: &str = "application/wasm";
/// Media type of a pack's `pack.toml` layer.
pub const PACK_MANIFEST: &str = "application/vnd.attune.pack.manifest.v1+toml";
/// Media type of a workflow layer.
pub const PACK_WORKFLOW: &str = "application/vnd.attune.pack.workflow.v1+yaml";
/// Artifact type of a pack of several files.
pub const PACK_ARTIFACT: &str = "application/vnd.attune.pack.v1";
/// The empty config of an artifact that needs none.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Most files (layers) a pack artifact may hold.
pub const MAX_LAYERS: usize = 256;

/// The annotation naming a layer's file, or the artifact's title.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The annotation holding the version.
pub const VERSION: &str = "org.opencontainers.image.version";
/// The annotation holding the description.
pub const DESCRIPTION: &str = "org.opencontainers.image.description";

/// An artifact ready to push.
pub struct Artifact {
    /// Its layers.
    pub layers: Vec<ImageLayer>,
    /// Its config blob.
    pub config: Config,
    /// Its manifest.
    pub manifest: OciImageManifest,
}

fn annotations(name: &str, version: &str, description: Option<&str>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        (TITLE.to_string(), name.to_string()),
        (VERSION.to_string(), version.to_string()),
    ]);
    if let Some(d) = description {
        a.insert(DESCRIPTION.to_string(), d.to_string());
    }
    a
}

/// A single component as a Wasm OCI artifact.
pub fn single(name: &str, version: &str, description: Option<&str>, wasm: Vec<u8>) -> Artifact {
    let layer = ImageLayer::new(
        wasm,
        WASM_LAYER.into(),
        Some(BTreeMap::from([(
            TITLE.to_string(),
            format!("{name}.wasm"),
        )])),
    );
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.sha256_digest()],
    });
    let config = Config::new(
        serde_json::to_vec(&config).expect("JSON"),
        WASM_CONFIG.into(),
        None,
    );
    let layers = vec![layer];
    let manifest = OciImageManifest::build(
        &layers,
        &config,
        Some(annotations(name, version, description)),
    );
    Artifact {
        layers,
        config,
        manifest,
    }
}

/// A pack of several files (`pack.toml` among them) as an artifact.
pub fn pack(mut files: archive::Files) -> Result<Artifact, String> {
    let toml = files
        .remove("pack.toml")
        .ok_or("the pack has no pack.toml at its top level")?;
    let manifest: Manifest =
        toml::from_str(std::str::from_utf8(&toml).map_err(|_| "pack.toml is not UTF-8")?)
            .map_err(|e| format!("pack.toml: {e}"))?;
    let mut layers = vec![ImageLayer::new(
        toml,
        PACK_MANIFEST.into(),
        Some(BTreeMap::from([(
            TITLE.to_string(),
            "pack.toml".to_string(),
        )])),
    )];
    let listed = manifest
        .components
        .iter()
        .map(|f| (f, WASM_LAYER))
        .chain(manifest.workflows.iter().map(|f| (f, PACK_WORKFLOW)));
    for (file, media_type) in listed {
        let path = file.trim_start_matches("./").to_string();
        let bytes = files
            .remove(&path)
            .ok_or_else(|| format!("`{file}` is named in pack.toml but not in the pack"))?;
        layers.push(ImageLayer::new(
            bytes,
            media_type.into(),
            Some(BTreeMap::from([(TITLE.to_string(), path)])),
        ));
    }
    let config = Config::new(b"{}".to_vec(), EMPTY_CONFIG.into(), None);
    let mut oci = OciImageManifest::build(
        &layers,
        &config,
        Some(annotations(
            &manifest.name,
            &manifest.version,
            manifest.description.as_deref(),
        )),
    );
    oci.artifact_type = Some(PACK_ARTIFACT.into());
    Ok(Artifact {
        layers,
        config,
        manifest: oci,
    })
}

/// Which layers an install reads, and as what.
#[derive(Debug)]
pub enum Shape {
    /// One component: its layer.
    Single,
    /// Several files: each layer is a file titled with its path.
    Pack,
}

/// What `manifest` is, or why it is not a pack.
pub fn shape(manifest: &OciImageManifest) -> Result<Shape, OciError> {
    let wrong = |m: String| Err(OciError::WrongMediaType(m));
    if manifest.config.media_type == WASM_CONFIG {
        let [layer] = &manifest.layers[..] else {
            return wrong(format!(
                "a Wasm component artifact has one layer; this one has {}",
                manifest.layers.len()
            ));
        };
        if layer.media_type != WASM_LAYER {
            return wrong(format!(
                "its layer is `{}`, not `{WASM_LAYER}`",
                layer.media_type
            ));
        }
        return Ok(Shape::Single);
    }
    if !manifest
        .layers
        .iter()
        .any(|l| l.media_type == PACK_MANIFEST)
    {
        return wrong(format!(
            "config `{}` with no `{PACK_MANIFEST}` layer: neither a Wasm component (`{WASM_CONFIG}`) nor an Attune pack",
            manifest.config.media_type
        ));
    }
    if manifest.layers.len() > MAX_LAYERS {
        return wrong(format!(
            "{} layers: a pack has at most {MAX_LAYERS} files",
            manifest.layers.len()
        ));
    }
    let mut paths = std::collections::BTreeSet::new();
    for l in &manifest.layers {
        if ![PACK_MANIFEST, WASM_LAYER, PACK_WORKFLOW].contains(&l.media_type.as_str()) {
            return wrong(format!("a layer of a pack is `{}`", l.media_type));
        }
        let Some(name) = title(&l.annotations) else {
            return wrong(format!(
                "layer {} has no `{TITLE}` annotation naming its file",
                l.digest
            ));
        };
        // Judged before anything is fetched: a path that leaves the pack
        // (`../x`, `/etc/x`) or names a file twice is refused, as in an
        // archive.
        let path = if l.media_type == PACK_MANIFEST {
            Some("pack.toml".to_string())
        } else {
            archive::normalize(std::path::Path::new(name))
        };
        let Some(path) = path else {
            return wrong(format!(
                "layer {} names `{name}`, outside the pack",
                l.digest
            ));
        };
        if !paths.insert(path.clone()) {
            return wrong(format!("two layers are `{path}`"));
        }
    }
    Ok(Shape::Pack)
}

fn title(annotations: &Option<BTreeMap<String, String>>) -> Option<&str> {
    annotations.as_ref()?.get(TITLE).map(String::as_str)
}

/// The pack in a pulled artifact: `layers` are the bytes of each layer of
/// `manifest`, in order, already checked against their digests.
pub fn upload(
    manifest: &OciImageManifest,
    shape: Shape,
    mut layers: Vec<Vec<u8>>,
    repository: &str,
    tag: Option<&str>,
) -> Result<Upload, OciError> {
    match shape {
        Shape::Single => {
            let note = |k: &str| manifest.annotations.as_ref().and_then(|a| a.get(k));
            // A component pushed by another tool may carry no annotations:
            // the repository's last segment and the tag stand in.
            let name = note(TITLE)
                .cloned()
                .unwrap_or_else(|| pack_name_of(repository));
            let version = note(VERSION)
                .cloned()
                .or_else(|| tag.map(str::to_string))
                .ok_or_else(|| {
                    OciError::BadReference(format!(
                        "the artifact has no `{VERSION}` annotation; install it by tag"
                    ))
                })?;
            let mut upload = Upload::single(&name, &version, layers.remove(0));
            upload.manifest.description = note(DESCRIPTION).cloned();
            Ok(upload)
        }
        Shape::Pack => {
            let mut files = archive::Files::new();
            for (l, bytes) in manifest.layers.iter().zip(layers) {
                let path = if l.media_type == PACK_MANIFEST {
                    "pack.toml".to_string()
                } else {
                    title(&l.annotations)
                        .and_then(|t| archive::normalize(std::path::Path::new(t)))
                        .unwrap_or_default()
                };
                if files.insert(path.clone(), bytes).is_some() {
                    return Err(OciError::WrongMediaType(format!("two layers are `{path}`")));
                }
            }
            Upload::from_files(files).map_err(OciError::Pack)
        }
    }
}

/// `acme/Net_Tools` → `net_tools`: a pack name from a repository.
fn pack_name_of(repository: &str) -> String {
    let last = repository.rsplit('/').next().unwrap_or(repository);
    last.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '-',
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_component_is_a_wasm_artifact_with_its_annotations() {
        let a = single("greet", "1.0.0", Some("says hello"), b"\0asm".to_vec());
        assert_eq!(a.manifest.config.media_type, WASM_CONFIG);
        assert_eq!(a.manifest.layers[0].media_type, WASM_LAYER);
        let notes = a.manifest.annotations.clone().unwrap();
        assert_eq!(notes[VERSION], "1.0.0");
        assert_eq!(notes[DESCRIPTION], "says hello");
        assert!(matches!(shape(&a.manifest), Ok(Shape::Single)));
    }

    #[test]
    fn a_pack_has_one_titled_layer_per_file_and_refuses_a_missing_one() {
        let toml = "name = \"p\"\nversion = \"1\"\ncomponents = [\"a.wasm\"]\nworkflows = [\"workflows/w.yaml\"]\n";
        let mut files = archive::Files::from([
            ("pack.toml".to_string(), toml.as_bytes().to_vec()),
            ("a.wasm".to_string(), b"\0asm".to_vec()),
            ("workflows/w.yaml".to_string(), b"tasks: {}".to_vec()),
        ]);
        let a = pack(files.clone()).unwrap();
        let types: Vec<_> = a
            .manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        assert_eq!(types, [PACK_MANIFEST, WASM_LAYER, PACK_WORKFLOW]);
        assert_eq!(a.manifest.artifact_type.as_deref(), Some(PACK_ARTIFACT));
        assert!(matches!(shape(&a.manifest), Ok(Shape::Pack)));
        files.remove("a.wasm");
        assert!(pack(files).err().unwrap().contains("a.wasm"));
    }

    #[test]
    fn a_pack_whose_titles_leave_it_repeat_or_abound_is_refused_before_any_fetch() {
        let toml = "name = \"p\"\nversion = \"1\"\ncomponents = [\"a.wasm\"]\n";
        let files = archive::Files::from([
            ("pack.toml".to_string(), toml.as_bytes().to_vec()),
            ("a.wasm".to_string(), b"\0asm".to_vec()),
        ]);
        let good = pack(files).unwrap().manifest;
        let titled = |t: &str| {
            let mut m = good.clone();
            m.layers[1]
                .annotations
                .get_or_insert_default()
                .insert(TITLE.into(), t.into());
            m
        };
        for bad in ["../../etc/x", "/etc/passwd", "a/../../x"] {
            let refused = shape(&titled(bad));
            assert!(
                matches!(&refused, Err(OciError::WrongMediaType(m)) if m.contains("outside")),
                "{bad}: {refused:?}"
            );
        }
        assert!(matches!(shape(&titled("./a.wasm")), Ok(Shape::Pack)));
        let mut twice = titled("a.wasm");
        twice.layers.push(twice.layers[1].clone());
        assert!(
            matches!(shape(&twice), Err(OciError::WrongMediaType(m)) if m.contains("two layers"))
        );
        let mut many = good.clone();
        many.layers
            .extend(vec![good.layers[1].clone(); MAX_LAYERS - 1]);
        assert!(matches!(shape(&many), Err(OciError::WrongMediaType(m)) if m.contains("at most")));
    }

    #[test]
    fn an_image_is_not_a_pack() {
        let mut m = single("x", "1", None, vec![]).manifest;
        m.config.media_type = "application/vnd.oci.image.config.v1+json".into();
        assert!(matches!(shape(&m), Err(OciError::WrongMediaType(_))));
        assert_eq!(pack_name_of("acme/Net.Tools"), "net-tools");
    }
}
