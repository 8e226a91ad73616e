//! Builds the guest components in `../actions` for `wasm32-wasip2` and tells
//! the crate where they are (`ATTUNE_GUEST_DIR`), so the core pack can be
//! embedded and tests can load the test guests. One nested cargo build per
//! change of the guest sources; its target dir is `actions/target`.

use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
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
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
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
    let out = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=ATTUNE_GUEST_DIR={}", out.display());
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
