//! Which host interfaces this build links, and so what a worker advertises
//! and what an action must ask for.
//!
//! Linking is not granting: every worker links the standard WASI packages
//! ([`BASELINE_PACKAGES`]) so components from any toolchain instantiate,
//! while the sandbox denies what is not granted. What an action requires from
//! a worker is what not every worker links — the runtime kind, `wasi:http`,
//! the `attune:*` interfaces. Each host interface is one module (`log.rs`,
//! `context.rs`, `secrets.rs`, `kv.rs`, `http/`) naming its capabilities and its linker; [`HOST`] composes
//! them, and the advertised list is derived from it.

use wasmtime::component::Linker;

use super::host::HostState;

/// The runtime kind every Attune worker offers.
pub const RUNTIME_KIND: &str = "wasi-p2-component";

/// WASI packages every worker links, so needing them requires nothing.
pub const BASELINE_PACKAGES: &[&str] = &[
    "wasi:cli",
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:filesystem",
    "wasi:sockets",
];

/// One host interface: the capabilities it adds and how it is linked.
pub struct HostCapability {
    /// The strings a worker advertises and an action requires.
    pub names: &'static [&'static str],
    /// Adds its functions to the linker.
    pub link: fn(&mut Linker<HostState>) -> wasmtime::Result<()>,
}

/// Every host interface beyond the WASI baseline, in one list.
pub const HOST: &[HostCapability] = &[
    HostCapability {
        names: &[super::log::CAPABILITY],
        link: |l| super::log::add_to_linker(l, |s: &mut HostState| &mut s.log),
    },
    HostCapability {
        names: &[super::context::CAPABILITY],
        link: |l| super::context::add_to_linker(l, |s: &mut HostState| &mut s.context),
    },
    HostCapability {
        names: &[super::secrets::CAPABILITY],
        link: |l| super::secrets::add_to_linker(l, |s: &mut HostState| &mut s.secrets),
    },
    HostCapability {
        names: &[super::kv::CAPABILITY],
        link: |l| super::kv::add_to_linker(l, |s: &mut HostState| &mut s.kv),
    },
    HostCapability {
        names: super::http::CAPABILITIES,
        link: super::http::add_to_linker::<HostState>,
    },
];

/// Links every host interface of [`HOST`].
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for c in HOST {
        (c.link)(linker)?;
    }
    Ok(())
}

/// What a worker of this build advertises: the runtime kind and every host
/// interface it links.
pub fn advertised() -> Vec<String> {
    std::iter::once(RUNTIME_KIND)
        .chain(HOST.iter().flat_map(|c| c.names.iter().copied()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_advertises_the_runtime_and_each_linked_interface() {
        assert_eq!(
            advertised(),
            [
                "wasi-p2-component",
                "attune:action/log@0.1.0",
                "attune:action/context@0.1.0",
                "attune:action/secrets@0.1.0",
                "attune:action/kv@0.1.0",
                "wasi:http/outgoing-handler@0.2",
                "wasi:http/types@0.2"
            ]
        );
    }
}
