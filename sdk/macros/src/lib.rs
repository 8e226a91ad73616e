//! Procedural macros behind `attune-sdk`.
//!
//! `generate!` resolves the author's WIT world together with the `attune:action`
//! package shipped with the SDK, expands to `wit_bindgen::generate!` wired to the
//! SDK's own bindings (so `attune_sdk::log` and `attune_sdk::context` work with the
//! author's generated code), and embeds the world's doc comments in a custom
//! section named `attune:docs`. Components built by `wasm-component-ld` drop WIT
//! docs; the host reads this section instead to describe each action.

use std::path::{Path, PathBuf};

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};
use wit_parser::Resolve;

mod docs;

/// Where the `attune:action` WIT package lives, relative to this crate.
const SDK_WIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");

/// Name of the custom section that carries doc comments; read by the host.
const DOCS_SECTION: &str = "attune:docs";

struct Input {
    world: LitStr,
    path: Option<LitStr>,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let world: LitStr = input.parse()?;
        let mut path = None;
        if input.parse::<Option<Token![,]>>()?.is_some() && !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if key != "path" {
                return Err(syn::Error::new(key.span(), "expected `path = \"...\"`"));
            }
            input.parse::<Token![=]>()?;
            path = Some(input.parse()?);
            input.parse::<Option<Token![,]>>()?;
        }
        Ok(Input { world, path })
    }
}

/// Generates bindings for an action world and embeds its docs.
///
/// `generate!("my-world")` reads `wit/` next to `Cargo.toml`;
/// `generate!("my-world", path = "other/dir")` reads another folder.
#[proc_macro]
pub fn generate(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as Input);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(message) => syn::Error::new(input.world.span(), message)
            .to_compile_error()
            .into(),
    }
}

fn expand(input: &Input) -> Result<proc_macro2::TokenStream, String> {
    let root = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").map_err(|_| "CARGO_MANIFEST_DIR is not set")?,
    );
    let author_wit = root.join(input.path.as_ref().map_or("wit".into(), |p| p.value()));
    let author_wit = canonical(&author_wit)?;
    let sdk_wit = canonical(Path::new(SDK_WIT))?;

    let mut resolve = Resolve::default();
    resolve
        .push_path(&sdk_wit)
        .map_err(|e| format!("attune:action WIT: {e:#}"))?;
    let (pkg, _) = resolve
        .push_path(&author_wit)
        .map_err(|e| format!("{}: {e:#}", author_wit.display()))?;
    let world_id = resolve
        .select_world(&[pkg], Some(&input.world.value()))
        .map_err(|e| format!("{e:#}"))?;
    let world = &resolve.worlds[world_id];
    let pkg_name = &resolve.packages[pkg].name;
    let qualified = match &pkg_name.version {
        Some(v) => format!(
            "{}:{}/{}@{v}",
            pkg_name.namespace, pkg_name.name, world.name
        ),
        None => format!("{}:{}/{}", pkg_name.namespace, pkg_name.name, world.name),
    };

    let docs = docs::section(&resolve, world_id);
    let docs_len = docs.len();
    let docs_bytes = syn::LitByteStr::new(docs.as_bytes(), Span::call_site());

    let sdk_wit = sdk_wit.to_string_lossy().into_owned();
    let author_wit = author_wit.to_string_lossy().into_owned();
    Ok(quote! {
        ::attune_sdk::wit_bindgen::generate!({
            world: #qualified,
            path: [#sdk_wit, #author_wit],
            runtime_path: "::attune_sdk::wit_bindgen::rt",
            bitflags_path: "::attune_sdk::wit_bindgen::bitflags",
            with: {
                "attune:action/log@0.1.0": ::attune_sdk::bindings::attune::action::log,
                "attune:action/context@0.1.0": ::attune_sdk::bindings::attune::action::context,
                "attune:action/secrets@0.1.0": ::attune_sdk::bindings::attune::action::secrets,
                "attune:action/kv@0.1.0": ::attune_sdk::bindings::attune::action::kv,
            },
        });

        #[doc(hidden)]
        #[used]
        #[unsafe(link_section = #DOCS_SECTION)]
        static __ATTUNE_DOCS: [u8; #docs_len] = *#docs_bytes;
    })
}

fn canonical(path: &Path) -> Result<PathBuf, String> {
    path.canonicalize()
        .map_err(|e| format!("cannot read WIT folder {}: {e}", path.display()))
}
