//! Component files on disk, content-addressed, through a cap-std directory.
//!
//! The database holds every component's bytes; this directory is a local
//! copy named `<sha256>.wasm`, written once and never modified. All access
//! goes through a `cap_std::fs::Dir`, so a name can never reach outside it.

use std::io::Write;
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// The component directory.
pub struct ComponentFiles {
    dir: Dir,
}

impl ComponentFiles {
    /// Opens (creating) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        Ok(Self {
            dir: Dir::open_ambient_dir(path, ambient_authority())?,
        })
    }

    fn name(digest: &str) -> std::io::Result<String> {
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(format!("{digest}.wasm"))
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a sha256 digest",
            ))
        }
    }

    /// Writes the component unless a file with this digest exists.
    pub fn store(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let name = Self::name(digest)?;
        if self.dir.exists(&name) {
            return Ok(());
        }
        let tmp = format!("{name}.tmp-{}", std::process::id());
        let mut file = self.dir.create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        self.dir.rename(&tmp, &self.dir, &name)
    }

    /// Reads a component by digest.
    pub fn read(&self, digest: &str) -> std::io::Result<Vec<u8>> {
        self.dir.read(Self::name(digest)?)
    }
}
