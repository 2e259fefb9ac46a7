//! One `imagefactory serve` process on a fresh database, a kube-sim beside
//! it, and a tenant with a token of each role.

#![allow(dead_code)] // each attack module uses part of this

use std::time::Duration;

use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::namespace::ensure_namespace;
use imagefactory_exec::tekton::secrets::operator_docker_config;
use imagefactory_exec::tekton::tasks::install_tasks;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube_sim::tekton::ControllerOptions;
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};

use crate::common::{
    ADMIN_TOKEN, Http, Proc, ReservedDb, TERMINAL, free_port, fresh_database, serve_env,
};

pub struct Target {
    pub proc: Proc,
    pub http: Http,
    pub sim: KubeSimHandle,
    /// Dropped with the target (after a failure too).
    pub db: ReservedDb,
    pub port: u16,
    pub workdir: tempfile::TempDir,
}

/// Tokens of one tenant, one per role.
pub struct Tenant {
    pub id: String,
    pub admin: String,
    pub developer: String,
    pub viewer: String,
}

impl Target {
    /// `serve` with the embedded dispatcher and `extra` environment on top of
    /// the defaults (later entries win).
    pub async fn start(extra: &[(&str, String)]) -> Self {
        // The Tekton controller at 1/20 of real time: a build takes ~0.5 s.
        let sim = KubeSim::start(KubeSimOptions {
            tekton: Some(ControllerOptions {
                time_scale: 0.05,
                ..ControllerOptions::default()
            }),
            ..KubeSimOptions::default()
        })
        .await
        .expect("kube-sim starts");
        let db = fresh_database("attack");
        let port = free_port();
        let workdir = tempfile::tempdir().unwrap();
        let mut env = serve_env(&db.url, port, workdir.path(), "info");
        env.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(&["serve"], &env);
        let http = Http::new(port);
        http.wait_ready(&mut proc, Duration::from_secs(60)).await;
        Self {
            proc,
            http,
            sim,
            db,
            port,
            workdir,
        }
    }

    /// A new tenant with an admin, a developer and a viewer token.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let (tenant, admin) = self.http.tenant_with_token(name).await;
        let id = tenant["id"].as_str().unwrap().to_owned();
        let developer = self.token(&id, "developer").await;
        let viewer = self.token(&id, "viewer").await;
        Tenant {
            id,
            admin,
            developer,
            viewer,
        }
    }

    /// A new token of `role` for tenant `id`, made by the platform admin.
    pub async fn token(&self, id: &str, role: &str) -> String {
        self.http
            .created(
                &format!("/api/v1/tenants/{id}/tokens"),
                ADMIN_TOKEN,
                json!({"name": role, "role": role}),
            )
            .await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What an operator does before a tenant's first Tekton build: its
    /// namespace, Image Factory's Tasks and an empty `docker-config` Secret.
    /// Returns the namespace.
    pub async fn prepare_namespace(&self, tenant_id: &str) -> String {
        let client = self.sim.kube_client().await.unwrap();
        let tenant = tenant_id.parse().unwrap();
        let namespace = ensure_namespace(&client, tenant).await.unwrap();
        install_tasks(&client, TektonVersion::V1, &namespace)
            .await
            .unwrap();
        let secret = operator_docker_config(&namespace, br#"{"auths":{}}"#);
        Api::<Secret>::namespaced(client, &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        namespace
    }

    /// A project of the tenant `admin_token` belongs to; returns it.
    pub async fn project(&self, admin_token: &str, name: &str, git_url: &str) -> Value {
        self.http
            .created(
                "/api/v1/projects",
                admin_token,
                json!({"name": name, "git_url": git_url}),
            )
            .await
    }

    /// A tenant provider reaching kube-sim with its admin token.
    pub fn sim_provider_config(&self) -> Value {
        json!({
            "auth_method": "token",
            "endpoint": self.sim.endpoint(),
            "token": self.sim.admin_token(),
            "ca_cert": self.sim.ca_pem(),
        })
    }

    /// Polls a build until it is terminal; returns it.
    pub async fn wait_terminal(&self, token: &str, build_id: &str) -> Value {
        self.http
            .wait_build(
                token,
                build_id,
                &TERMINAL,
                &self.proc,
                Duration::from_secs(90),
            )
            .await
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Stops the process, then drops its database (with `self`).
    pub async fn stop(mut self) {
        self.proc.kill();
    }
}

/// The problem's `errors[].field` values.
pub use imagefactory_test_support::fields;
