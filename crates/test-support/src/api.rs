//! A typed client of Image Factory's HTTP API for tests: a base URL, the
//! token it sends, and the calls tests make over and over (tenants, tokens,
//! projects, providers, builds, waiting for a build's status).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::proc::Proc;

/// The statuses a build does not leave.
pub const TERMINAL: [&str; 4] = ["succeeded", "failed", "cancelled", "timed_out"];

/// A request body.
pub enum Body {
    None,
    Json(Value),
    /// Sent as it is, with this content type (malformed input on purpose).
    Raw {
        content_type: &'static str,
        text: String,
    },
}

/// A response as a user sees it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Response {
    /// The body as JSON; panics (with the body) when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The body as JSON, or as a JSON string when it is not JSON (a plain
    /// text error from a layer in front of the API).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }

    /// `(status, value())`, for tests that compare both.
    pub fn parts(&self) -> (u16, Value) {
        (self.status, self.value())
    }

    /// Panics with the body unless the status is `status`.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// The `id` of the JSON body.
    #[track_caller]
    pub fn id(&self) -> Uuid {
        id_of(&self.json())
    }

    /// The problem `type`'s last segment, after checking that the body is an
    /// RFC 9457 problem with this response's status and a detail.
    #[track_caller]
    pub fn problem(&self) -> String {
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["status"], self.status, "{}", self.text);
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
        body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("https://imagefactory.dev/problems/"))
            .unwrap_or_else(|| panic!("no problem type: {}", self.text))
            .to_owned()
    }

    /// The problem's `errors[].field` values.
    pub fn fields(&self) -> Vec<String> {
        fields(&self.value())
    }
}

/// A problem body's `errors[].field` values.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `id` of a JSON object, as a UUID.
#[track_caller]
pub fn id_of(v: &Value) -> Uuid {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("id in {v} is not a UUID: {e}"))
}

/// The API at `base` (scheme, host and port: `http://127.0.0.1:8080`),
/// called as `token` (none: unauthenticated).
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    token: Option<String>,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// The API on 127.0.0.1:`port`.
    pub fn local(port: u16) -> Self {
        Self::new(format!("http://127.0.0.1:{port}"))
    }

    /// This client as `token` (sharing the connection pool).
    pub fn as_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, method: Method, path: &str, body: Body) -> Response {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw { content_type, text } => req.header("content-type", content_type).body(text),
        };
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not sent: {e}"));
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = res
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: body not read: {e}"));
        Response {
            status,
            content_type,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, Body::None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(Method::POST, path, Body::Json(body)).await
    }

    /// POST without a body (cancel, retry, test-connection).
    pub async fn post_empty(&self, path: &str) -> Response {
        self.send(Method::POST, path, Body::None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.send(Method::PATCH, path, Body::Json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, Body::None).await
    }

    /// POST that must answer 201; the created object.
    pub async fn created(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        assert_eq!(r.status, 201, "POST {path}: {}", r.text);
        r.json()
    }

    // ---- typed calls (as the platform admin or a tenant's token) ----

    /// `POST /api/v1/tenants` with `body` (at least `name`); as the platform admin.
    pub async fn create_tenant_with(&self, body: Value) -> Uuid {
        id_of(&self.created("/api/v1/tenants", body).await)
    }

    pub async fn create_tenant(&self, name: &str) -> Uuid {
        self.create_tenant_with(json!({"name": name})).await
    }

    /// A token of `role` (named after it) for `tenant`; the secret.
    pub async fn create_token(&self, tenant: Uuid, role: &str) -> String {
        let body = self
            .created(
                &format!("/api/v1/tenants/{tenant}/tokens"),
                json!({"name": role, "role": role}),
            )
            .await;
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// The platform admin opts `tenant` in to local builds (they run on the
    /// server's host, so no tenant has them by default).
    pub async fn allow_local_builds(&self, tenant: Uuid) {
        let r = self
            .patch(
                &format!("/api/v1/tenants/{tenant}"),
                json!({"allow_local_builds": true}),
            )
            .await;
        r.expect(200);
        assert_eq!(r.json()["allow_local_builds"], true, "{}", r.text);
    }

    pub async fn create_project(&self, name: &str, git_url: &str) -> Uuid {
        id_of(
            &self
                .created(
                    "/api/v1/projects",
                    json!({"name": name, "git_url": git_url}),
                )
                .await,
        )
    }

    /// A Kubernetes provider of the token's tenant with `config`.
    pub async fn create_provider(&self, name: &str, config: Value) -> Uuid {
        id_of(
            &self
                .created(
                    "/api/v1/providers",
                    json!({"name": name, "provider_type": "kubernetes", "config": config}),
                )
                .await,
        )
    }

    /// A global Kubernetes provider with `config`; as the platform admin.
    pub async fn create_global_provider(&self, name: &str, config: Value) -> Uuid {
        id_of(
            &self
                .created(
                    "/api/v1/admin/providers",
                    json!({"name": name, "provider_type": "kubernetes", "config": config}),
                )
                .await,
        )
    }

    pub async fn create_credential(
        &self,
        name: &str,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Uuid {
        id_of(
            &self
                .created(
                    "/api/v1/registry-credentials",
                    json!({"name": name, "registry": registry, "username": username, "password": password}),
                )
                .await,
        )
    }

    /// `POST /api/v1/builds` that must be accepted; the build.
    pub async fn submit_build(&self, body: Value) -> Value {
        self.created("/api/v1/builds", body).await
    }

    pub async fn build(&self, id: Uuid) -> Value {
        let r = self.get(&format!("/api/v1/builds/{id}")).await;
        r.expect(200);
        r.json()
    }

    /// Polls the build until its status is one of `wanted`: `Ok(build)`, or
    /// `Err(last build seen)` after `patience` (the caller adds its diagnosis).
    pub async fn poll_build(
        &self,
        id: Uuid,
        wanted: &[&str],
        patience: Duration,
    ) -> Result<Value, Value> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let build = self.build(id).await;
            if wanted.contains(&build["status"].as_str().unwrap_or_default()) {
                return Ok(build);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(build);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`ApiClient::poll_build`] that panics with the last build seen.
    pub async fn wait_build(&self, id: Uuid, wanted: &[&str], patience: Duration) -> Value {
        self.poll_build(id, wanted, patience)
            .await
            .unwrap_or_else(|last| panic!("build {id} not {wanted:?} within {patience:?}: {last}"))
    }

    /// Waits until `/readyz` answers 200 (migrations applied), or panics
    /// with the process's output when it exits or `patience` runs out.
    pub async fn wait_ready(&self, proc: &mut Proc, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let answer = self.http.get(self.url("/readyz")).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Some(status) = proc.try_wait() {
                panic!("the process exited early ({status}):\n{}", proc.output());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready within {patience:?}:\n{}",
                proc.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
