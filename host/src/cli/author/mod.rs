//! `attune action new|build`: scaffold and build action packs in Rust,
//! Python or JavaScript.
//!
//! Every language starts from the same WIT world and ends in one component
//! file, `build/<world>.wasm`, that `action inspect|run` and `pack upload`
//! take as they are. Python and JavaScript toolchains are installed on first
//! use into a tool directory of the project (`.attune/tools`), never globally.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use attune_runtime::{Limits, LoadError};

mod toolchains;
mod wit;

use toolchains::{Progress, build_rust, js_toolchain, python_toolchain, step};
use wit::{
    ACTION_WIT, ACTION_WIT_DEP, WASI_HTTP_IMPORT, append_docs, ensure_action_wit, ensure_wasi_wit,
    imports_package, read_wit, wasi_deps,
};

/// componentize-py release `attune action build` installs for Python.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js release `attune action build` installs for JavaScript.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The Python SDK module, put on the build path as `attune`.
const PYTHON_SDK: &str = include_str!("../../../../sdk/python/attune.py");
/// The JavaScript SDK module, written to `.attune/sdk/attune.js`.
const JS_SDK: &str = include_str!("../../../../sdk/js/attune.js");
/// The Rust SDK crate this binary was built with, when it is still there.
const RUST_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// A language an action pack can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with the `attune-sdk` crate, built by cargo for `wasm32-wasip2`.
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript (ES modules), built by componentize-js.
    Js,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
        }
    }

    /// The language of the project in `dir`, from the file that holds its code.
    fn detect(dir: &Path) -> anyhow::Result<Lang> {
        let found: Vec<Lang> = [Lang::Rust, Lang::Python, Lang::Js]
            .into_iter()
            .filter(|l| match l {
                Lang::Rust => dir.join("Cargo.toml").is_file(),
                other => dir.join(other.source()).is_file(),
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "{} holds no Cargo.toml, app.py or app.js; create a project with `attune action new <name> --lang rust|python|js`",
                dir.display()
            ),
            _ => bail!(
                "{} holds code in several languages; say which to build with --lang",
                dir.display()
            ),
        }
    }
}

/// `attune action new` arguments.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The pack's name: lowercase words joined by `-` (`disk-check`). It names
    /// the WIT world, the directory and the built component.
    pub name: String,
    /// The language to write the actions in.
    #[arg(long, value_enum, default_value = "rust")]
    pub lang: Lang,
    /// Where to create the project; defaults to `./<name>`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The `attune-sdk` crate for Rust projects; defaults to the one this
    /// binary was built from.
    #[arg(long, env = "ATTUNE_SDK_PATH")]
    pub sdk: Option<PathBuf>,
    /// Scaffold an action that calls an HTTP API (with a secret) through
    /// `wasi:http` instead of the greeting.
    #[arg(long)]
    pub http: bool,
}

/// `attune action build` arguments.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The language, when the directory does not make it clear.
    #[arg(long, value_enum)]
    pub lang: Option<Lang>,
    /// The WIT world to build, when `wit/` declares several.
    #[arg(long)]
    pub world: Option<String>,
    /// Where to write the component; defaults to `build/<world>.wasm`.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Where Python and JavaScript toolchains are installed; defaults to
    /// `.attune/tools` in the project. Share one between projects to install once.
    #[arg(long, env = "ATTUNE_TOOLS_DIR")]
    pub tools_dir: Option<PathBuf>,
}

/// Creates a ready-to-build project.
pub fn new(args: NewArgs) -> anyhow::Result<i32> {
    let name = args.name.as_str();
    check_name(name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} already exists and is not empty", dir.display());
    }
    let world = if args.http {
        // The Rust SDK brings wasi:http itself; the other toolchains need the
        // import in the world to link it.
        let import = match args.lang {
            Lang::Rust => String::new(),
            Lang::Python | Lang::Js => format!("    import {WASI_HTTP_IMPORT};\n"),
        };
        include_str!("templates/world-http.wit").replace("{{import}}\n", &import)
    } else {
        include_str!("templates/world.wit").to_string()
    };
    let example = if args.http {
        "fetch -p url=https://example.com --allow-outbound https://example.com"
    } else {
        "greet -p name=world -p times=2"
    };
    let mut files: Vec<(String, String)> = vec![
        ("wit/world.wit".into(), fill(&world, name)),
        (
            ".gitignore".into(),
            include_str!("templates/gitignore").to_string(),
        ),
        (
            "README.md".into(),
            fill(include_str!("templates/README.md"), name)
                .replace("{{language}}", args.lang.label())
                .replace("{{source}}", &format!("`{}`", args.lang.source()))
                .replace("{{example}}", example),
        ),
    ];
    match args.lang {
        Lang::Rust => {
            let sdk = args.sdk.unwrap_or_else(|| PathBuf::from(RUST_SDK));
            let sdk = sdk.canonicalize().with_context(|| {
                format!(
                    "the attune-sdk crate is not at {}; pass --sdk <path to attune's sdk/ folder>",
                    sdk.display()
                )
            })?;
            let sdk = sdk.to_string_lossy().replace('\\', "/");
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("templates/Cargo.toml.tmpl"), name).replace("{{sdk}}", &sdk),
            ));
            let lib = if args.http {
                include_str!("templates/lib-http.rs")
            } else {
                include_str!("templates/lib.rs")
            };
            files.push(("src/lib.rs".into(), fill(lib, name)));
        }
        Lang::Python | Lang::Js => {
            let app = match (args.lang, args.http) {
                (Lang::Python, false) => include_str!("templates/app.py"),
                (Lang::Python, true) => include_str!("templates/app-http.py"),
                (_, false) => include_str!("templates/app.js"),
                (_, true) => include_str!("templates/app-http.js"),
            };
            files.push((args.lang.source().into(), app.to_string()));
            files.push((format!("wit/{ACTION_WIT_DEP}"), ACTION_WIT.to_string()));
            if args.http {
                for (dep, text) in wasi_deps() {
                    files.push((format!("wit/{dep}"), text.to_string()));
                }
            }
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {} ({}): edit wit/world.wit and {}, then run `attune action build` in it",
        dir.display(),
        args.lang.label(),
        args.lang.source()
    );
    Ok(0)
}

fn fill(template: &str, name: &str) -> String {
    template.replace("{{name}}", name)
}

/// WIT keywords that cannot name a world without escaping.
const WIT_KEYWORDS: &[&str] = &[
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "export",
    "f32",
    "f64",
    "flags",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world",
    "option",
];

/// A pack name must be a WIT identifier (it names the world) and a pack name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let words_ok = !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|w| {
            w.starts_with(|c: char| c.is_ascii_lowercase())
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !words_ok {
        bail!(
            "`{name}` is not a valid pack name: use lowercase words of letters and digits, each starting with a letter, joined by `-` (e.g. `disk-check`)"
        );
    }
    if WIT_KEYWORDS.contains(&name) {
        bail!("`{name}` is a WIT keyword; choose another pack name");
    }
    Ok(())
}

/// Builds the project in `args.dir` into one component and checks it loads.
pub async fn build(args: BuildArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<i32> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("no project at {}", args.dir.display()))?;
    let lang = match args.lang {
        Some(l) => l,
        None => Lang::detect(&dir)?,
    };
    let wit = dir.join("wit");
    if !wit.is_dir() {
        bail!("{} is missing (the project's WIT folder)", wit.display());
    }
    if lang != Lang::Rust {
        // The Rust SDK brings this WIT itself; the other toolchains read it here.
        ensure_action_wit(&wit)?;
        ensure_wasi_wit(&wit)?;
    }
    let (resolve, world_id) = read_wit(&wit, args.world.as_deref())?;
    let world = resolve.worlds[world_id].name.clone();
    let out = match args.out {
        Some(out) => out,
        None => dir.join("build").join(format!("{world}.wasm")),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tools = args
        .tools_dir
        .unwrap_or_else(|| dir.join(".attune").join("tools"));
    let started = Instant::now();
    eprintln!("building `{world}` ({}) in {}", lang.label(), dir.display());
    match lang {
        Lang::Rust => build_rust(&dir, &out)?,
        Lang::Python => {
            let sdk = write_sdk(&dir, "attune.py", PYTHON_SDK)?;
            let tool = python_toolchain(&tools)?;
            let mut cmd = Command::new(tool);
            cmd.current_dir(&dir)
                .args(["-d", "wit", "-w", &world, "componentize", "app"])
                .args(["-p", ".", "-p"])
                .arg(&sdk)
                .arg("-o")
                .arg(absolute(&out)?);
            step(
                "componentize-py: compiling the Python app into a component",
                cmd,
            )?;
        }
        Lang::Js => {
            write_sdk(&dir, "attune.js", JS_SDK)?;
            let tool = js_toolchain(&tools)?;
            let mut cmd = Command::new(tool);
            cmd.current_dir(&dir)
                .args(["app.js", "-w", "wit", "-n", &world])
                .arg("-o")
                .arg(absolute(&out)?);
            if !imports_package(&resolve, world_id, "wasi:http") {
                // Without this the component imports wasi:http and a worker
                // would need that capability to run it.
                cmd.args(["-d", "http", "fetch-event"]);
            }
            step(
                "componentize-js: compiling the JavaScript app into a component",
                cmd,
            )?;
        }
    }
    if lang != Lang::Rust {
        // The Rust SDK embeds the docs itself; the other toolchains drop them.
        append_docs(&resolve, world_id, &out)?;
    }
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the build wrote no {}", out.display()))?
        .len();

    // Compile for this machine now, so the first run loads a cached artifact.
    let rt = super::local::local_runtime(
        runtime,
        Limits::default(),
        attune_runtime::http::OutboundConfig::default(),
    )?;
    let path = out.to_string_lossy().into_owned();
    let loading = Instant::now();
    let progress = Progress::start("compiling for this machine (cached for later runs)");
    let loaded = super::local::load(&rt, &path).await;
    drop(progress);
    let pack =
        loaded.map_err(|e: LoadError| anyhow::anyhow!("{} does not load: {e:#}", out.display()))?;
    let actions: Vec<&str> = pack
        .actions()
        .iter()
        .map(|a| a.info().name.as_str())
        .collect();
    eprintln!(
        "built {} ({:.1} MB) in {:.1} s (compile {:.1} s); actions: {}",
        out.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        loading.elapsed().as_secs_f64(),
        actions.join(", ")
    );
    println!("{}", out.display());
    Ok(0)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Writes an SDK module into `.attune/sdk/` of the project; returns the folder.
fn write_sdk(dir: &Path, file: &str, text: &str) -> anyhow::Result<PathBuf> {
    let sdk = dir.join(".attune").join("sdk");
    std::fs::create_dir_all(&sdk).with_context(|| format!("creating {}", sdk.display()))?;
    std::fs::write(sdk.join(file), text)
        .with_context(|| format!("writing {}", sdk.join(file).display()))?;
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_are_wit_identifiers() {
        for good in ["greet", "disk-check", "s3-sync", "a1"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "Greet",
            "disk_check",
            "-x",
            "x-",
            "1x",
            "x-1y",
            "a b",
            "world",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} passed");
        }
    }
}
