//! Secrets the action's pack is granted, from `attune:action/secrets`.
//!
//! An admin sets a value on the server (`attune secret set NAME`) and grants
//! the name to the pack (`secrets = ["NAME"]` in `pack.toml`); locally,
//! `attune action run --secret NAME=VALUE`. Whatever the action prints,
//! logs or returns has every granted value replaced by `********`.

use crate::bindings::attune::action::secrets as host;

pub use host::Error;

/// Returns the value of the secret `name`: [`Error::Denied`] when the pack
/// is not granted it, [`Error::NotFound`] when no value is set.
///
/// ```ignore
/// let token = attune_sdk::secrets::get("slack_token")?;
/// ```
pub fn get(name: &str) -> Result<String, Error> {
    host::get(name)
}
