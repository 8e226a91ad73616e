//! The toolchains `attune action build` drives: cargo for Rust (with the
//! `wasm32-wasip2` target), componentize-py and componentize-js installed
//! once into a shared tools directory, and progress while they run.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{COMPONENTIZE_JS, COMPONENTIZE_PY};

pub(super) fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd
        .spawn()
        .context("running cargo (is Rust installed? https://rustup.rs)")?
        .wait_with_output()?;
    if !output.status.success() {
        bail!("cargo build failed ({})", output.status);
    }
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .filter_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        })
        .next()
        .context("cargo built no .wasm component; is the crate a `cdylib`?")?;
    std::fs::copy(&artifact, out)
        .with_context(|| format!("copying {} to {}", artifact.display(), out.display()))?;
    Ok(())
}

/// Adds the `wasm32-wasip2` target through rustup when it is missing.
pub(super) fn ensure_wasm_target() -> anyhow::Result<()> {
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output();
    let installed = libdir.as_ref().is_ok_and(|o| {
        o.status.success() && Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir()
    });
    if installed {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", "wasm32-wasip2"]);
    step("adding the wasm32-wasip2 target (first build only)", cmd)
}

/// Holds `<tools>/.lock` so that builds sharing a tool directory install
/// each toolchain once, one at a time.
pub(super) fn lock_tools(tools: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(tools).with_context(|| format!("creating {}", tools.display()))?;
    let lock = std::fs::File::create(tools.join(".lock"))
        .with_context(|| format!("creating {}", tools.join(".lock").display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", tools.display()))?;
    Ok(lock)
}

/// componentize-py in a venv under `tools`, installed when missing.
pub(super) fn python_toolchain(tools: &Path) -> anyhow::Result<PathBuf> {
    let _lock = lock_tools(tools)?;
    let venv = tools.join("venv");
    let bin = venv.join("bin").join("componentize-py");
    let wanted = format!("componentize-py {COMPONENTIZE_PY}");
    let have = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if have.as_deref() == Some(wanted.as_str()) {
        return Ok(bin);
    }
    if !venv.join("bin").join("pip").exists() {
        let python = std::env::var_os("ATTUNE_PYTHON").unwrap_or_else(|| "python3".into());
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "venv"]).arg(&venv);
        step(
            &format!("creating a Python venv in {}", venv.display()),
            cmd,
        )
        .context("Python 3.10 or newer with the venv module is needed to build Python actions (set ATTUNE_PYTHON to choose the interpreter)")?;
    }
    let mut cmd = Command::new(venv.join("bin").join("pip"));
    cmd.args([
        "install",
        "--disable-pip-version-check",
        "--quiet",
        &format!("componentize-py=={COMPONENTIZE_PY}"),
    ]);
    step(
        &format!("installing componentize-py {COMPONENTIZE_PY} (first build only)"),
        cmd,
    )?;
    Ok(bin)
}

/// componentize-js in an npm prefix under `tools`, installed when missing.
pub(super) fn js_toolchain(tools: &Path) -> anyhow::Result<PathBuf> {
    let _lock = lock_tools(tools)?;
    let prefix = tools.join("npm");
    let package = prefix.join("node_modules/@bytecodealliance/componentize-js");
    let bin = prefix.join("node_modules/.bin/componentize-js");
    let version = std::fs::read(package.join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    if version.as_deref() == Some(COMPONENTIZE_JS) && bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund", "--loglevel", "error"])
        .arg("--prefix")
        .arg(&prefix)
        .arg(format!(
            "@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"
        ));
    step(
        &format!("installing componentize-js {COMPONENTIZE_JS} (first build only)"),
        cmd,
    )
    .context("Node.js 18 or newer with npm is needed to build JavaScript actions")?;
    Ok(bin)
}

/// Runs one slow step, showing what it is and how long it has taken.
pub(super) fn step(what: &str, mut cmd: Command) -> anyhow::Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let progress = Progress::start(what);
    // Stdout carries only the built component's path; tools talk on stderr.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status();
    drop(progress);
    let status = status.with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{what}: {program} failed ({status})");
    }
    Ok(())
}

/// Progress shown on stderr by a thread from `start` until dropped.
pub(super) struct Progress {
    done: Option<mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub(super) fn start(what: &str) -> Self {
        let started = Instant::now();
        let (done, rx) = mpsc::channel::<()>();
        let label = what.to_string();
        let ticker = std::thread::spawn(move || progress(&label, started, &rx));
        Progress {
            done: Some(done),
            ticker: Some(ticker),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Prints `what`, then the elapsed time every few seconds until `done` closes:
/// on one rewritten line on a terminal, as plain lines otherwise.
fn progress(what: &str, started: Instant, done: &mpsc::Receiver<()>) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    eprintln!("  {what}…");
    while let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(every) {
        let secs = started.elapsed().as_secs();
        if tty {
            eprint!("\r  … {secs} s");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("  … {secs} s");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if tty {
        eprintln!("\r  done in {secs:.1} s");
    } else {
        eprintln!("  done in {secs:.1} s");
    }
}
