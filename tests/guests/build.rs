//! Builds every guest in `../../actions` for `wasm32-wasip2` (the test
//! guests beside the core pack) and tells the crate where they are.

include!("../../host/build/guests.rs");

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = build_guests(&manifest_dir, &[]);
    println!("cargo:rustc-env=ATTUNE_TEST_GUEST_DIR={}", out.display());
}
