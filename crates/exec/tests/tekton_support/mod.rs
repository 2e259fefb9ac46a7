//! Shared pieces for the Tekton executor tests: kube-sim with the simulated
//! Tekton controller over HTTPS, an in-memory ExecutionSink and fixtures.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{AddressPolicy, BuildMethod, MethodConfig, Secret};
use imagefactory_exec::tekton::client::ClusterSettings;
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion};
use imagefactory_exec::{
    Artifact, ExecutionContext, ExecutionRef, ExecutionSink, Executor, GitSource, LogLine, Outcome,
    ProviderConnection, RegistryAuth, SinkError,
};
use kube_sim::tekton::{Controller, ControllerOptions, ScriptRule};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};
use uuid::Uuid;

pub struct Sim {
    pub handle: KubeSimHandle,
}

pub struct SimOptions {
    pub default_storage_class: Option<String>,
    pub rules: Vec<ScriptRule>,
    /// `tekton.dev` versions served (`None`: v1 and v1beta1).
    pub tekton_versions: Option<Vec<String>>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            default_storage_class: Some("standard".into()),
            rules: Vec::new(),
            tekton_versions: None,
        }
    }
}

impl Sim {
    pub async fn start(options: SimOptions) -> Sim {
        let rules = options.rules;
        let controller: kube_sim::Controller = Box::new(move |cluster| {
            Controller::spawn(
                cluster,
                ControllerOptions {
                    // 1 simulated second = 20 ms.
                    time_scale: 0.02,
                    default_step_duration: Duration::from_secs(2),
                    pod_start_delay: Duration::from_secs(1),
                    rules,
                    catalog: Vec::new(),
                    host_steps: None,
                },
            );
        });
        let handle = KubeSim::start(KubeSimOptions {
            default_storage_class: options.default_storage_class,
            controllers: vec![controller],
            tekton_versions: options.tekton_versions,
            ..Default::default()
        })
        .await
        .expect("kube-sim starts");
        Sim { handle }
    }

    /// A tenant's provider with `config`.
    pub fn provider_with(&self, config: Value) -> ProviderConnection {
        self.provider_owned(config, ProviderOwner::Tenant)
    }

    /// A provider of `owner` with `config`, parsed under that owner's rules
    /// as the dispatcher does.
    pub fn provider_owned(&self, config: Value, owner: ProviderOwner) -> ProviderConnection {
        ProviderConnection {
            provider_id: Uuid::new_v4(),
            name: "sim".into(),
            tekton_enabled: true,
            config_version: 1,
            config: imagefactory_exec::parse_provider_config(&config, owner),
            owner,
        }
    }

    /// A token provider for the sim's admin, TLS verified against its CA.
    pub fn provider(&self) -> ProviderConnection {
        self.provider_with(self.config())
    }

    pub fn config(&self) -> Value {
        json!({
            "auth_method": "token",
            "endpoint": self.handle.endpoint(),
            "token": self.handle.admin_token(),
            "ca_cert": self.handle.ca_pem(),
        })
    }

    pub async fn admin(&self) -> kube::Client {
        self.handle.kube_client().await.unwrap()
    }

    /// Create the tenant namespace and install Image Factory's Tasks in it.
    pub async fn install_tasks(&self, tenant: Uuid) {
        let settings = tenant_settings(&self.config());
        let client = settings.client().await.unwrap();
        imagefactory_exec::tekton::namespace::ensure_namespace(&client, tenant)
            .await
            .unwrap();
        install_tasks(&client, self.version().await, &namespace_name(tenant))
            .await
            .unwrap();
    }

    /// The Tekton version the executor picks from the cluster's discovery.
    pub async fn version(&self) -> TektonVersion {
        let served = imagefactory_exec::tekton::client::tekton_versions(&self.admin().await)
            .await
            .unwrap();
        TektonVersion::choose(&served).expect("tekton.dev is served")
    }

    /// Every PipelineRun in the tenant namespace, as JSON (in the version
    /// the cluster serves, v1 first).
    pub async fn pipelineruns(&self, tenant: Uuid) -> Vec<Value> {
        self.pipelineruns_in(&namespace_name(tenant)).await
    }

    /// Every PipelineRun in `namespace`, as JSON.
    pub async fn pipelineruns_in(&self, namespace: &str) -> Vec<Value> {
        let version = self.version().await;
        let client = self.admin().await;
        let ar = imagefactory_exec::tekton::submit::pipelinerun_resource(version);
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client, namespace, &ar);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }
}

/// The providers here are a tenant's pointing at kube-sim on 127.0.0.1, as
/// `IF_PROVIDER_ALLOW_LOOPBACK=true` allows.
pub fn loopback_policy() -> Arc<AddressPolicy> {
    Arc::new(AddressPolicy::new(true))
}

/// A tenant provider's cluster settings for `config`, loopback allowed.
pub fn tenant_settings(config: &Value) -> ClusterSettings {
    ClusterSettings::parse(config, ProviderOwner::Tenant)
        .unwrap()
        .with_address_policy(loopback_policy())
}

pub async fn executor() -> TektonExecutor {
    TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(20),
        cancel_grace: Duration::from_secs(30),
        address_policy: loopback_policy(),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub fn context(
    method: BuildMethod,
    provider: ProviderConnection,
    tenant: Uuid,
) -> ExecutionContext {
    let config = MethodConfig {
        dockerfile: Some("build/Dockerfile".into()),
        context: Some(".".into()),
        build_args: BTreeMap::from([("VERSION".into(), "1.0".into())]),
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        packer_template: Some("image.pkr.hcl".into()),
        packer_vars: BTreeMap::from([("region".into(), "eu".into())]),
        ..Default::default()
    };
    ExecutionContext {
        build_id: Uuid::now_v7(),
        tenant_id: tenant,
        project_id: Uuid::new_v4(),
        execution_id: Uuid::new_v4(),
        attempt: 1,
        method,
        source: GitSource {
            url: imagefactory_domain::GitUrl::parse("https://git.example.com/team/app.git")
                .unwrap(),
            git_ref: imagefactory_domain::GitRef::parse("feature/login").unwrap(),
            credential: None,
        },
        image: imagefactory_domain::ImageRef::parse("registry.example.com/team/app:1.0").unwrap(),
        config,
        registry: Some(RegistryAuth {
            credential_id: Uuid::new_v4(),
            version: 1,
            registry: "registry.example.com".into(),
            username: "bot".into(),
            password: Secret::new("s3cret"),
        }),
        provider: Some(provider),
        timeout: Duration::from_secs(3600),
    }
}

/// Records what the executor reports; `sent` counts every line received so
/// duplicates show up.
#[derive(Default)]
pub struct MemorySink {
    pub references: Mutex<Vec<ExecutionRef>>,
    pub lines: Mutex<Vec<LogLine>>,
    pub artifacts: Mutex<Vec<Artifact>>,
    pub progress: Mutex<Vec<String>>,
    /// How many of the next `reference` calls fail (the database away).
    pub failing_references: Mutex<u32>,
    /// While set, `logs` waits before storing the steps' lines (a sink
    /// retrying while the database is away; the executor's own lines pass).
    pub holding_logs: std::sync::atomic::AtomicBool,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn artifact(&self, name: &str) -> Option<String> {
        self.artifacts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.clone())
    }

    /// Sources in the order their first line arrived.
    pub fn sources(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.lines.lock().unwrap().iter() {
            if !out.contains(&l.source) {
                out.push(l.source.clone());
            }
        }
        out
    }

    /// Panics unless every source's positions are exactly 0, 1, 2, ... once each.
    pub fn assert_no_duplicates_or_gaps(&self) {
        let mut by_source: HashMap<String, Vec<i64>> = HashMap::new();
        for l in self.lines.lock().unwrap().iter() {
            by_source
                .entry(l.source.clone())
                .or_default()
                .push(l.position);
        }
        for (source, positions) in by_source {
            let expected: Vec<i64> = (0..positions.len() as i64).collect();
            assert_eq!(positions, expected, "log positions of {source}");
        }
    }

    /// Whether any source logged exactly `line`.
    pub fn logged(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.line == line)
    }

    pub fn text(&self, source: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.source == source)
            .map(|l| l.line.clone())
            .collect()
    }
}

#[async_trait]
impl ExecutionSink for MemorySink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        let mut failing = self.failing_references.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Err(SinkError("the database is away".into()));
        }
        self.references.lock().unwrap().push(reference.clone());
        Ok(())
    }
    async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError> {
        while lines.iter().any(|l| l.source != "imagefactory")
            && self.holding_logs.load(std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lines.lock().unwrap().extend_from_slice(lines);
        Ok(())
    }
    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError> {
        self.artifacts.lock().unwrap().push(artifact.clone());
        Ok(())
    }
    async fn progress(&self, message: &str) -> Result<(), SinkError> {
        self.progress.lock().unwrap().push(message.to_string());
        Ok(())
    }
    async fn log_positions(&self) -> Result<HashMap<String, i64>, SinkError> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for l in self.lines.lock().unwrap().iter() {
            let e = out.entry(l.source.clone()).or_insert(-1);
            *e = (*e).max(l.position);
        }
        Ok(out)
    }
}

pub fn no_stop() -> (
    tokio::sync::watch::Sender<Option<imagefactory_exec::StopReason>>,
    imagefactory_exec::StopSignal,
) {
    tokio::sync::watch::channel(None)
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

/// The message of an outcome that carries one, else its debug form.
pub fn message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed { message }
        | Outcome::Cancelled { message }
        | Outcome::TimedOut { message }
        | Outcome::Transient { message }
        | Outcome::Unreachable { message } => message.clone(),
        other => format!("{other:?}"),
    }
}

/// Runs `ctx` to its end on a fresh executor, never stopped: the outcome
/// and what the build wrote.
pub async fn run_to_end(ctx: ExecutionContext) -> (Outcome, Arc<MemorySink>) {
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = executor().await.start(ctx, sink.clone(), stop).await;
    (outcome, sink)
}
