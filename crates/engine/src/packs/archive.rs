//! Reading an uploaded `.tar.gz` pack safely into memory.
//!
//! Only regular files and directories are accepted; absolute paths, `..`
//! components, links and device entries are refused (nothing is ever
//! written to disk from the archive). Entry count and total unpacked size are
//! capped so a small archive cannot expand without bound.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use super::PackError;

/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 1000;

/// Files of an archive, keyed by their normalized relative path.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Unpacks a gzip-compressed tar archive into memory.
pub fn unpack(bytes: &[u8], max_unpacked: u64) -> Result<Files, PackError> {
    let bad = |m: String| PackError::BadArchive(m);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files = Files::new();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| bad(format!("entry {i}: unreadable path: {e}")))?
            .into_owned();
        let shown = raw_path.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            normalize(&raw_path).ok_or_else(|| bad(format!("`{shown}` escapes the archive")))?;
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(bad(format!(
                "`{shown}` is a {kind:?} entry; only regular files and directories are allowed"
            )));
        }
        let path =
            normalize(&raw_path).ok_or_else(|| bad(format!("`{shown}` escapes the archive")))?;
        let size = entry.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > max_unpacked {
            return Err(PackError::TooLarge(format!(
                "the archive unpacks to more than {max_unpacked} bytes"
            )));
        }
        let mut data = Vec::with_capacity(size.min(max_unpacked) as usize);
        entry
            .by_ref()
            .take(max_unpacked)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("`{shown}`: {e}")))?;
        if files.insert(path.clone(), data).is_some() {
            return Err(bad(format!("`{path}` appears twice")));
        }
    }
    Ok(files)
}

/// `./a/b.wasm` → `a/b.wasm`; `None` for absolute paths or any `..`.
pub(crate) fn normalize(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_paths_and_refuses_escapes() {
        assert_eq!(
            normalize(Path::new("./a/b.wasm")).as_deref(),
            Some("a/b.wasm")
        );
        assert_eq!(
            normalize(Path::new("pack.toml")).as_deref(),
            Some("pack.toml")
        );
        assert_eq!(normalize(Path::new("../x")), None);
        assert_eq!(normalize(Path::new("a/../../x")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }
}
