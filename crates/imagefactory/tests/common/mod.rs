//! Runs the real `imagefactory` binary as a child process on a fresh
//! database, and talks to it over HTTP.

#![allow(dead_code)] // each test binary uses part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The server's base URL for the local PostgreSQL (`DATABASE_URL` if set).
fn server_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match url.rfind('/') {
        Some(i) if url[..i].contains("://") && i > url.find("://").unwrap() + 2 => {
            url[..i].to_owned()
        }
        _ => url,
    }
}

/// A database URL nobody else uses; the binary creates the database.
pub fn fresh_database_url(label: &str) -> String {
    format!(
        "{}/if_{label}_{}",
        server_url(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `imagefactory serve` with its embedded dispatcher, local builds in `workdir`.
pub fn spawn_serve(db: &str, port: u16, workdir: &Path, log: &str) -> Proc {
    Proc::spawn(
        &["serve"],
        &[
            ("IF_DATABASE_URL", db.to_owned()),
            ("IF_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("IF_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("IF_SECRET_KEY", SECRET_KEY.into()),
            ("IF_DISPATCHER_POLL_INTERVAL", "500ms".into()),
            ("IF_DISPATCHER_SHUTDOWN_GRACE", "3s".into()),
            ("IF_LOCAL_WORKDIR", workdir.display().to_string()),
            ("IF_LOG", log.into()),
            // kube-sim listens on loopback; tenant providers point there.
            ("IF_PROVIDER_ALLOW_LOOPBACK", "true".into()),
        ],
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `imagefactory` process whose output goes to files (read on
/// failure), killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagefactory"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // Only what the test sets: an IF_* variable of the developer's shell
        // must not change what is tested.
        for (key, _) in std::env::vars() {
            if key.starts_with("IF_") {
                cmd.env_remove(key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("imagefactory binary starts"),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// The exit status, or `None` if it is still running after `bound`.
    pub fn wait_for_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    /// Waits until `/readyz` answers 200 (migrations applied), or panics with
    /// the process output.
    pub async fn wait_ready(&self, proc: &mut Proc, bound: Duration) {
        let deadline = Instant::now() + bound;
        loop {
            let answer = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("imagefactory exited early ({status}):\n{}", proc.output());
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {bound:?}:\n{}",
                proc.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// POST that must answer 201; returns the body.
    pub async fn created(&self, path: &str, token: &str, body: Value) -> Value {
        let (status, value) = self.post(path, token, body).await;
        assert_eq!(status, 201, "POST {path}: {value}");
        value
    }

    /// The platform admin opts tenant `id` in to local builds (they run on
    /// the server's host, so no tenant has them by default).
    pub async fn allow_local_builds(&self, id: &str) {
        let (status, body) = self
            .send(
                reqwest::Method::PATCH,
                &format!("/api/v1/tenants/{id}"),
                ADMIN_TOKEN,
                Some(serde_json::json!({"allow_local_builds": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["allow_local_builds"], true, "{body}");
    }

    /// A tenant and an admin token of it, made through the API.
    pub async fn tenant_with_token(&self, name: &str) -> (Value, String) {
        let tenant = self
            .created(
                "/api/v1/tenants",
                ADMIN_TOKEN,
                serde_json::json!({"name": name}),
            )
            .await;
        let token = self
            .created(
                &format!("/api/v1/tenants/{}/tokens", tenant["id"].as_str().unwrap()),
                ADMIN_TOKEN,
                serde_json::json!({"name": "ci", "role": "admin"}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        (tenant, token)
    }
}

/// Drops the test database (best effort; the process must have exited).
pub async fn drop_database(url: &str) {
    use sqlx::migrate::MigrateDatabase;
    let _ = sqlx::Postgres::force_drop_database(url).await;
}
