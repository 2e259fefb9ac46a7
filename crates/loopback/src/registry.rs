//! A real image registry on 127.0.0.1: Debian's `docker-registry`
//! (distribution 2.x), plain HTTP, optionally with htpasswd auth.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The `Accept` list of a client that takes every manifest kind, so the
/// registry answers the digest of what was pushed; without the image
/// manifest types a 2.x registry may convert to schema 1, another digest.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How long the registry may take to answer after it started.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running `docker-registry`, killed when dropped.
pub struct Registry {
    child: Child,
    host: String,
    credential: Option<(String, String)>,
    http: reqwest::Client,
}

/// A user of a registry with auth.
pub struct User<'a> {
    pub name: &'a str,
    pub password: &'a str,
    /// The user's line of an htpasswd file (bcrypt, as `htpasswd -Bbn`
    /// writes it; the registry accepts only bcrypt).
    pub htpasswd_line: &'a [u8],
}

impl Registry {
    /// `docker-registry serve` with a config and storage in `dir` on a free
    /// port of 127.0.0.1 (with `user`, htpasswd auth for that one user),
    /// once it answers `GET /v2/` (401 counts, with auth).
    pub async fn start(dir: &Path, user: Option<User<'_>>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let host = format!("127.0.0.1:{}", crate::free_port()?);
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("data").display()
        );
        if let Some(user) = &user {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, user.htpasswd_line)
                .with_context(|| format!("writing {}", htpasswd.display()))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: registry\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_file = dir.join("config.yml");
        std::fs::write(&config_file, config)
            .with_context(|| format!("writing {}", config_file.display()))?;
        let log = dir.join("registry.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("starting docker-registry")?;
        let mut registry = Self {
            child,
            host,
            credential: user.map(|u| (u.name.to_owned(), u.password.to_owned())),
            http: reqwest::Client::new(),
        };
        registry.wait_ready(&log).await?;
        Ok(registry)
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let url = format!("http://{}/v2/", self.host);
        let deadline = tokio::time::Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry on {} exited ({status}): {}",
                    self.host,
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            if let Ok(res) = self.http.get(&url).send().await
                && (res.status().is_success() || res.status() == 401)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "docker-registry on {} did not answer GET /v2/ within {START_PATIENCE:?}",
                    self.host
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL of `repo`'s manifest `reference` (a tag or digest).
    pub fn manifest_url(&self, repo: &str, reference: &str) -> String {
        format!("http://{}/v2/{repo}/manifests/{reference}", self.host)
    }

    /// `HEAD` of `repo:reference`'s manifest with every manifest kind
    /// accepted (and the user's credential, with auth).
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let url = self.manifest_url(repo, reference);
        let mut req = self
            .http
            .head(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES);
        if let Some((user, password)) = &self.credential {
            req = req.basic_auth(user, Some(password));
        }
        req.send().await.with_context(|| format!("HEAD {url}"))
    }

    /// The `Docker-Content-Digest` the registry answers for `repo:reference`.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> anyhow::Result<String> {
        let url = self.manifest_url(repo, reference);
        let res = self.head_manifest(repo, reference).await?;
        if !res.status().is_success() {
            bail!("HEAD {url} answered {}", res.status());
        }
        res.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .with_context(|| format!("HEAD {url}: no Docker-Content-Digest header"))
    }

    /// Stops the registry and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
