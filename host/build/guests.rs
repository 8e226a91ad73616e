// The guest build shared by the build scripts of `attune` (the core
// pack it embeds) and `attune-test-guests` (every guest, for tests only):
// included with `include!` by both, since build scripts cannot share a
// module otherwise without a crate of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Builds `packages` of the guest workspace in `../actions` (all of them
/// when empty) for `wasm32-wasip2` in release mode, and returns the folder
/// holding the components. `manifest_dir` is the calling crate's, inside
/// the repository.
fn build_guests(manifest_dir: &Path, packages: &[&str]) -> PathBuf {
    let root = manifest_dir
        .ancestors()
        .find(|d| d.join("actions").join("Cargo.toml").exists())
        .expect("the repository root, holding actions/")
        .to_path_buf();
    let actions = root.join("actions");
    for path in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", actions.join(path).display());
    }
    for dir in std::fs::read_dir(&actions).unwrap().flatten() {
        let path = dir.path();
        if path.join("Cargo.toml").exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", root.join("sdk/src").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("sdk/macros/src").display()
    );
    println!("cargo:rerun-if-env-changed=ATTUNE_GUEST_TARGET_DIR");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = std::env::var_os("ATTUNE_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| actions.join("target"));

    ensure_target();
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&actions)
        .args(["build", "--release", "--target", TARGET]);
    if packages.is_empty() {
        cmd.arg("--workspace");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    cmd.arg("--target-dir").arg(&target_dir);
    // The outer build's settings must not leak into the guest build: clippy's
    // wrapper, host rustflags, the outer target dir and profile.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running `{cargo} build` for the guests: {e}"));
    if !status.success() {
        panic!(
            "building the guest components in {} failed",
            actions.display()
        );
    }
    target_dir.join(TARGET).join("release")
}

/// Installs the wasm32-wasip2 standard library through rustup when missing.
fn ensure_target() {
    let installed = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .map(|sysroot| sysroot.join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("the {TARGET} target is missing: run `rustup target add {TARGET}`");
    }
}
