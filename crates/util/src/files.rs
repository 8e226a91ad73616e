//! Files that hold credentials (the admin token, a client's saved token):
//! created readable by their owner only.

use std::io::Write;
use std::path::Path;

/// Writes `content` and a newline to `path`, created or truncated with mode
/// 0600 on Unix.
pub fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{content}")
}
