//! Runs the real `imagefactory` binary as a child process on a database of
//! its own, and talks to it over HTTP (`imagefactory-test-support` does the
//! work; this names the binary and keeps the `(status, body)` calls).

#![allow(dead_code, unused_imports)] // each test binary uses part of this

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use imagefactory_test_support::Body;
pub use imagefactory_test_support::{ApiClient, ReservedDb, TERMINAL, free_port, id_of};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A database name and URL nobody uses; the binary creates the database,
/// the guard drops it (after a failure too).
pub fn fresh_database(label: &str) -> ReservedDb {
    ReservedDb::new(&format!("if_{label}"))
}

/// The environment of `imagefactory serve` with its embedded dispatcher on
/// `db`, listening on `port`, local builds in `workdir`; tests add theirs.
pub fn serve_env(db: &str, port: u16, workdir: &Path, log: &str) -> Vec<(&'static str, String)> {
    vec![
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
    ]
}

/// `imagefactory serve` with its embedded dispatcher, local builds in `workdir`.
pub fn spawn_serve(db: &str, port: u16, workdir: &Path, log: &str) -> Proc {
    Proc::spawn(&["serve"], &serve_env(db, port, workdir, log))
}

/// The `imagefactory` binary as a [`imagefactory_test_support::Proc`].
pub struct Proc(imagefactory_test_support::Proc);

impl Proc {
    /// `imagefactory args` with exactly the `IF_*` variables of `env`.
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        Self(imagefactory_test_support::Proc::spawn(
            env!("CARGO_BIN_EXE_imagefactory"),
            args,
            env,
        ))
    }
}

impl Deref for Proc {
    type Target = imagefactory_test_support::Proc;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The shared [`ApiClient`] with the `(status, body)` calls these tests read.
pub struct Http {
    pub api: ApiClient,
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(port: u16) -> Self {
        let api = ApiClient::local(port);
        Self {
            base: api.base.clone(),
            client: api.http.clone(),
            api,
        }
    }

    /// Waits until `/readyz` answers 200 (migrations applied), or panics with
    /// the process output.
    pub async fn wait_ready(&self, proc: &mut Proc, bound: Duration) {
        self.api.wait_ready(proc, bound).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map_or(Body::None, Body::Json);
        self.api
            .as_token(token)
            .send(method, path, body)
            .await
            .parts()
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
        self.api.as_token(token).created(path, body).await
    }

    /// The platform admin opts tenant `id` in to local builds.
    pub async fn allow_local_builds(&self, id: &str) {
        let id = id.parse().expect("a tenant id");
        self.api.as_token(ADMIN_TOKEN).allow_local_builds(id).await
    }

    /// Polls build `id` as `token` until its status is one of `wanted`;
    /// panics with the last build and the process's output after `patience`.
    pub async fn wait_build(
        &self,
        token: &str,
        id: &str,
        wanted: &[&str],
        proc: &Proc,
        patience: Duration,
    ) -> Value {
        let id = id.parse().expect("a build id");
        match self
            .api
            .as_token(token)
            .poll_build(id, wanted, patience)
            .await
        {
            Ok(build) => build,
            Err(last) => panic!(
                "build {id} not {wanted:?} within {patience:?}: {last}\n{}",
                proc.output()
            ),
        }
    }

    /// A tenant and an admin token of it, made through the API.
    pub async fn tenant_with_token(&self, name: &str) -> (Value, String) {
        let admin = self.api.as_token(ADMIN_TOKEN);
        let tenant = admin
            .created("/api/v1/tenants", json!({"name": name}))
            .await;
        let token = admin.create_token(id_of(&tenant), "admin").await;
        (tenant, token)
    }
}
