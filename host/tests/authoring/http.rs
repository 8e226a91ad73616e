//! The README's HTTP walk-through in each language.

use super::{attune_in, json_of};

/// The README's HTTP walk-through in `lang`: `new --http` → `build` →
/// `run` against a one-shot server on loopback, denied without a grant,
/// then answered with the host and the secret granted on the command line.
/// The server takes one connection, so a denied run that had connected
/// would leave the granted one nothing to reach.
fn http_action_calls_a_granted_host_with_a_secret(lang: &str) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
            .unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });

    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let (code, _, err) = attune_in(
        &cache,
        work.path(),
        &["action", "new", "caller", "--http", "--lang", lang],
    );
    assert_eq!(code, 0, "{err}");
    let project = work.path().join("caller");
    let (code, out, err) = attune_in(&cache, &project, &["action", "build"]);
    assert_eq!(code, 0, "build failed: {err}");
    let component = out.trim().to_string();
    let url = format!("url=http://127.0.0.1:{port}/user");
    let base = [
        "action",
        "run",
        component.as_str(),
        "fetch",
        "-p",
        url.as_str(),
    ];
    let (code, out, _) = attune_in(&cache, &project, &base);
    assert_ne!(code, 0, "no grant, no request");
    let ran = json_of(&out);
    assert_eq!(ran["status"], "failed", "{out}");
    assert!(
        ran["logs"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("denied: not in the pack's allowed_outbound_hosts")),
        "{out}"
    );
    let journal = work.path().join("run.json");
    let journal = journal.to_str().unwrap();
    let mut granted = base.to_vec();
    granted.extend([
        "--allow-outbound",
        "http://127.0.0.1:*",
        "--allow-private-outbound",
        "--secret",
        "api_token=tok-5e1f",
        "--record",
        journal,
    ]);
    let (code, out, err) = attune_in(&cache, &project, &granted);
    assert_eq!(code, 0, "{out}{err}");
    let ran = json_of(&out);
    assert_eq!(ran["result"], "200 hello");
    let head = server.join().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer tok-5e1f"),
        "{head}"
    );
    // The server is gone: the replay answers from the journal, which never
    // held the token.
    let kept = std::fs::read_to_string(journal).unwrap();
    assert!(!kept.contains("tok-5e1f"), "{kept}");
    let replay = [
        "action",
        "replay",
        journal,
        "--secret",
        "api_token=tok-5e1f",
    ];
    let (code, out, err) = attune_in(&cache, &project, &replay);
    assert_eq!(code, 0, "{out}{err}");
    let replayed = json_of(&out);
    assert_eq!(replayed["identical"], true, "{replayed}");
    assert_eq!(replayed["result"], "200 hello");
}

#[test]
fn a_new_rust_http_action_calls_a_granted_host_with_a_secret() {
    http_action_calls_a_granted_host_with_a_secret("rust");
}

#[test]
fn a_new_python_http_action_calls_a_granted_host_with_a_secret() {
    http_action_calls_a_granted_host_with_a_secret("python");
}

#[test]
fn a_new_javascript_http_action_calls_a_granted_host_with_a_secret() {
    http_action_calls_a_granted_host_with_a_secret("js");
}
