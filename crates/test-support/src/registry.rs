//! A real image registry for tests: Debian's `docker-registry` on a free
//! port of 127.0.0.1 with htpasswd auth, asked over its HTTP API.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The `Accept` list of a client that takes every manifest kind, so the
/// registry answers the digest of what was pushed, not a conversion.
const MANIFEST_KINDS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A `docker-registry` on 127.0.0.1 with htpasswd auth (one user), its
/// storage in a temporary directory; stopped on drop.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub host: String,
    pub user: String,
    pub password: String,
}

impl Registry {
    /// Starts the registry and waits until it accepts connections. Needs
    /// `docker-registry` and `htpasswd` (see [`crate::have_tools`]).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (user, password) = ("builder".to_owned(), "s3cret-Pa55".to_owned());
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", &user, &password])
            .output()
            .expect("htpasswd runs");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            _dir: dir,
            host,
            user,
            password,
        }
    }

    /// A docker `config.json` holding this registry's user with `password`
    /// (the shape of a `kubernetes.io/dockerconfigjson` Secret's value).
    pub fn docker_config(&self, password: &str) -> String {
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", self.user));
        json!({"auths": {self.host.clone(): {"auth": auth}}}).to_string()
    }

    /// `(Docker-Content-Digest, Content-Type, body)` the registry serves for
    /// `repo` at `reference` (a tag or digest); panics unless 200.
    pub async fn manifest(&self, repo: &str, reference: &str) -> (String, String, Value) {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host
            ))
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", MANIFEST_KINDS)
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(response.status(), 200, "manifest {repo}:{reference}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let digest = header("docker-content-digest");
        let content_type = header("content-type");
        let body = response.json().await.expect("a JSON manifest");
        (digest, content_type, body)
    }

    /// The `Docker-Content-Digest` of a `HEAD` on `repo:tag`, as a client
    /// checking what a tag points at asks it; panics unless 200.
    pub async fn digest(&self, repo: &str, tag: &str) -> String {
        let response = reqwest::Client::new()
            .head(format!("http://{}/v2/{repo}/manifests/{tag}", self.host))
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", MANIFEST_KINDS)
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(response.status(), 200, "HEAD manifest {repo}:{tag}");
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(digest.starts_with("sha256:"), "digest header: {digest:?}");
        digest
    }

    /// A JSON blob (an image config) of `repo`.
    pub async fn blob(&self, repo: &str, digest: &str) -> Value {
        reqwest::Client::new()
            .get(format!("http://{}/v2/{repo}/blobs/{digest}", self.host))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .expect("the registry answers")
            .json()
            .await
            .expect("a JSON blob")
    }

    /// Whether the registry has `repo:tag` (no panic when it has not).
    pub async fn has_tag(&self, repo: &str, tag: &str) -> bool {
        reqwest::Client::new()
            .head(format!("http://{}/v2/{repo}/manifests/{tag}", self.host))
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", MANIFEST_KINDS)
            .send()
            .await
            .expect("the registry answers")
            .status()
            == 200
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
