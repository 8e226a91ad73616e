//! Packs compiled into the `attune` binary.
//!
//! The build script builds the guest workspace in `actions/` for
//! `wasm32-wasip2`; the core pack is embedded here so that `attune` needs no
//! files next to it to run `core.echo`.

/// The core pack component (`actions/core`): `echo`, `noop`, `sleep`, `fail`.
pub const CORE_PACK: &[u8] = include_bytes!(concat!(env!("ATTUNE_GUEST_DIR"), "/core.wasm"));

/// Directory holding every guest component built from `actions/`, test
/// guests included. For tests and benchmarks of this workspace.
#[doc(hidden)]
pub const GUEST_DIR: &str = env!("ATTUNE_GUEST_DIR");

/// The embedded pack called `name`, if there is one.
pub fn pack(name: &str) -> Option<&'static [u8]> {
    match name {
        "core" => Some(CORE_PACK),
        _ => None,
    }
}
