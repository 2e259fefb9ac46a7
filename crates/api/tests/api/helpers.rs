//! `TestApp`: the real router served over TCP against a fresh, migrated
//! database (`TestDb`), with typed helpers for the usual steps.

use std::net::SocketAddr;
use std::time::Duration;

use imagefactory_api::{AppState, HttpLimits, router};
use imagefactory_domain::Secret;
use imagefactory_store::crypto::Cipher;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A freshly created and migrated database of the test's own, dropped when
/// the guard goes out of scope (after a failure too).
///
/// Not `#[sqlx::test]`: it names a test's database after the test's path and
/// first drops any database of that name, so two processes running this
/// binary against one PostgreSQL at the same time (CI while someone runs
/// the tests, sessions sharing a machine) dropped each other's databases in
/// the middle of a test. A random name cannot collide.
pub struct TestDb {
    pub pool: PgPool,
    name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        use sqlx::{ConnectOptions, Connection};
        let admin_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("if_api_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to PostgreSQL (DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let options: sqlx::postgres::PgConnectOptions = admin_url.parse().unwrap();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.database(&name).disable_statement_logging())
            .await
            .expect("connect to the test database");
        imagefactory_store::MIGRATOR
            .run(&pool)
            .await
            .expect("migrations");
        TestDb {
            pool,
            name,
            admin_url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // The test's runtime is finishing (or unwinding): drop the database
        // from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

pub struct TestApp {
    pub pool: PgPool,
    pub cipher: Cipher,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
}

/// A response as a user sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The problem `type`'s last segment, after checking the media type.
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

    pub fn fields(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }
}

/// A tenant with a token of each role.
pub struct TenantCtx {
    pub id: Uuid,
    pub admin: String,
    pub developer: String,
    pub viewer: String,
}

pub enum Body {
    None,
    Json(Value),
    Raw {
        content_type: &'static str,
        text: String,
    },
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, HttpLimits::default()).await
    }

    /// Served as the binary serves it: with the peer address of each
    /// connection (`ConnectInfo`), which the auth throttle counts by.
    pub async fn spawn_with(pool: PgPool, limits: HttpLimits) -> Self {
        let (cipher, _) = Cipher::random();
        let mut state = AppState::new(pool.clone(), cipher.clone(), Some(Secret::new(ADMIN_TOKEN)));
        state.log_poll_interval = Duration::from_millis(50);
        state.limits = limits;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            pool,
            cipher,
            addr,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Raw { content_type, text } => req.header("content-type", content_type).body(text),
        };
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = res.text().await.unwrap();
        Resp {
            status,
            content_type,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), Body::None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::POST, path, Some(token), Body::Json(body))
            .await
    }

    pub async fn post_empty(&self, path: &str, token: &str) -> Resp {
        self.send(Method::POST, path, Some(token), Body::None).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PATCH, path, Some(token), Body::Json(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, Some(token), Body::None)
            .await
    }

    pub async fn create_tenant(&self, name: &str) -> Uuid {
        let r = self
            .post("/api/v1/tenants", ADMIN_TOKEN, json!({"name": name}))
            .await;
        r.expect(201);
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    /// The platform admin opts the tenant in to local builds.
    pub async fn allow_local_builds(&self, tenant: Uuid) {
        self.patch(
            &format!("/api/v1/tenants/{tenant}"),
            ADMIN_TOKEN,
            json!({"allow_local_builds": true}),
        )
        .await
        .expect(200);
    }

    pub async fn create_token(&self, tenant: Uuid, role: &str) -> String {
        let r = self
            .post(
                &format!("/api/v1/tenants/{tenant}/tokens"),
                ADMIN_TOKEN,
                json!({"name": role, "role": role}),
            )
            .await;
        r.expect(201);
        r.json()["token"].as_str().unwrap().to_owned()
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
        let r = self
            .post(
                "/api/v1/projects",
                token,
                json!({"name": name, "git_url": "https://git.example.com/team/app.git"}),
            )
            .await;
        r.expect(201);
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn create_k8s_provider(&self, token: &str, name: &str) -> Uuid {
        let r = self
            .post(
                "/api/v1/providers",
                token,
                json!({"name": name, "provider_type": "kubernetes",
                       "config": {"auth_method": "token", "endpoint": "https://k8s.example.com:6443", "token": "tenant-token-value"}}),
            )
            .await;
        r.expect(201);
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn create_global_provider(&self, name: &str) -> Uuid {
        let r = self
            .post(
                "/api/v1/admin/providers",
                ADMIN_TOKEN,
                json!({"name": name, "provider_type": "kubernetes",
                       "config": {"auth_method": "token", "apiServer": "https://global.example.com", "token": "global-token-value"}}),
            )
            .await;
        r.expect(201);
        r.json()["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn submit_build(&self, token: &str, project: Uuid, provider: Uuid) -> Value {
        let r = self
            .post(
                "/api/v1/builds",
                token,
                json!({"project_id": project, "method": "docker", "infrastructure_provider_id": provider,
                       "image": "registry.example.com/team/app:1.0"}),
            )
            .await;
        r.expect(201);
        r.json()
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

pub fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().expect("id").parse().unwrap()
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
