//! Packs compiled into the `attune` binary.
//!
//! The build script builds the core pack in `actions/core` for
//! `wasm32-wasip2`; it is embedded here so that `attune` needs no files
//! next to it to run `core.echo`.

/// The core pack component (`actions/core`): `echo`, `noop`, `sleep`, `fail`.
pub const CORE_PACK: &[u8] = include_bytes!(concat!(env!("ATTUNE_GUEST_DIR"), "/core.wasm"));

/// The embedded pack called `name`, if there is one.
pub fn pack(name: &str) -> Option<&'static [u8]> {
    match name {
        "core" => Some(CORE_PACK),
        _ => None,
    }
}
