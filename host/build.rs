//! Builds the core pack (`../actions/core`) for `wasm32-wasip2` and tells
//! the crate where it is (`ATTUNE_GUEST_DIR`), so it can be embedded. Test
//! guests are built by `attune-test-guests`, which only tests and benches
//! depend on: the product build compiles no guest it does not ship.

include!("build/guests.rs");

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = build_guests(&manifest_dir, &["core"]);
    println!("cargo:rustc-env=ATTUNE_GUEST_DIR={}", out.display());
    println!("cargo:rustc-env=ATTUNE_COMMIT={}", commit(&manifest_dir));
}

/// The commit being built, for `attune --version`: its short hash, or
/// `unknown` outside a git checkout (a source archive). Rerun when the
/// checked-out commit moves, not on every edit.
fn commit(manifest_dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(manifest_dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(head).display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}
