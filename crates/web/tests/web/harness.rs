//! One process with the real pieces: a fresh migrated database, kube-sim
//! over HTTPS with the simulated Tekton controller (steps slowed down so a
//! build runs long enough to watch), an embedded dispatcher with the real
//! Tekton executor, and `imagefactory_web::app` (dashboard + API) on
//! 127.0.0.1:0 with the client address recorded as `serve` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imagefactory_api::AppState;
use imagefactory_dispatch::{Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{AddressPolicy, Secret};
use imagefactory_exec::tekton::client::ClusterSettings;
use imagefactory_exec::tekton::namespace::{ensure_namespace, namespace_name};
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion};
use imagefactory_store::crypto::Cipher;
use imagefactory_test_support::{ApiClient, TestDb, id_of};
use kube_sim::tekton::{Controller, ControllerOptions, ScriptRule};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "web-test-admin-token";
/// Guards against hangs only; nothing asserts how long anything takes.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub struct Env {
    pub base: String,
    pub admin: ApiClient,
    pub tenant: Uuid,
    pub token: String,
    pub project: Uuid,
    pub provider: Uuid,
    pub credential: Uuid,
    sim: KubeSimHandle,
    db: TestDb,
    stop: CancellationToken,
}

/// Every step takes 10 real seconds and writes a line every second, so a
/// build is watchable (and cancellable) while it runs.
fn slow_steps() -> Vec<ScriptRule> {
    let logs = (1..=10).map(|i| format!("progress line {i}")).collect();
    vec![ScriptRule {
        task: None,
        step: None,
        duration: Some("1000s".into()),
        logs: Some(logs),
        exit_code: None,
        results: Default::default(),
    }]
}

async fn start_sim() -> KubeSimHandle {
    let controller: kube_sim::Controller = Box::new(move |cluster| {
        Controller::spawn(
            cluster,
            ControllerOptions {
                // 1 simulated second = 10 ms.
                time_scale: 0.01,
                default_step_duration: Duration::from_secs(2),
                pod_start_delay: Duration::from_secs(1),
                rules: slow_steps(),
                catalog: Vec::new(),
                host_steps: None,
            },
        );
    });
    KubeSim::start(KubeSimOptions {
        default_storage_class: Some("standard".into()),
        controllers: vec![controller],
        ..Default::default()
    })
    .await
    .expect("kube-sim starts")
}

fn loopback() -> Arc<AddressPolicy> {
    Arc::new(AddressPolicy::new(true))
}

async fn start_dispatcher(pool: sqlx::PgPool, cipher: Cipher, stop: CancellationToken) {
    let executor = TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(5),
        cancel_grace: Duration::from_secs(5),
        address_policy: loopback(),
        ..Default::default()
    })
    .await
    .expect("tekton executor");
    let settings = DispatcherSettings {
        poll_interval: Duration::from_millis(250),
        lease: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        ..Default::default()
    };
    let dispatcher = Dispatcher::new(
        pool,
        settings,
        Executors {
            tekton: Some(Arc::new(executor)),
            local: None,
        },
        Some(cipher),
        DispatcherMode::Embedded,
    );
    tokio::spawn(async move { dispatcher.run(stop).await.expect("dispatcher runs") });
}

impl Env {
    pub async fn start() -> Env {
        let db = TestDb::with_prefix("if_web").await;
        let sim = start_sim().await;
        let (cipher, _) = Cipher::random();
        let mut state = AppState::new(
            db.pool.clone(),
            cipher.clone(),
            Some(Secret::new(ADMIN_TOKEN)),
        );
        state.log_poll_interval = Duration::from_millis(100);
        state.provider_address_policy = loopback();
        state.connection_tester =
            Some(Arc::new(imagefactory::connection::TektonConnectionTester {
                policy: loopback(),
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = imagefactory_web::app(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let stop = CancellationToken::new();
        start_dispatcher(db.pool.clone(), cipher, stop.clone()).await;

        let admin = ApiClient::new(base.clone()).as_token(ADMIN_TOKEN);
        let mut env = Env {
            base,
            admin,
            tenant: Uuid::nil(),
            token: String::new(),
            project: Uuid::nil(),
            provider: Uuid::nil(),
            credential: Uuid::nil(),
            sim,
            db,
            stop,
        };
        let (tenant, token) = env.tenant("team-web").await;
        env.tenant = tenant;
        env.token = token;
        env.provider = env
            .admin
            .create_global_provider("kube-sim", env.sim_config())
            .await;
        let api = env.api();
        env.project = api
            .create_project("webapp", "https://git.example.com/team/webapp.git")
            .await;
        env.credential = api
            .create_credential("push", "registry.example.com", "bot", "registry-pw-web")
            .await;
        env
    }

    /// A tenant with an admin token and its namespace and Tasks on kube-sim.
    pub async fn tenant(&self, name: &str) -> (Uuid, String) {
        let tenant = self.admin.create_tenant(name).await;
        let token = self.admin.create_token(tenant, "admin").await;
        let client = ClusterSettings::parse(&self.sim_config(), ProviderOwner::Global)
            .unwrap()
            .client()
            .await
            .unwrap();
        ensure_namespace(&client, tenant).await.unwrap();
        install_tasks(&client, TektonVersion::V1, &namespace_name(tenant))
            .await
            .unwrap();
        (tenant, token)
    }

    /// Provider config reaching kube-sim as its admin, TLS verified.
    pub fn sim_config(&self) -> Value {
        json!({
            "auth_method": "token",
            "endpoint": self.sim.endpoint(),
            "token": self.sim.admin_token(),
            "ca_cert": self.sim.ca_pem(),
        })
    }

    pub fn api(&self) -> ApiClient {
        ApiClient::new(self.base.clone()).as_token(&self.token)
    }

    /// A docker build of the tenant's project on kube-sim.
    pub async fn submit(&self) -> Uuid {
        id_of(
            &self
                .api()
                .submit_build(json!({
                    "project_id": self.project,
                    "method": "docker",
                    "infrastructure_provider_id": self.provider,
                    "registry_credential_id": self.credential,
                    "image": "registry.example.com/team/webapp:1.0",
                }))
                .await,
        )
    }

    pub async fn finish(self) {
        self.stop.cancel();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.db.drop_db().await;
        self.sim.shutdown().await;
    }
}
