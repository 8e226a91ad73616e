//! `attune pack push|install|outdated` against a real registry: Debian's
//! `docker-registry` started on a free loopback port with its own storage
//! (tests/run.sh installs it), and a server allowed to pull from it.

use std::process::{Command, Stdio};

use super::{Reaped, wait_until};
use crate::common::{client, free_port, guest, start_server_with};

/// A registry on loopback; stopped with the returned guard.
fn registry(dir: &std::path::Path) -> (Reaped, String) {
    let host = format!("127.0.0.1:{}", free_port());
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.join("blobs").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/docker-registry (tests/run.sh installs docker-registry)");
    let guard = Reaped(child);
    wait_until("the registry", || {
        std::net::TcpStream::connect(&host).is_ok()
    });
    (guard, host)
}

#[test]
fn packs_are_pushed_installed_and_compared_with_their_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, host) = registry(dir.path());
    let server = start_server_with(&["--insecure-registry", &host]);
    let pack = dir.path().join("hello");
    std::fs::create_dir_all(pack.join("wasm")).unwrap();
    std::fs::copy(guest("types"), pack.join("wasm/types.wasm")).unwrap();
    let toml = |v: &str| {
        format!("name = \"hello\"\nversion = \"{v}\"\ncomponents = [\"wasm/types.wasm\"]\n")
    };
    std::fs::write(pack.join("pack.toml"), toml("0.1.0")).unwrap();
    let first = format!("oci://{host}/acme/hello:0.1.0");
    let pack_path = pack.to_str().unwrap();

    let (code, out, err) = client(
        &server,
        &["pack", "push", pack_path, &first, "--plain-http"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("pushed {first} sha256:")), "{out}");
    let single = format!("oci://{host}/acme/adder:1.0.0");
    let (code, _, err) = client(
        &server,
        &[
            "pack",
            "push",
            &guest("types"),
            &single,
            "--name",
            "adder",
            "--version",
            "1.0.0",
            "--plain-http",
        ],
    );
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = client(&server, &["pack", "install", &first]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("created hello 0.1.0 from {first}")),
        "{out}"
    );
    let (code, out, err) = client(&server, &["pack", "install", &single]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("created adder 1.0.0"), "{out}");
    let (code, _, err) = client(
        &server,
        &["pack", "install", &format!("oci://{host}/acme/hello")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("missing tag"), "{err}");

    std::fs::write(pack.join("pack.toml"), toml("0.2.0")).unwrap();
    let next = format!("oci://{host}/acme/hello:0.2.0");
    let (code, _, err) = client(&server, &["pack", "push", pack_path, &next, "--plain-http"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = client(&server, &["pack", "outdated", "--plain-http"]);
    assert_eq!(code, 0, "{err}");
    let hello = out
        .lines()
        .find(|l| l.starts_with("hello"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        hello.contains("newer tags") && hello.ends_with("0.2.0"),
        "{out}"
    );
    let adder = out
        .lines()
        .find(|l| l.starts_with("adder"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(adder.contains("up to date"), "{out}");

    let (code, out, err) = client(&server, &["pack", "install", &next]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("upgraded hello 0.2.0"), "{out}");
}
