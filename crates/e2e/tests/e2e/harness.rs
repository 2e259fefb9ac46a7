//! `TestApp`: the real pieces in one process — a fresh migrated PostgreSQL
//! database, kube-sim over HTTPS with the simulated Tekton controller and the
//! project's Tasks, the API router on 127.0.0.1:0 and in-process dispatchers
//! with the real `TektonExecutor` — plus typed HTTP helpers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use imagefactory_api::{AppState, router};
use imagefactory_dispatch::{Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{AddressPolicy, Secret};
use imagefactory_exec::tekton::client::ClusterSettings;
use imagefactory_exec::tekton::namespace::{ensure_namespace, namespace_name};
use imagefactory_exec::tekton::submit::pipelinerun_resource;
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion};
use imagefactory_store::crypto::Cipher;
use imagefactory_test_support::{ApiClient, Body, TestDb};
use kube::api::{DynamicObject, ListParams};
use kube_sim::tekton::{Controller, ControllerOptions, HostSteps, ScriptRule};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// Guard against hangs only; no assertion depends on how long anything takes.
pub const PATIENCE: Duration = Duration::from_secs(150);

pub use imagefactory_test_support::{TERMINAL, id_of};

pub struct Options {
    /// Step scripting rules for the simulated Tekton controller.
    pub rules: Vec<ScriptRule>,
    pub dispatchers: usize,
    pub settings: DispatcherSettings,
    /// The admin URL of the PostgreSQL server to make the test's database
    /// on (a `PgServer` of the test's own); `None`: `DATABASE_URL`'s.
    pub database_server: Option<String>,
    /// The pool's acquire timeout: how long a request waits for a
    /// connection before it is answered 503.
    pub acquire_timeout: Duration,
    /// Run every step for real with kube-sim's host step runner (the host's
    /// git, buildah, packer …) in real time, instead of simulating it.
    pub host_steps: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            dispatchers: 1,
            settings: fast_settings(),
            database_server: None,
            acquire_timeout: Duration::from_secs(60),
            host_steps: false,
        }
    }
}

/// Short leases and polls so takeovers and retries happen quickly.
pub fn fast_settings() -> DispatcherSettings {
    DispatcherSettings {
        poll_interval: Duration::from_millis(250),
        lease: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(500),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
        stop_grace: Duration::from_secs(20),
        max_attempts: 5,
        ..Default::default()
    }
}

pub struct RunningDispatcher {
    pub token: CancellationToken,
    pub task: JoinHandle<()>,
}

pub struct TestApp {
    pub pool: PgPool,
    pub cipher: Cipher,
    pub sim: KubeSimHandle,
    /// Unauthenticated; [`TestApp::api`] is the tenant's.
    pub client: ApiClient,
    pub tenant: Uuid,
    pub token: String,
    pub provider: Uuid,
    pub project: Uuid,
    pub credential: Uuid,
    pub settings: DispatcherSettings,
    pub dispatchers: Vec<RunningDispatcher>,
    db: TestDb,
    /// The host step runner's pods and claims, when it runs.
    _host_root: Option<tempfile::TempDir>,
}

async fn start_sim(rules: Vec<ScriptRule>, host_root: Option<&std::path::Path>) -> KubeSimHandle {
    let options = match host_root {
        // Real steps take real time: simulated time runs at wall-clock pace,
        // so timeouts mean what they say.
        Some(root) => ControllerOptions {
            time_scale: 1.0,
            pod_start_delay: Duration::ZERO,
            rules,
            host_steps: Some(HostSteps {
                root: root.to_path_buf(),
            }),
            ..ControllerOptions::default()
        },
        None => ControllerOptions {
            // 1 simulated second = 10 ms.
            time_scale: 0.01,
            default_step_duration: Duration::from_secs(2),
            pod_start_delay: Duration::from_secs(1),
            rules,
            catalog: Vec::new(),
            host_steps: None,
        },
    };
    let controller: kube_sim::Controller = Box::new(move |cluster| {
        Controller::spawn(cluster, options);
    });
    KubeSim::start(KubeSimOptions {
        default_storage_class: Some("standard".into()),
        controllers: vec![controller],
        ..Default::default()
    })
    .await
    .expect("kube-sim starts")
}

impl TestApp {
    pub async fn start(options: Options) -> TestApp {
        let admin = options
            .database_server
            .clone()
            .unwrap_or_else(imagefactory_test_support::admin_url);
        let db = TestDb::on_server(&admin, "if_e2e", 16, options.acquire_timeout).await;
        let pool = db.pool.clone();
        let host_root = options
            .host_steps
            .then(|| tempfile::tempdir().expect("a directory for the host step runner"));
        let sim = start_sim(options.rules, host_root.as_ref().map(|d| d.path())).await;
        let (cipher, _) = Cipher::random();
        let mut state = AppState::new(pool.clone(), cipher.clone(), Some(Secret::new(ADMIN_TOKEN)));
        state.log_poll_interval = Duration::from_millis(50);
        // kube-sim listens on 127.0.0.1: tenant providers may point there.
        state.provider_address_policy = loopback_policy();
        // The binary's Tekton seam (install, status) over the executor's code.
        state.tekton_ops = Some(Arc::new(imagefactory::connection::TektonTaskOps {
            policy: loopback_policy(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });

        let mut app = TestApp {
            pool,
            cipher,
            sim,
            client: ApiClient::new(format!("http://{addr}")),
            tenant: Uuid::nil(),
            token: String::new(),
            provider: Uuid::nil(),
            project: Uuid::nil(),
            credential: Uuid::nil(),
            settings: options.settings,
            dispatchers: Vec::new(),
            db,
            _host_root: host_root,
        };
        app.tenant = app.create_tenant("team-e2e").await;
        app.token = app.create_token(app.tenant, "admin").await;
        app.install_tasks(app.tenant).await;
        let config = app.sim_config();
        app.provider = app.create_global_provider("kube-sim", config).await;
        app.project = app.create_project("web").await;
        app.credential = app.create_credential("registry.example.com").await;
        for _ in 0..options.dispatchers {
            app.start_dispatcher().await;
        }
        app
    }

    /// Provider config reaching kube-sim as its admin, TLS verified against its CA.
    pub fn sim_config(&self) -> Value {
        json!({
            "auth_method": "token",
            "endpoint": self.sim.endpoint(),
            "token": self.sim.admin_token(),
            "ca_cert": self.sim.ca_pem(),
        })
    }

    pub fn namespace(&self) -> String {
        namespace_name(self.tenant)
    }

    /// The tenant's namespace with the project's Tasks, as an operator would.
    async fn install_tasks(&self, tenant: Uuid) {
        let client = ClusterSettings::parse(&self.sim_config(), ProviderOwner::Global)
            .unwrap()
            .client()
            .await
            .unwrap();
        ensure_namespace(&client, tenant).await.unwrap();
        install_tasks(&client, TektonVersion::V1, &namespace_name(tenant))
            .await
            .unwrap();
    }

    pub async fn start_dispatcher(&mut self) -> String {
        let dispatcher = new_dispatcher(
            self.pool.clone(),
            self.settings.clone(),
            self.cipher.clone(),
        )
        .await;
        let id = dispatcher.id().to_owned();
        let token = CancellationToken::new();
        let run_token = token.clone();
        let task = tokio::spawn(async move {
            dispatcher.run(run_token).await.expect("dispatcher runs");
        });
        self.dispatchers.push(RunningDispatcher { token, task });
        id
    }

    /// A dispatcher on a runtime of its own, so that [`CrashableDispatcher::crash`]
    /// ends every task it started at once (claim loop, heartbeat, watches, log
    /// streams) without handing anything over: a process crash, in process.
    pub fn start_crashable_dispatcher(&self) -> CrashableDispatcher {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (url, settings, cipher) = (
            self.db.url.clone(),
            self.settings.clone(),
            self.cipher.clone(),
        );
        let dispatcher_id = format!("crashable-{}", Uuid::new_v4().simple());
        let id = dispatcher_id.clone();
        runtime.spawn(async move {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .connect(&url)
                .await
                .unwrap();
            let dispatcher = new_dispatcher(pool, settings, cipher).await.with_id(id);
            let _ = dispatcher.run(CancellationToken::new()).await;
        });
        CrashableDispatcher {
            id: dispatcher_id,
            runtime: Some(runtime),
        }
    }

    /// Drop the whole database after the test; kube-sim ends with the handle.
    pub async fn finish(self) {
        for d in &self.dispatchers {
            d.token.cancel();
        }
        for d in self.dispatchers {
            let _ = tokio::time::timeout(Duration::from_secs(10), d.task).await;
        }
        self.pool.close().await;
        self.db.drop_db().await;
        self.sim.shutdown().await;
    }

    // ---- HTTP ----

    /// The API as the tenant's admin token.
    pub fn api(&self) -> ApiClient {
        self.client.as_token(&self.token)
    }

    fn admin(&self) -> ApiClient {
        self.client.as_token(ADMIN_TOKEN)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.api().get(&api_path(path)).await;
        (r.status, r.text)
    }

    /// GET as `token`; panics unless 200.
    pub async fn get_as(&self, token: &str, path: &str) -> Value {
        let r = self.client.as_token(token).get(&api_path(path)).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self.api().get(&api_path(path)).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }

    /// POST as `token`; panics unless the status is `expect`.
    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        let body = body.map_or(Body::None, Body::Json);
        let r = self
            .client
            .as_token(token)
            .send(Method::POST, &api_path(path), body)
            .await;
        assert_eq!(r.status, expect, "POST {path}: {}", r.text);
        serde_json::from_str(&r.text).unwrap_or(Value::Null)
    }

    pub async fn post(&self, path: &str, body: Option<Value>, expect: u16) -> Value {
        self.post_as(&self.token.clone(), path, body, expect).await
    }

    async fn create_tenant(&self, name: &str) -> Uuid {
        self.admin().create_tenant(name).await
    }

    async fn create_token(&self, tenant: Uuid, role: &str) -> String {
        self.admin().create_token(tenant, role).await
    }

    pub async fn create_global_provider(&self, name: &str, config: Value) -> Uuid {
        self.admin().create_global_provider(name, config).await
    }

    /// A provider of the tenant's own.
    pub async fn create_tenant_provider(&self, name: &str, config: Value) -> Uuid {
        self.api().create_provider(name, config).await
    }

    async fn create_project(&self, name: &str) -> Uuid {
        self.api()
            .create_project(name, "https://git.example.com/team/app.git")
            .await
    }

    async fn create_credential(&self, registry: &str) -> Uuid {
        self.api()
            .create_credential("push", registry, "bot", "registry-pw-e2e")
            .await
    }

    /// Another tenant with its own token, project, registry credential and
    /// the project's Tasks in its namespace, building on the global provider.
    pub async fn other_tenant(&self, name: &str, max_concurrent_builds: i32) -> OtherTenant {
        let tenant = self.bare_tenant(name, max_concurrent_builds).await;
        self.install_tasks(tenant.id).await;
        tenant
    }

    /// [`TestApp::other_tenant`] without the operator's step: no namespace,
    /// no Tasks on the cluster.
    pub async fn bare_tenant(&self, name: &str, max_concurrent_builds: i32) -> OtherTenant {
        let id = self
            .admin()
            .create_tenant_with(
                json!({"name": name, "max_concurrent_builds": max_concurrent_builds}),
            )
            .await;
        let token = self.create_token(id, "admin").await;
        let api = self.client.as_token(&token);
        let project = api
            .create_project("app", "https://git.example.com/other/app.git")
            .await;
        let credential = api
            .create_credential("push", "registry.example.com", "bot", "registry-pw-other")
            .await;
        OtherTenant {
            id,
            token,
            project,
            credential,
        }
    }

    /// [`TestApp::submit`] as another tenant (its project and credential,
    /// kaniko by default).
    pub async fn submit_as(&self, tenant: &OtherTenant, extra: Value) -> Uuid {
        let base = json!({
            "project_id": tenant.project,
            "method": "kaniko",
            "registry_credential_id": tenant.credential,
            "image": "registry.example.com/other/app:1.0",
        });
        self.submit_merged(&tenant.token, base, extra).await
    }

    /// Submit a build on the sim provider with the registry credential;
    /// `extra` fields (method, git_ref, config, ...) override the defaults.
    pub async fn submit(&self, extra: Value) -> Uuid {
        let base = json!({
            "project_id": self.project,
            "method": "docker",
            "registry_credential_id": self.credential,
            "image": "registry.example.com/team/app:1.0",
        });
        self.submit_merged(&self.token, base, extra).await
    }

    /// POST /builds of `base` on the app's provider, `extra` fields overriding.
    async fn submit_merged(&self, token: &str, mut body: Value, extra: Value) -> Uuid {
        body["infrastructure_provider_id"] = json!(self.provider);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        id_of(&self.client.as_token(token).submit_build(body).await)
    }

    pub async fn build(&self, id: Uuid) -> Value {
        self.api().build(id).await
    }

    pub async fn wait_status(&self, id: Uuid, wanted: &[&str]) -> Value {
        match self.api().poll_build(id, wanted, PATIENCE).await {
            Ok(build) => build,
            Err(b) => {
                let executions = self.executions(id).await;
                let runs: Vec<Value> = self
                    .pipelineruns(Some(id))
                    .await
                    .into_iter()
                    .map(|r| json!({"name": r["metadata"]["name"], "spec.status": r["spec"]["status"], "status": r["status"]["conditions"]}))
                    .collect();
                panic!(
                    "build {id} never reached {wanted:?}: {b}\nexecutions: {executions:?}\nPipelineRuns: {runs:?}"
                );
            }
        }
    }

    pub async fn wait_terminal(&self, id: Uuid) -> Value {
        self.wait_status(id, &TERMINAL).await
    }

    pub async fn logs(&self, id: Uuid) -> Vec<String> {
        let (status, text) = self.get_text(&format!("/builds/{id}/logs")).await;
        assert_eq!(status, 200, "{text}");
        text.lines().map(str::to_owned).collect()
    }

    pub async fn artifacts(&self, id: Uuid) -> BTreeMap<String, String> {
        self.get(&format!("/builds/{id}/artifacts")).await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_owned(),
                    a["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub async fn executions(&self, id: Uuid) -> Vec<Value> {
        self.get(&format!("/builds/{id}/executions")).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    // ---- kube-sim ----

    pub async fn kube(&self) -> kube::Client {
        self.sim.kube_client().await.unwrap()
    }

    /// PipelineRuns in the tenant namespace (all, or of one build).
    pub async fn pipelineruns(&self, build: Option<Uuid>) -> Vec<Value> {
        let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(
            self.kube().await,
            &self.namespace(),
            &pipelinerun_resource(TektonVersion::V1),
        );
        let mut lp = ListParams::default();
        if let Some(b) = build {
            lp = lp.labels(&format!("imagefactory.io/build-id={b}"));
        }
        api.list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }
}

/// As `IF_PROVIDER_ALLOW_LOOPBACK=true`: kube-sim is on loopback.
fn loopback_policy() -> Arc<AddressPolicy> {
    Arc::new(AddressPolicy::new(true))
}

async fn new_dispatcher(pool: PgPool, settings: DispatcherSettings, cipher: Cipher) -> Dispatcher {
    let executor = TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(20),
        cancel_grace: Duration::from_secs(30),
        address_policy: loopback_policy(),
        ..Default::default()
    })
    .await
    .expect("tekton executor");
    Dispatcher::new(
        pool,
        settings,
        Executors {
            tekton: Some(Arc::new(executor)),
            local: None,
        },
        Some(cipher),
        DispatcherMode::Embedded,
    )
}

/// A tenant made by [`TestApp::other_tenant`].
pub struct OtherTenant {
    pub id: Uuid,
    pub token: String,
    pub project: Uuid,
    pub credential: Uuid,
}

pub struct CrashableDispatcher {
    pub id: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CrashableDispatcher {
    /// Stop every task of this dispatcher where it stands.
    pub fn crash(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for CrashableDispatcher {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A path of the API's `/api/v1`.
fn api_path(path: &str) -> String {
    format!("/api/v1{path}")
}

/// A PipelineRun's params as name → value.
pub fn params(run: &Value) -> BTreeMap<String, Value> {
    run["spec"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["value"].clone()))
        .collect()
}

pub fn rule(
    task: &str,
    step: Option<&str>,
    duration: Option<&str>,
    logs: &[&str],
    exit_code: Option<i32>,
) -> ScriptRule {
    ScriptRule {
        task: Some(task.into()),
        step: step.map(str::to_string),
        duration: duration.map(str::to_string),
        logs: (!logs.is_empty()).then(|| logs.iter().map(|s| s.to_string()).collect()),
        exit_code,
        results: Default::default(),
    }
}

/// Whether `line` is one of the Tekton executor's operator lines (namespace,
/// PipelineRun created / re-attached, completion), which frame a build's
/// step logs.
pub fn is_operator_line(line: &str) -> bool {
    line.starts_with("Using Kubernetes namespace: ")
        || line.starts_with("Created PipelineRun: ")
        || line.starts_with("Re-attached to PipelineRun: ")
        || (line.starts_with("PipelineRun ") && line.contains(" finished: "))
        // An attempt that ended before its run existed (e.g. the create
        // failed through an outage): the next attempt's lines follow.
        || line.starts_with("Finished before a PipelineRun was created: ")
}

/// A build's log without the operator lines: its steps' lines.
pub fn step_lines(logs: &[String]) -> Vec<String> {
    logs.iter()
        .filter(|l| !is_operator_line(l))
        .cloned()
        .collect()
}
