//! A private OCI registry for tests: Debian's `docker-registry` (the CNCF
//! distribution server) started from its binary on a free loopback port,
//! with its storage in a temporary directory, stopped when dropped. The
//! package's own service is never used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use attune_engine::packs::oci::{self, OciRef, auth::Credentials, layout};

/// Where `tests/run.sh` installs it (`apt-get install docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// Its configuration, log and storage.
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry and waits until it answers.
    pub async fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: tests/run.sh installs Debian's docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let registry = Registry { host, dir, child };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let up = client
                .get(format!("http://{}/v2/", registry.host))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if up {
                return registry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the registry did not start: {}",
            std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `oci://<host>/<repo_and_tag>`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("oci://{}/{repo_and_tag}", self.host)
    }

    /// The file holding blob `digest` (`sha256:…`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `artifact` over plain HTTP as `attune pack push` does; the
    /// manifest's digest.
    pub async fn push(&self, reference: &str, artifact: layout::Artifact) -> String {
        let r = OciRef::parse(reference).unwrap();
        let client =
            oci::client(vec![self.host.clone()], None, None, Duration::from_secs(30)).unwrap();
        let auth = Credentials::default().for_registry(&self.host);
        oci::push(&client, &r, &auth, artifact)
            .await
            .unwrap_or_else(|e| panic!("pushing {reference}: {e}"))
    }
}
