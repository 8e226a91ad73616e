//! The WIT of an action project: the `attune:action` and WASI packages the
//! toolchains need beside it, reading it into one world, and the docs
//! section made from it.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use attune_runtime::DOCS_SECTION;

#[path = "../../../../sdk/macros/src/docs.rs"]
mod docs;

/// The `attune:action` WIT package every action world includes.
pub(super) const ACTION_WIT: &str = include_str!("../../../../wit/action.wit");
/// Where the `attune:action` WIT goes inside a project's `wit/` folder.
pub(super) const ACTION_WIT_DEP: &str = "deps/attune-action/action.wit";

/// The WASI packages `wasi:http` needs, as the host links them; written to
/// `wit/deps/wasi-<name>/` of a Python or JavaScript project that imports
/// `wasi:http/outgoing-handler`, since componentize-py and componentize-js
/// resolve WIT only from the project.
const WASI_WIT: &[(&str, &str)] = &[
    ("cli", include_str!("../../../../wit/wasi/cli.wit")),
    ("clocks", include_str!("../../../../wit/wasi/clocks.wit")),
    (
        "filesystem",
        include_str!("../../../../wit/wasi/filesystem.wit"),
    ),
    ("http", include_str!("../../../../wit/wasi/http.wit")),
    ("io", include_str!("../../../../wit/wasi/io.wit")),
    ("random", include_str!("../../../../wit/wasi/random.wit")),
    ("sockets", include_str!("../../../../wit/wasi/sockets.wit")),
];

/// What a Python or JavaScript world imports to send HTTP requests.
pub(super) const WASI_HTTP_IMPORT: &str = "wasi:http/outgoing-handler@0.2.12";

/// Each WASI package: its path inside a project's `wit/` folder, and its text.
pub(super) fn wasi_deps() -> impl Iterator<Item = (String, &'static str)> {
    WASI_WIT
        .iter()
        .map(|(package, text)| (format!("deps/wasi-{package}/{package}.wit"), *text))
}

/// Appends the `attune:docs` custom section, made from the project's WIT,
/// to the component at `out`, so actions carry their descriptions.
pub(super) fn append_docs(
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
    out: &Path,
) -> anyhow::Result<()> {
    let section = custom_section(DOCS_SECTION, docs::section(resolve, world).as_bytes());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    file.write_all(&section)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// A WebAssembly custom section: id 0, size, name, data. Valid at the end
/// of a component as well as of a module.
fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::with_capacity(name.len() + data.len() + 5);
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut section = vec![0u8];
    leb128(body.len(), &mut section);
    section.extend_from_slice(&body);
    section
}

/// Parses the project's WIT folder (with `attune:action` from this binary
/// when the folder does not carry it) and picks the world: `world`, or the
/// only one the project's package declares.
pub(super) fn read_wit(
    wit: &Path,
    world: Option<&str>,
) -> anyhow::Result<(wit_parser::Resolve, wit_parser::WorldId)> {
    let mut resolve = wit_parser::Resolve::default();
    if !wit.join(ACTION_WIT_DEP).exists() {
        resolve.push_str("attune-action.wit", ACTION_WIT)?;
    }
    let (pkg, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let id = match world {
        Some(w) => resolve.select_world(&[pkg], Some(w))?,
        None => {
            let worlds: Vec<_> = resolve.packages[pkg].worlds.iter().collect();
            match worlds.as_slice() {
                [(_, id)] => **id,
                [] => bail!("{} declares no world", wit.display()),
                many => bail!(
                    "{} declares several worlds ({}); choose one with --world",
                    wit.display(),
                    many.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    Ok((resolve, id))
}

/// Whether `world` imports an interface of `package` (`wasi:http`).
pub(super) fn imports_package(
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
    package: &str,
) -> bool {
    let prefix = format!("{package}/");
    resolve.worlds[world]
        .imports
        .keys()
        .any(|key| resolve.name_world_key(key).starts_with(&prefix))
}

/// Puts the `attune:action` WIT where the toolchains look for dependencies,
/// when the project does not carry it already.
pub(super) fn ensure_action_wit(wit: &Path) -> anyhow::Result<()> {
    add_dep(wit, ACTION_WIT_DEP, ACTION_WIT, "the attune:action WIT")
}

/// Adds the WASI packages to `wit/deps/` when a world file of the project
/// mentions `wasi:http` and they are not there yet.
pub(super) fn ensure_wasi_wit(wit: &Path) -> anyhow::Result<()> {
    let mentions_http = std::fs::read_dir(wit)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wit"))
        .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("wasi:http/")));
    if mentions_http {
        for (dep, text) in wasi_deps() {
            add_dep(wit, &dep, text, "WASI 0.2.12")?;
        }
    }
    Ok(())
}

/// Writes `text` at `dep` under `wit/` unless something is there already.
fn add_dep(wit: &Path, dep: &str, text: &str, what: &str) -> anyhow::Result<()> {
    let dep = wit.join(dep);
    if dep.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dep.parent().expect("has a parent"))?;
    std::fs::write(&dep, text).with_context(|| format!("writing {}", dep.display()))?;
    eprintln!("added {} ({what})", dep.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_sections_parse_back() {
        let data = vec![b'x'; 300];
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend(custom_section("attune:docs", &data));
        let payloads: Vec<_> = wasmparser::Parser::new(0)
            .parse_all(&module)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(payloads.iter().any(|p| matches!(p,
            wasmparser::Payload::CustomSection(c) if c.name() == "attune:docs" && c.data() == data)));
    }

    #[test]
    fn the_world_is_the_one_declared_or_the_one_named() {
        let dir = tempfile::tempdir().unwrap();
        // A Rust project's WIT: attune:action comes from this binary.
        std::fs::write(
            dir.path().join("w.wit"),
            "package a:b;\n/// the world greet does things\nworld greet {\n  include attune:action/action@0.1.0;\n  export hi: func() -> string;\n}\n",
        )
        .unwrap();
        let (resolve, id) = read_wit(dir.path(), None).unwrap();
        assert_eq!(resolve.worlds[id].name, "greet");
        assert!(!imports_package(&resolve, id, "wasi:http"));
        assert!(imports_package(&resolve, id, "attune:action"));

        std::fs::write(dir.path().join("x.wit"), "package a:b;\nworld other {}\n").unwrap();
        let err = read_wit(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("greet, other") && err.contains("--world"),
            "{err}"
        );
        let (resolve, id) = read_wit(dir.path(), Some("other")).unwrap();
        assert_eq!(resolve.worlds[id].name, "other");
    }
}
