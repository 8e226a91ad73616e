//! Packs from OCI registries against a real registry (Debian's
//! `docker-registry` on loopback): pushing both artifact shapes, installing
//! by tag and by digest, upgrading, and every refusal — roles, registries
//! not allowed, private addresses, tampered blobs, limits, bad references.

use std::sync::Arc;

use attune::api::ApiConfig;
use attune_engine::packs::oci::{RegistryConfig, auth::Credentials, layout};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, Registry, Reply, TestServer, guest_bytes, on_both_backends};

const WORKFLOW: &str = "description: Greets\ninput: {type: object, properties: {name: {type: string}}, required: [name]}\ntasks:\n  greet:\n    action: core.echo\n    input: {message: \"hello, {{ input.name }}\"}\n";

fn pack_files(version: &str) -> attune_engine::packs::archive::Files {
    let toml = format!(
        "name = \"tools\"\nversion = \"{version}\"\ndescription = \"tools from a registry\"\ncomponents = [\"wasm/types.wasm\"]\nworkflows = [\"workflows/greet.yaml\"]\n"
    );
    attune_engine::packs::archive::Files::from([
        ("pack.toml".to_string(), toml.into_bytes()),
        ("wasm/types.wasm".to_string(), guest_bytes("types")),
        (
            "workflows/greet.yaml".to_string(),
            WORKFLOW.as_bytes().to_vec(),
        ),
    ])
}

/// A server that may pull from `registry` over plain HTTP.
async fn server_for(backend: Backend, registry: &Registry) -> TestServer {
    server_with(
        backend,
        RegistryConfig {
            insecure: vec![registry.host.clone()],
            ..RegistryConfig::default()
        },
        50 << 20,
    )
    .await
}

async fn server_with(
    backend: Backend,
    registries: RegistryConfig,
    max_upload_bytes: usize,
) -> TestServer {
    let api = ApiConfig {
        registries: Arc::new(registries),
        max_upload_bytes,
        ..ApiConfig::default()
    };
    TestServer::start_with(backend, api).await
}

async fn install(s: &TestServer, reference: &str, token: &str) -> Reply {
    s.send(
        s.request(reqwest::Method::POST, "/api/v1/packs", Some(token))
            .json(&json!({"oci": reference})),
    )
    .await
}

fn message(r: &Reply) -> String {
    r.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

on_both_backends! {
    async fn packs_install_from_a_registry_by_tag_and_digest_and_upgrade_by_a_new_tag(backend) {
        let registry = Registry::start().await;
        let s = server_for(backend, &registry).await;
        // One component, as a standard Wasm artifact.
        let single = registry.reference("acme/greeter:1.0.0");
        let artifact = layout::single("greeter", "1.0.0", Some("adds"), guest_bytes("types"));
        let single_digest = registry.push(&single, artifact).await;
        let r = install(&s, &single, &s.admin).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["outcome"], "created");
        assert!(r.body["actions"].as_array().unwrap().contains(&json!("greeter.add")), "{}", r.body);
        let shown = s.get("/api/v1/packs/greeter").await.body;
        assert_eq!(shown["source"], json!({"reference": single, "digest": single_digest}));
        assert_eq!(shown["description"], "adds");

        // A pack of several files, by digest, then the same by tag.
        let tagged = registry.reference("acme/tools:1.0.0");
        let digest = registry.push(&tagged, layout::pack(pack_files("1.0.0")).unwrap()).await;
        let by_digest = registry.reference(&format!("acme/tools@{digest}"));
        let r = install(&s, &by_digest, &s.admin).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let actions = r.body["actions"].as_array().unwrap();
        assert!(actions.contains(&json!("tools.add")) && actions.contains(&json!("tools.greet")), "{}", r.body);
        assert_eq!(s.get("/api/v1/packs/tools").await.body["source"]["reference"], by_digest);
        let r = install(&s, &tagged, &s.admin).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["outcome"], "unchanged");
        assert_eq!(r.body["pack"]["source"], json!({"reference": tagged, "digest": digest}));

        // A new version behind a new tag upgrades it.
        let next = registry.reference("acme/tools:1.1.0");
        let next_digest = registry.push(&next, layout::pack(pack_files("1.1.0")).unwrap()).await;
        let r = install(&s, &next, &s.admin).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["outcome"], "upgraded");
        assert_eq!(r.body["pack"]["version"], "1.1.0");
        assert_eq!(r.body["pack"]["source"]["digest"], next_digest);
        s.finish().await;
    }
}

/// An artifact names its pack: one from another repository, or any over
/// an uploaded pack, must not silently take over the name its rules call
/// (nor roll it back to an older version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_pack_does_not_take_over_a_pack_installed_from_elsewhere() {
    let registry = Registry::start().await;
    let s = server_for(Backend::Sqlite, &registry).await;
    let mine = registry.reference("acme/tools:1.0.0");
    registry
        .push(&mine, layout::pack(pack_files("1.0.0")).unwrap())
        .await;
    assert_eq!(
        install(&s, &mine, &s.admin).await.status,
        StatusCode::CREATED
    );
    // Another repository whose pack.toml also says `name = "tools"`.
    let other = registry.reference("evil/net-tools:9.0.0");
    registry
        .push(&other, layout::pack(pack_files("9.0.0")).unwrap())
        .await;
    let r = install(&s, &other, &s.admin).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(message(&r).contains("replace"), "{}", r.body);
    let shown = s.get("/api/v1/packs/tools").await.body;
    assert_eq!(shown["version"], "1.0.0");
    assert_eq!(shown["source"]["reference"], mine);
    // Its own repository still upgrades it, and the admin may swap origins.
    let next = registry.reference("acme/tools:1.1.0");
    registry
        .push(&next, layout::pack(pack_files("1.1.0")).unwrap())
        .await;
    assert_eq!(
        install(&s, &next, &s.admin).await.status,
        StatusCode::CREATED
    );
    let r = s
        .send(
            s.request(reqwest::Method::POST, "/api/v1/packs", Some(&s.admin))
                .json(&json!({"oci": other, "replace": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(s.get("/api/v1/packs/tools").await.body["version"], "9.0.0");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_is_refused_and_nothing_is_registered() {
    let registry = Registry::start().await;
    let s = server_for(Backend::Sqlite, &registry).await;
    let reference = registry.reference("acme/greeter:1.0.0");
    let artifact = layout::single("greeter", "1.0.0", None, guest_bytes("types"));
    let layer = artifact.manifest.layers[0].digest.clone();
    registry.push(&reference, artifact).await;
    let blob = registry.blob_path(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let r = install(&s, &reference, &s.admin).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(
        message(&r).contains("does not match its digest"),
        "{}",
        r.body
    );
    assert_eq!(
        s.get("/api/v1/packs/greeter").await.status,
        StatusCode::NOT_FOUND
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_install_and_only_from_allowed_registries_at_public_addresses() {
    let registry = Registry::start().await;
    let reference = registry.reference("acme/greeter:1.0.0");
    registry
        .push(
            &reference,
            layout::single("greeter", "1.0.0", None, guest_bytes("types")),
        )
        .await;

    // Allowed, but not as a loopback registry: the gate refuses 127.0.0.1,
    // and the metadata address even when an admin allowed it by mistake.
    let allowed_only = RegistryConfig {
        allowed: vec![
            registry.host.clone(),
            "169.254.169.254".into(),
            "10.1.2.3:5000".into(),
        ],
        ..RegistryConfig::default()
    };
    let s = server_with(Backend::Sqlite, allowed_only, 50 << 20).await;
    for target in [
        reference.clone(),
        "oci://169.254.169.254/latest/meta-data:1".into(),
        "oci://10.1.2.3:5000/x:1".into(),
    ] {
        let r = install(&s, &target, &s.admin).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.body);
        assert!(
            message(&r).contains("private, loopback or metadata"),
            "{target}: {}",
            r.body
        );
    }
    // Not allowed at all.
    let r = install(&s, "oci://ghcr.io/acme/tools:1.0.0", &s.admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(message(&r).contains("not allowed"), "{}", r.body);
    assert_eq!(
        s.get("/api/v1/packs/greeter").await.status,
        StatusCode::NOT_FOUND
    );
    s.finish().await;

    // The default: no registry at all.
    let s = server_with(Backend::Sqlite, RegistryConfig::default(), 50 << 20).await;
    let r = install(&s, &reference, &s.admin).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(message(&r).contains("not allowed"), "{}", r.body);
    s.finish().await;

    // Allowed as insecure: viewers and operators are still refused, and
    // the pack's source is shown only with a token.
    let s = server_for(Backend::Sqlite, &registry).await;
    for role in ["viewer", "operator"] {
        let token = s.token(role).await;
        let r = install(&s, &reference, &token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{role}: {}", r.body);
    }
    let anonymous = s
        .send(
            s.request(reqwest::Method::POST, "/api/v1/packs", None)
                .json(&json!({"oci": reference})),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.get("/api/v1/packs/greeter").await.status,
        StatusCode::NOT_FOUND,
        "nothing installed"
    );
    assert_eq!(
        install(&s, &reference, &s.admin).await.status,
        StatusCode::CREATED
    );
    let r = s
        .send(s.request(reqwest::Method::GET, "/api/v1/packs/greeter", None))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_and_artifacts_are_refused_with_clear_errors() {
    let registry = Registry::start().await;
    // An image, not a pack: the wrong config media type.
    let mut image = layout::single("img", "1", None, guest_bytes("types"));
    image.config.media_type = "application/vnd.oci.image.config.v1+json".into();
    image.manifest.config.media_type = image.config.media_type.clone();
    registry
        .push(&registry.reference("acme/image:1"), image)
        .await;
    let big = registry.reference("acme/big:1");
    registry
        .push(&big, layout::single("big", "1", None, guest_bytes("types")))
        .await;

    let s = server_with(
        Backend::Sqlite,
        RegistryConfig {
            insecure: vec![registry.host.clone(), "127.0.0.1:1".into()],
            ..RegistryConfig::default()
        },
        4096,
    )
    .await;
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            registry.reference("acme/greeter"),
            StatusCode::BAD_REQUEST,
            "missing tag",
        ),
        (
            "ghcr.io/acme/greeter:1".into(),
            StatusCode::BAD_REQUEST,
            "oci://",
        ),
        (
            registry.reference("acme/nothing:1"),
            StatusCode::NOT_FOUND,
            "not found",
        ),
        (
            registry.reference("acme/image:1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a pack",
        ),
        (
            big.clone(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limited to 4096 bytes",
        ),
        (
            "oci://127.0.0.1:1/acme/greeter:1".into(),
            StatusCode::BAD_GATEWAY,
            "could not be reached",
        ),
    ];
    for (reference, status, says) in cases {
        let r = install(&s, &reference, &s.admin).await;
        assert_eq!(r.status, status, "{reference}: {}", r.body);
        assert!(message(&r).contains(says), "{reference}: {}", r.body);
        assert!(r.body["error"]["code"].is_string());
    }
    let packs = s.get("/api/v1/packs").await.body;
    let names: Vec<&str> = packs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["core"], "nothing registered");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_are_never_stored_or_answered() {
    let registry = Registry::start().await;
    let reference = registry.reference("acme/greeter:1.0.0");
    registry
        .push(
            &reference,
            layout::single("greeter", "1.0.0", None, guest_bytes("types")),
        )
        .await;
    let password = "registry-password-4f1c9a";
    let config = format!(
        r#"{{"auths": {{"{}": {{"username": "ci", "password": "{password}"}}}}}}"#,
        registry.host
    );
    let s = server_with(
        Backend::Sqlite,
        RegistryConfig {
            insecure: vec![registry.host.clone()],
            credentials: Credentials::parse(&config).unwrap(),
            ..RegistryConfig::default()
        },
        50 << 20,
    )
    .await;
    let r = install(&s, &reference, &s.admin).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let shown = s.get("/api/v1/packs/greeter").await;
    for body in [&r.body, &shown.body] {
        assert!(!body.to_string().contains(password), "{body}");
    }
    let bad = install(&s, &registry.reference("acme/nothing:1"), &s.admin).await;
    assert!(!bad.body.to_string().contains(password), "{}", bad.body);
    // Nothing in the data directory holds it: database, WAL, components.
    for entry in std::fs::read_dir(s.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "{}",
                path.display()
            );
        }
    }
    s.finish().await;
}

/// Runs `tests/oras_client.py` with the `oras` Python package from a venv
/// in the target directory (`tests/run.sh` installs it; installed here on
/// first use otherwise), in `dir`; what it printed.
fn oras(dir: &std::path::Path, args: &[&str]) -> Value {
    let exe = std::env::current_exe().unwrap();
    let venv = exe.ancestors().nth(3).unwrap().join("oras-venv");
    let python = venv.join("bin/python");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    if !python.exists()
        || !run(std::process::Command::new(&python).args(["-c", "import oras; print(1)"]))
            .starts_with(b"1")
    {
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv));
        run(std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "oras==0.2.43",
        ]));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oras_client.py");
    let stdout = run(std::process::Command::new(&python)
        .arg(script)
        .args(args)
        .current_dir(dir));
    serde_json::from_slice(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_pulls_what_attune_pushed_and_attune_installs_what_it_pushed() {
    let registry = Registry::start().await;
    let wasm = guest_bytes("types");
    let ours = registry.reference("acme/greeter:1.0.0");
    registry
        .push(
            &ours,
            layout::single("greeter", "1.0.0", None, wasm.clone()),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let target = ours.trim_start_matches("oci://").to_string();
    let out = dir.path().join("pulled");
    let dir_path = dir.path().to_path_buf();
    let pulled = tokio::task::spawn_blocking(move || {
        oras(&dir_path, &["pull", &target, out.to_str().unwrap()])
    })
    .await
    .unwrap();
    let path = pulled[0].as_str().unwrap_or_else(|| panic!("{pulled}"));
    assert!(path.ends_with("greeter.wasm"), "{pulled}");
    assert_eq!(std::fs::read(path).unwrap(), wasm, "the same component");

    // A component pushed by oras, with no Attune annotations: named after
    // its repository, versioned by its tag.
    std::fs::write(dir.path().join("adder.wasm"), &wasm).unwrap();
    let theirs = registry.reference("others/adder:2.0.0");
    let target = theirs.trim_start_matches("oci://").to_string();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || oras(&dir_path, &["push", &target, "adder.wasm"]))
        .await
        .unwrap();
    let s = server_for(Backend::Sqlite, &registry).await;
    let r = install(&s, &theirs, &s.admin).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["pack"]["name"], "adder");
    assert_eq!(r.body["pack"]["version"], "2.0.0");
    assert!(
        r.body["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("adder.add")),
        "{}",
        r.body
    );
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_reports_a_moved_tag_and_newer_tags_and_the_api_describes_the_request() {
    use attune_engine::packs::oci::{self, OciRef};
    let registry = Registry::start().await;
    let first = registry.reference("acme/tools:1.0.0");
    let installed = registry
        .push(&first, layout::pack(pack_files("1.0.0")).unwrap())
        .await;
    let client = oci::client(
        vec![registry.host.clone()],
        None,
        None,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let auth = Credentials::default().for_registry(&registry.host);
    let r = OciRef::parse(&first).unwrap();
    let now = oci::remote(&client, &r, &auth).await.unwrap();
    assert_eq!(now.digest.as_deref(), Some(installed.as_str()));
    assert!(now.newer_tags.is_empty());
    // A newer version, and the installed tag moved to other content.
    registry
        .push(
            &registry.reference("acme/tools:1.1.0"),
            layout::pack(pack_files("1.1.0")).unwrap(),
        )
        .await;
    let mut moved = pack_files("1.0.0");
    moved.insert(
        "workflows/greet.yaml".into(),
        WORKFLOW.replace("Greets", "Greets again").into_bytes(),
    );
    registry.push(&first, layout::pack(moved).unwrap()).await;
    let later = oci::remote(&client, &r, &auth).await.unwrap();
    assert!(later.digest.is_some_and(|d| d != installed));
    assert_eq!(later.newer_tags, ["1.1.0"]);

    let s = server_for(Backend::Sqlite, &registry).await;
    let doc = s.get("/api/v1/openapi.json").await.body;
    let body = &doc["paths"]["/api/v1/packs"]["post"]["requestBody"]["content"];
    assert!(
        body["application/json"]["schema"]
            .to_string()
            .contains("InstallFromRegistry"),
        "{body}"
    );
    assert!(doc["components"]["schemas"]["PackView"]["properties"]["source"].is_object());
    s.finish().await;
}
