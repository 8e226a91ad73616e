//! The guest components of `actions/`, test guests included, built for
//! `wasm32-wasip2` by this crate's build script. Only tests and benches
//! depend on it, so the product build compiles no guest it does not ship
//! (the same pattern as wasmtime's `test-programs-artifacts`).

/// Directory holding every guest component built from `actions/`.
pub const GUEST_DIR: &str = env!("ATTUNE_TEST_GUEST_DIR");
