//! kube-sim in-process, and what a cluster operator would do for a tenant
//! before its first build: namespace, Image Factory's Tasks, and the
//! operator-managed `docker-config` Secret.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::error::status_code;
use imagefactory_exec::tekton::namespace::ensure_namespace;
use imagefactory_exec::tekton::secrets::{OPERATOR_DOCKER_CONFIG, operator_docker_config};
use imagefactory_exec::tekton::tasks::install_tasks;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube_sim::tekton::{ControllerOptions, HostSteps};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};
use uuid::Uuid;

/// The default StorageClass kube-sim creates, so workspace claims bind.
const STORAGE_CLASS: &str = "standard";

/// HTTPS on 127.0.0.1, the Tekton controller running at `time_scale`; with
/// `host_steps`, the steps run for real on this host (kube-sim's host step
/// runner) instead of being simulated.
pub async fn start(
    port: u16,
    time_scale: f64,
    host_steps: Option<HostSteps>,
) -> anyhow::Result<KubeSimHandle> {
    KubeSim::start(KubeSimOptions {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        default_storage_class: Some(STORAGE_CLASS.into()),
        tekton: Some(ControllerOptions {
            time_scale,
            ..ControllerOptions::default()
        }),
        host_steps,
        ..KubeSimOptions::default()
    })
    .await
    .with_context(|| format!("starting kube-sim on 127.0.0.1:{port}"))
}

/// The provider `config` a tenant registers to reach the simulated cluster:
/// bearer token, TLS verified against kube-sim's CA.
pub fn provider_config(sim: &KubeSimHandle) -> Value {
    json!({
        "auth_method": "token",
        "endpoint": sim.endpoint(),
        "token": sim.admin_token(),
        "ca_cert": sim.ca_pem(),
    })
}

/// What [`prepare_tenant`] set up.
pub struct Prepared {
    pub namespace: String,
    pub tasks: Vec<String>,
}

/// Namespace `image-factory-<tenant8>`, the shipped Tasks in it, and an empty
/// `docker-config` Secret (builds without a registry credential push with it;
/// nothing is pushed on simulated steps, and `--real-steps` pushes to a local
/// registry without auth, so no auths are needed).
pub async fn prepare_tenant(sim: &KubeSimHandle, tenant: Uuid) -> anyhow::Result<Prepared> {
    let client = sim.kube_client().await.context("kube-sim admin client")?;
    let namespace = ensure_namespace(&client, tenant)
        .await
        .context("creating the tenant namespace on kube-sim")?;
    let tasks = install_tasks(&client, TektonVersion::V1, &namespace)
        .await
        .context("installing Image Factory's Tekton Tasks on kube-sim")?;
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let secret = operator_docker_config(&namespace, br#"{"auths":{}}"#);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        // A tenant namespace is new for each demo tenant, but an operator's
        // Secret that already exists is just as good.
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!("creating Secret {namespace}/{OPERATOR_DOCKER_CONFIG} on kube-sim")
            });
        }
    }
    Ok(Prepared { namespace, tasks })
}

/// kube-sim's admin kubeconfig, readable by the owner only (it holds the token).
pub fn write_kubeconfig(sim: &KubeSimHandle, path: &Path) -> anyhow::Result<()> {
    sim.write_kubeconfig(path)
        .with_context(|| format!("cannot write kubeconfig {}", path.display()))
}
