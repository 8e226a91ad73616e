//! Write Attune actions as ordinary Rust functions over WIT types.
//!
//! An action pack is a WASI preview-2 component. Its WIT world `include`s
//! `attune:action/action@0.1.0` and exports functions; each exported function is
//! one action. With this crate the Rust side is a few lines:
//!
//! ```ignore
//! attune_sdk::generate!("greeter");
//!
//! struct Greeter;
//!
//! impl Guest for Greeter {
//!     /// Says hello.
//!     fn greet(name: String) -> String {
//!         attune_sdk::log::info(&format!("greeting {name}"));
//!         format!("hello, {name}")
//!     }
//! }
//!
//! export!(Greeter);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and run it with
//! `attune action run target/wasm32-wasip2/release/greeter.wasm greet -p name=world`.
//! See the crate README for the whole walk-through.
#![deny(missing_docs)]

pub use attune_sdk_macros::generate;

/// The bindings generator, re-exported so action crates need only this crate.
///
/// ```ignore
/// // `attune_sdk::generate!` expands to this macro with the SDK's settings.
/// use attune_sdk::wit_bindgen;
/// ```
pub use wit_bindgen;

/// Raw bindings to the `attune:action` host interfaces.
///
/// Prefer the [`log`], [`context`], [`secrets`] and [`kv`] helpers; these are here so that
/// [`generate!`] can share one set of types with every action crate.
///
/// ```ignore
/// use attune_sdk::bindings::attune::action::log::{log, Level};
/// log(Level::Info, "raw call", &[]);
/// ```
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "action",
        path: "../wit",
        runtime_path: "wit_bindgen::rt",
        bitflags_path: "wit_bindgen::bitflags",
        generate_all,
    });
}

pub mod context;
pub mod http;
pub mod kv;
pub mod log;
pub mod secrets;
