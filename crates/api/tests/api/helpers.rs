//! `TestApp`: the real router served over TCP against a fresh, migrated
//! database (`TestDb`), with typed helpers for the usual steps (the shared
//! `ApiClient` underneath).

use std::net::SocketAddr;
use std::time::Duration;

use imagefactory_api::{AppState, HttpLimits, router};
use imagefactory_domain::Secret;
use imagefactory_store::crypto::Cipher;
use imagefactory_test_support::ApiClient;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A response as a user sees it (the shared client's).
pub use imagefactory_test_support::Response as Resp;
pub use imagefactory_test_support::{Body, TestDb, id_of};

pub struct TestApp {
    pub pool: PgPool,
    pub cipher: Cipher,
    pub addr: SocketAddr,
    /// For what the typed client does not do (streams, raw headers).
    pub client: reqwest::Client,
    /// Unauthenticated; [`TestApp::admin`] and `as_token` for the others.
    pub api: ApiClient,
}

/// A tenant with a token of each role.
pub struct TenantCtx {
    pub id: Uuid,
    pub admin: String,
    pub developer: String,
    pub viewer: String,
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, HttpLimits::default()).await
    }

    /// Served as the binary serves it: with the peer address of each
    /// connection (`ConnectInfo`), which the auth throttle counts by.
    pub async fn spawn_with(pool: PgPool, limits: HttpLimits) -> Self {
        Self::spawn_with_state(pool, |state| state.limits = limits).await
    }

    /// [`TestApp::spawn`] with `adjust` applied to the state first.
    pub async fn spawn_with_state(pool: PgPool, adjust: impl FnOnce(&mut AppState)) -> Self {
        let (cipher, _) = Cipher::random();
        let mut state = AppState::new(pool.clone(), cipher.clone(), Some(Secret::new(ADMIN_TOKEN)));
        state.log_poll_interval = Duration::from_millis(50);
        adjust(&mut state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let api = ApiClient::new(format!("http://{addr}"));
        Self {
            pool,
            cipher,
            addr,
            client: api.http.clone(),
            api,
        }
    }

    /// The client as the platform admin.
    pub fn admin(&self) -> ApiClient {
        self.api.as_token(ADMIN_TOKEN)
    }

    pub fn url(&self, path: &str) -> String {
        self.api.url(path)
    }

    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Resp {
        match token {
            Some(t) => self.api.as_token(t).send(method, path, body).await,
            None => self.api.send(method, path, body).await,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.api.as_token(token).get(path).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.api.as_token(token).post(path, body).await
    }

    pub async fn post_empty(&self, path: &str, token: &str) -> Resp {
        self.api.as_token(token).post_empty(path).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.api.as_token(token).patch(path, body).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.api.as_token(token).delete(path).await
    }

    pub async fn create_tenant(&self, name: &str) -> Uuid {
        self.admin().create_tenant(name).await
    }

    /// The platform admin opts the tenant in to local builds.
    pub async fn allow_local_builds(&self, tenant: Uuid) {
        self.admin().allow_local_builds(tenant).await
    }

    pub async fn create_token(&self, tenant: Uuid, role: &str) -> String {
        self.admin().create_token(tenant, role).await
    }

    /// A new tenant with project `web`, provider `k` and one build queued on
    /// them (submitted by its developer).
    pub async fn tenant_with_build(&self, name: &str) -> (TenantCtx, Uuid) {
        let t = self.tenant(name).await;
        let project = self.create_project(&t.admin, "web").await;
        let provider = self.create_k8s_provider(&t.admin, "k").await;
        let build = id_of(&self.submit_build(&t.developer, project, provider).await);
        (t, build)
    }

    pub async fn tenant(&self, name: &str) -> TenantCtx {
        let id = self.create_tenant(name).await;
        TenantCtx {
            id,
            admin: self.create_token(id, "admin").await,
            developer: self.create_token(id, "developer").await,
            viewer: self.create_token(id, "viewer").await,
        }
    }

    pub async fn create_project(&self, token: &str, name: &str) -> Uuid {
        self.api
            .as_token(token)
            .create_project(name, "https://git.example.com/team/app.git")
            .await
    }

    pub async fn create_k8s_provider(&self, token: &str, name: &str) -> Uuid {
        let config = json!({"auth_method": "token", "endpoint": "https://k8s.example.com:6443", "token": "tenant-token-value"});
        self.api.as_token(token).create_provider(name, config).await
    }

    pub async fn create_global_provider(&self, name: &str) -> Uuid {
        let config = json!({"auth_method": "token", "apiServer": "https://global.example.com", "token": "global-token-value"});
        self.admin().create_global_provider(name, config).await
    }

    pub async fn submit_build(&self, token: &str, project: Uuid, provider: Uuid) -> Value {
        self.api
            .as_token(token)
            .submit_build(json!({"project_id": project, "method": "docker", "infrastructure_provider_id": provider,
                                 "image": "registry.example.com/team/app:1.0"}))
            .await
    }

    /// A fingerprint of every table's content: equal before and after a
    /// rejected request means nothing was written. (`last_used_at` of
    /// tokens is bookkeeping of authentication, not a write by the request.)
    pub async fn snapshot(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for table in [
            "tenants",
            "api_tokens",
            "projects",
            "registry_credentials",
            "infrastructure_providers",
            "builds",
            "build_configs",
            "build_executions",
            "build_logs",
            "build_artifacts",
        ] {
            let sql = format!(
                "SELECT COALESCE(string_agg((to_jsonb(t) - 'last_used_at')::text, '|' ORDER BY (to_jsonb(t) - 'last_used_at')::text), '') FROM {table} t"
            );
            let content: String = sqlx::query_scalar(&sql)
                .fetch_one(&self.pool)
                .await
                .unwrap();
            out.push((table.to_owned(), content));
        }
        out
    }

    /// Every row of every table as text, for secret-leak checks.
    pub async fn dump(&self) -> String {
        let snapshot = self.snapshot().await;
        snapshot
            .into_iter()
            .map(|(t, c)| format!("{t}: {c}\n"))
            .collect()
    }

    /// Mark a build's state directly, as the dispatcher would.
    pub async fn set_status(&self, build: Uuid, status: &str) {
        sqlx::query("UPDATE builds SET status = $2, finished_at = CASE WHEN $2 IN ('queued','running') THEN NULL ELSE now() END WHERE id = $1")
            .bind(build)
            .bind(status)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// Insert an execution row as the dispatcher would; returns its id.
    pub async fn insert_execution(
        &self,
        build: Uuid,
        tenant: Uuid,
        attempt: i32,
        status: &str,
    ) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO build_executions (id, build_id, tenant_id, attempt, executor, status, cluster_namespace, pipeline_run_name)
             VALUES ($1, $2, $3, $4, 'test', $5, 'image-factory-test', $6)",
        )
        .bind(id)
        .bind(build)
        .bind(tenant)
        .bind(attempt)
        .bind(status)
        .bind(format!("if-test-{attempt}"))
        .execute(&self.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE builds SET attempts = GREATEST(attempts, $2) WHERE id = $1")
            .bind(build)
            .bind(attempt)
            .execute(&self.pool)
            .await
            .unwrap();
        id
    }

    pub async fn insert_log(&self, build: Uuid, execution: Uuid, position: i64, line: &str) {
        sqlx::query(
            "INSERT INTO build_logs (build_id, execution_id, source, position, line) VALUES ($1, $2, 'build/step-build', $3, $4)",
        )
        .bind(build)
        .bind(execution)
        .bind(position)
        .bind(line)
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

impl TestApp {
    pub async fn submit_build_raw(
        &self,
        token: &str,
        project: Uuid,
        provider: Uuid,
        credential: Option<Uuid>,
    ) -> Resp {
        self.post(
            "/api/v1/builds",
            token,
            json!({"project_id": project, "method": "docker", "infrastructure_provider_id": provider,
                   "registry_credential_id": credential, "image": "registry.example.com/team/app:1.0"}),
        )
        .await
    }
}
