//! Tekton executor benchmark: a real dispatcher (`Dispatcher` with the
//! `TektonExecutor` and `StoreSink` on a fresh PostgreSQL database) in THIS
//! process, kube-sim and its Tekton controller in a SEPARATE process (this
//! binary re-executed with `TEKTON_BENCH_ROLE=sim`), talking HTTPS.
//!
//! (a) Kubernetes API requests per build for 10 s and 10 min simulated builds
//!     (counted by the simulator);
//! (b) with `TEKTON_BENCH_INFLIGHT` (default 5000) builds in flight: resident
//!     memory of the dispatcher process per in-flight build, every build
//!     following a live log stream, above the idle baseline taken after one
//!     warm-up build; and condition change → database latency: from the
//!     moment the simulator commits a PipelineRun's terminal condition to the
//!     moment the build's terminal status is committed in PostgreSQL (a
//!     trigger NOTIFYs at commit; both clocks are this machine's wall clock);
//! (c) submit → PipelineRun created throughput (builds/s).
//!
//! `cargo bench --bench tekton`. Ends with one summary line:
//! `tekton: requests_per_build_10s=… requests_per_build_10m=… rss_kb_per_build=… status_p99_ms=… builds_per_s=…`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imagefactory_dispatch::{Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use imagefactory_domain::{
    BuildMethod, GitRef, GitUrl, ImageRef, InfrastructureType, MethodConfig, ProviderStatus,
    ProviderType, Secret,
};
use imagefactory_exec::tekton::client::ClusterSettings;
use imagefactory_exec::tekton::namespace::{ensure_namespace, namespace_name};
use imagefactory_exec::tekton::submit::run_name;
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::providers::{NewProvider, Owner};
use imagefactory_store::registry_credentials::NewRegistryCredential;
use imagefactory_store::{builds, projects, providers, registry_credentials, tenants};
use imagefactory_test_support::TestDb;
use kube_sim::cluster::{Cluster, ClusterError, ClusterEvent, Gvr, gvr};
use kube_sim::tekton::{Controller, ControllerOptions};
use kube_sim::{FaultAction, FaultRule, KubeSim, KubeSimOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---- live heap bytes (this process) ----

/// Counts live heap bytes, so the figures can say how much of the RSS growth
/// is heap the program holds (the rest: allocator slack, stacks, code).
struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn heap_kb() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed) as i64 / 1024
}

fn rss_kb() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn uptime() -> String {
    std::process::Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---- the simulator process ----

/// What the simulator process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SimConfig {
    /// Controller time scale (1 simulated s = `time_scale` real s).
    time_scale: f64,
    /// Duration of the `build` task's step in simulated seconds: each TaskRun
    /// gets a value spread evenly over `[build_min_s, build_max_s]` (from a
    /// hash of its name), as real builds do not all take equally long.
    build_min_s: f64,
    build_max_s: f64,
    /// The first build (the warm-up) takes 10 simulated seconds instead.
    quick_first: bool,
    /// Log lines the build step writes (spread over its duration).
    build_log_lines: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct SimReady {
    endpoint: String,
    token: String,
    ca_pem: String,
}

/// The Tekton controller's view of the cluster, with two additions: TaskRuns of
/// the `build` task get a script annotation with their (jittered) duration,
/// and the moment each PipelineRun's terminal condition is committed is noted.
struct BenchCluster {
    inner: Arc<dyn Cluster>,
    config: SimConfig,
    ended: Mutex<HashMap<String, i64>>,
    builds_seen: std::sync::atomic::AtomicUsize,
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

impl BenchCluster {
    fn build_duration(&self, name: &str) -> f64 {
        let unit = (fnv(name) % 10_000) as f64 / 10_000.0;
        self.config.build_min_s + unit * (self.config.build_max_s - self.config.build_min_s)
    }
}

fn terminal(obj: &Value) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Succeeded" && c["status"] != "Unknown")
        })
}

impl Cluster for BenchCluster {
    fn get(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.inner.get(gvr, namespace, name)
    }
    fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        self.inner.list(gvr, namespace)
    }
    fn create(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let build_task = object
            .pointer("/metadata/labels/tekton.dev~1pipelineTask")
            .and_then(Value::as_str)
            == Some("build");
        if *gvr == gvr::TASKRUNS && build_task {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let first = self.builds_seen.fetch_add(1, Ordering::Relaxed) == 0;
            let seconds = if first && self.config.quick_first {
                10.0
            } else {
                self.build_duration(&name)
            };
            let lines: Vec<String> = (0..self.config.build_log_lines)
                .map(|i| format!("build output line {i} of {name}"))
                .collect();
            let script = json!([{
                "task": "build",
                "duration": format!("{seconds:.3}s"),
                "logs": lines,
            }]);
            let meta = object["metadata"].as_object_mut().unwrap();
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            annotations["sim.imagefactory.io/script"] = json!(script.to_string());
        }
        self.inner.create(gvr, namespace, object)
    }
    fn update_status(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        let out = self.inner.update_status(gvr, namespace, name, status);
        if *gvr == gvr::PIPELINERUNS
            && let Ok(obj) = &out
            && terminal(obj)
        {
            self.ended
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_insert_with(unix_micros);
        }
        out
    }
    fn update(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Arc<Value>, ClusterError> {
        self.inner.update(gvr, namespace, object)
    }
    fn delete(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Result<(), ClusterError> {
        self.inner.delete(gvr, namespace, name)
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ClusterEvent> {
        self.inner.subscribe()
    }
    fn append_pod_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.inner.append_pod_log(namespace, pod, container, line)
    }
}

const COUNTED: [(&str, &str); 11] = [
    ("get", "namespaces"),
    ("create", "secrets"),
    ("get", "tasks"),
    ("get", "serviceaccounts"),
    ("list", "storageclasses"),
    ("create", "pipelineruns"),
    ("get", "pipelineruns"),
    ("list", "pipelineruns"),
    ("watch", "pipelineruns"),
    ("get", "taskruns"),
    ("get", "pods/log"),
];

/// The simulator process: starts kube-sim, prints its endpoint as one JSON
/// line, then answers commands on stdin (one per line) until stdin closes:
/// `count` (start counting API requests), `counts` (JSON object of counts),
/// `ended` (JSON object run name → unix µs of its terminal condition).
fn sim_main() {
    let config: SimConfig =
        serde_json::from_str(&std::env::var("TEKTON_BENCH_SIM").expect("TEKTON_BENCH_SIM"))
            .expect("sim config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let bench: Arc<Mutex<Option<Arc<BenchCluster>>>> = Arc::default();
        let slot = bench.clone();
        let options = ControllerOptions {
            time_scale: config.time_scale,
            default_step_duration: Duration::from_secs(2),
            pod_start_delay: Duration::from_secs(1),
            rules: Vec::new(),
            catalog: Vec::new(),
            host_steps: None,
        };
        let cfg = config.clone();
        let controller: kube_sim::Controller = Box::new(move |cluster| {
            let wrapped = Arc::new(BenchCluster {
                inner: cluster,
                config: cfg,
                ended: Mutex::new(HashMap::new()),
                builds_seen: Default::default(),
            });
            *slot.lock().unwrap() = Some(wrapped.clone());
            Controller::spawn(wrapped, options);
        });
        let sim = KubeSim::start(KubeSimOptions {
            default_storage_class: Some("standard".into()),
            controllers: vec![controller],
            ..Default::default()
        })
        .await
        .expect("kube-sim starts");
        let ready = SimReady {
            endpoint: sim.endpoint(),
            token: sim.admin_token().to_string(),
            ca_pem: sim.ca_pem().to_string(),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&ready).unwrap()).unwrap();
        out.flush().unwrap();
        drop(out);
        let mut counters: Vec<(String, u64)> = Vec::new();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(cmd)) = lines.next_line().await {
            let answer = match cmd.trim() {
                "count" => {
                    for (_, id) in counters.drain(..) {
                        sim.faults().remove(id);
                    }
                    let mut add = |key: String, verb: Option<&str>, resource: Option<&str>| {
                        let rule =
                            FaultRule::new(verb, resource, FaultAction::Latency(Duration::ZERO))
                                .times(u32::MAX);
                        counters.push((key, sim.faults().add(rule)));
                    };
                    add("total".into(), None, None);
                    for (v, r) in COUNTED {
                        add(format!("{v} {r}"), Some(v), Some(r));
                    }
                    json!({})
                }
                "counts" => {
                    let rules = sim.faults().list();
                    let mut counts = serde_json::Map::new();
                    for (key, id) in &counters {
                        let left = rules
                            .iter()
                            .find(|(rid, _)| rid == id)
                            .and_then(|(_, r)| r.times)
                            .unwrap_or(0);
                        counts.insert(key.clone(), json!(u32::MAX - left));
                    }
                    Value::Object(counts)
                }
                "ended" => {
                    let b = bench.lock().unwrap().clone().expect("controller started");
                    let ended = b.ended.lock().unwrap().clone();
                    json!(ended)
                }
                other => json!({ "error": format!("unknown command {other:?}") }),
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{answer}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// The parent's handle on the simulator process.
struct SimProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ready: SimReady,
}

impl SimProcess {
    async fn start(config: &SimConfig) -> SimProcess {
        let exe = std::env::current_exe().unwrap();
        let mut child = tokio::process::Command::new(exe)
            .env("TEKTON_BENCH_ROLE", "sim")
            // A profiler preloaded into the bench (heaptrack) profiles the
            // dispatcher only, not the simulator.
            .env_remove("LD_PRELOAD")
            .env("TEKTON_BENCH_SIM", serde_json::to_string(config).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the simulator process");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = stdout
            .next_line()
            .await
            .unwrap()
            .expect("simulator ready line");
        let ready: SimReady = serde_json::from_str(&line).expect("simulator ready JSON");
        SimProcess {
            child,
            stdin,
            stdout,
            ready,
        }
    }

    async fn ask(&mut self, command: &str) -> Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        let line = self.stdout.next_line().await.unwrap().expect("answer");
        serde_json::from_str(&line).unwrap()
    }

    fn provider_config(&self) -> Value {
        json!({
            "auth_method": "token",
            "endpoint": self.ready.endpoint,
            "token": self.ready.token,
            "ca_cert": self.ready.ca_pem,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

// ---- the dispatcher side ----

/// When the executor's end path passed its debug events (target
/// `END_TARGET`: `seen_ended`, `logs_drained`), by run name and stage (unix µs).
static END_EVENTS: Mutex<Option<HashMap<(String, String), i64>>> = Mutex::new(None);

/// Notes the executor's end-path events; every other event is filtered out
/// before it is built (per-layer filter), so the bench pays nothing for them.
struct EndEvents;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EndEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            run: String,
            stage: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "stage" {
                    self.stage = value.to_string();
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "run" => self.run = format!("{value:?}"),
                    "stage" => self.stage = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let at = unix_micros();
        END_EVENTS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert((fields.run, fields.stage), at);
    }
}

fn note_end_events() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};
    let _ = tracing_subscriber::registry()
        .with(EndEvents.with_filter(filter::filter_fn(|m| {
            m.target() == imagefactory_exec::tekton::executor::END_TARGET
        })))
        .try_init();
}

/// When each build's end passed the stages inside the dispatcher (unix µs),
/// to split condition → database latency: the executor calls
/// `ExecutionSink::artifacts` once the run has ended, its logs are drained
/// and its TaskRuns read; `start` returns the outcome after that write; the
/// dispatcher then records the outcome (the finish transaction).
#[derive(Default)]
struct EndStages {
    artifacts_called: HashMap<Uuid, i64>,
    artifacts_written: HashMap<Uuid, i64>,
    outcome: HashMap<Uuid, i64>,
}

/// The real executor, with the moments of [`EndStages`] noted around it.
struct TimedExecutor {
    inner: Arc<dyn imagefactory_exec::Executor>,
    stages: Arc<Mutex<EndStages>>,
}

struct TimedSink {
    inner: Arc<dyn imagefactory_exec::ExecutionSink>,
    build: Uuid,
    stages: Arc<Mutex<EndStages>>,
}

#[async_trait::async_trait]
impl imagefactory_exec::ExecutionSink for TimedSink {
    async fn reference(
        &self,
        reference: &imagefactory_exec::ExecutionRef,
    ) -> Result<(), imagefactory_exec::SinkError> {
        self.inner.reference(reference).await
    }
    async fn logs(
        &self,
        lines: &[imagefactory_exec::LogLine],
    ) -> Result<(), imagefactory_exec::SinkError> {
        self.inner.logs(lines).await
    }
    async fn artifact(
        &self,
        artifact: &imagefactory_exec::Artifact,
    ) -> Result<(), imagefactory_exec::SinkError> {
        self.inner.artifact(artifact).await
    }
    async fn artifacts(
        &self,
        artifacts: &[imagefactory_exec::Artifact],
    ) -> Result<(), imagefactory_exec::SinkError> {
        let called = unix_micros();
        let out = self.inner.artifacts(artifacts).await;
        let written = unix_micros();
        let mut stages = self.stages.lock().unwrap();
        stages.artifacts_called.insert(self.build, called);
        stages.artifacts_written.insert(self.build, written);
        out
    }
    async fn progress(&self, message: &str) -> Result<(), imagefactory_exec::SinkError> {
        self.inner.progress(message).await
    }
    async fn log_positions(&self) -> Result<HashMap<String, i64>, imagefactory_exec::SinkError> {
        self.inner.log_positions().await
    }
}

#[async_trait::async_trait]
impl imagefactory_exec::Executor for TimedExecutor {
    fn kind(&self) -> imagefactory_domain::ExecutorKind {
        self.inner.kind()
    }
    // Not an `async fn`: its future would hold the context (hundreds of
    // bytes) for the whole build and add that to the figure measured.
    fn start<'life0, 'async_trait>(
        &'life0 self,
        ctx: imagefactory_exec::ExecutionContext,
        sink: Arc<dyn imagefactory_exec::ExecutionSink>,
        stop: imagefactory_exec::StopSignal,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = imagefactory_exec::Outcome> + Send + 'async_trait>,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let build = ctx.build_id;
        let sink = Arc::new(TimedSink {
            inner: sink,
            build,
            stages: self.stages.clone(),
        });
        let work = self.inner.start(ctx, sink, stop);
        let stages = self.stages.clone();
        Box::pin(async move {
            let outcome = work.await;
            stages.lock().unwrap().outcome.insert(build, unix_micros());
            outcome
        })
    }
    async fn reattach(
        &self,
        ctx: imagefactory_exec::ExecutionContext,
        reference: imagefactory_exec::ExecutionRef,
        sink: Arc<dyn imagefactory_exec::ExecutionSink>,
        stop: imagefactory_exec::StopSignal,
    ) -> imagefactory_exec::Outcome {
        self.inner.reattach(ctx, reference, sink, stop).await
    }
    async fn outcome_recorded(&self, execution_id: Uuid, recorded: bool) {
        self.inner.outcome_recorded(execution_id, recorded).await
    }
}

struct Bench {
    pool: PgPool,
    /// Dropped with the bench (after a panic too).
    db: TestDb,
    tenant: Uuid,
    project: Uuid,
    provider: Uuid,
    credential: Uuid,
    /// Terminal-status commits, by build id (unix µs when the NOTIFY arrived).
    done: Arc<Mutex<HashMap<Uuid, i64>>>,
    done_signal: Arc<tokio::sync::Notify>,
    stages: Arc<Mutex<EndStages>>,
    dispatcher: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

const TERMINAL_TRIGGER: &str = "
CREATE FUNCTION bench_build_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'failed', 'cancelled', 'timed_out') AND NEW.status <> OLD.status THEN
        PERFORM pg_notify('bench_build_done', NEW.id::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_build_done AFTER UPDATE OF status ON builds
    FOR EACH ROW EXECUTE FUNCTION bench_build_done();";

impl Bench {
    async fn start(sim: &SimProcess, inflight: usize) -> Bench {
        let db = TestDb::with_pool("if_tekbench", 16, Duration::from_secs(120)).await;
        let pool = db.pool.clone();
        sqlx::raw_sql(TERMINAL_TRIGGER)
            .execute(&pool)
            .await
            .expect("trigger");

        let (cipher, _) = Cipher::random();
        let tenant = tenants::create(
            &pool,
            tenants::NewTenant {
                name: "bench".into(),
                display_name: "bench".into(),
                max_concurrent_builds: Some(inflight as i32 + 10),
                allow_local_builds: false,
            },
        )
        .await
        .unwrap()
        .id;
        let project = projects::create(
            &pool,
            &cipher,
            tenant,
            projects::NewProject {
                name: "web".into(),
                git_url: GitUrl::parse("https://git.example.com/team/app.git").unwrap(),
                default_branch: GitRef::parse("main").unwrap(),
                git_credential: None,
            },
        )
        .await
        .unwrap()
        .id;
        let credential = registry_credentials::create(
            &pool,
            &cipher,
            tenant,
            NewRegistryCredential {
                name: "push".into(),
                registry: "registry.example.com".into(),
                username: "bot".into(),
                password: Secret::new("registry-pw-bench"),
            },
        )
        .await
        .unwrap()
        .id;
        let provider = providers::create(
            &pool,
            &cipher,
            Owner::Global,
            NewProvider {
                name: "kube-sim".into(),
                provider_type: ProviderType::Kubernetes,
                config: sim.provider_config(),
                tekton_enabled: true,
                status: ProviderStatus::Active,
                max_concurrent_builds: None,
            },
        )
        .await
        .unwrap()
        .id;
        // The tenant namespace and the project's Tasks, as an operator would.
        let client = ClusterSettings::parse(
            &sim.provider_config(),
            imagefactory_domain::provider::ProviderOwner::Global,
        )
        .unwrap()
        .client()
        .await
        .unwrap();
        ensure_namespace(&client, tenant).await.unwrap();
        install_tasks(&client, TektonVersion::V1, &namespace_name(tenant))
            .await
            .unwrap();
        drop(client);

        let done: Arc<Mutex<HashMap<Uuid, i64>>> = Arc::default();
        let done_signal = Arc::new(tokio::sync::Notify::new());
        let mut listener = PgListener::connect_with(&pool).await.unwrap();
        listener.listen("bench_build_done").await.unwrap();
        {
            let (done, signal) = (done.clone(), done_signal.clone());
            tokio::spawn(async move {
                while let Ok(n) = listener.recv().await {
                    let at = unix_micros();
                    if let Ok(id) = n.payload().parse::<Uuid>() {
                        done.lock().unwrap().insert(id, at);
                        signal.notify_waiters();
                    }
                }
            });
        }

        let executor = TektonExecutor::new(TektonSettings {
            log_drain: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("tekton executor");
        let settings = DispatcherSettings {
            poll_interval: Duration::from_secs(1),
            max_in_flight: inflight + 10,
            claim_batch: 64,
            lease: Duration::from_secs(120),
            heartbeat_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            ..Default::default()
        };
        let stages: Arc<Mutex<EndStages>> = Arc::default();
        let executor = TimedExecutor {
            inner: Arc::new(executor),
            stages: stages.clone(),
        };
        let dispatcher = Dispatcher::new(
            pool.clone(),
            settings,
            Executors {
                tekton: Some(Arc::new(executor)),
                local: None,
            },
            Some(cipher),
            DispatcherMode::Standalone,
        );
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move { dispatcher.run(t).await.expect("dispatcher runs") });
        Bench {
            pool,
            db,
            tenant,
            project,
            provider,
            credential,
            done,
            done_signal,
            stages,
            dispatcher: Some((token, handle)),
        }
    }

    fn new_build(&self) -> builds::NewBuild {
        builds::NewBuild {
            tenant_id: self.tenant,
            project_id: self.project,
            method: BuildMethod::Kaniko,
            infrastructure_type: InfrastructureType::Kubernetes,
            infrastructure_provider_id: Some(self.provider),
            registry_credential_id: Some(self.credential),
            git_ref: Some(GitRef::parse("feature/login").unwrap()),
            image: ImageRef::parse("registry.example.com/team/app:1.0").unwrap(),
            priority: 0,
            timeout_seconds: 24 * 3600,
            created_by_token_id: None,
            config: MethodConfig {
                dockerfile: Some("build/Dockerfile".into()),
                context: Some(".".into()),
                ..Default::default()
            },
        }
    }

    /// Submit `n` builds through the store, 8 at a time, then wake the
    /// dispatchers (as the API does after its submits).
    async fn submit(&self, n: usize) -> Vec<Uuid> {
        use futures::StreamExt;
        let ids = futures::stream::iter(0..n)
            .map(|_| {
                let pool = self.pool.clone();
                let new = self.new_build();
                async move {
                    let build = builds::submit(&pool, &new).await.expect("submit");
                    build.expect("references of the bench's build refused").id
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        imagefactory_store::queue::wake_dispatchers(&self.pool)
            .await
            .expect("NOTIFY build_queued");
        ids
    }

    async fn wait_done(&self, ids: &[Uuid], patience: Duration) {
        let deadline = Instant::now() + patience;
        loop {
            let notified = self.done_signal.notified();
            let missing = {
                let done = self.done.lock().unwrap();
                ids.iter().filter(|id| !done.contains_key(id)).count()
            };
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} builds did not finish within {patience:?}",
                ids.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Panics with the reasons if any build failed: the figures would mean nothing.
    async fn assert_none_failed(&self) {
        let failed: Vec<(Uuid, Option<String>)> =
            sqlx::query_as("SELECT id, error_message FROM builds WHERE status = 'failed' LIMIT 5")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        assert!(failed.is_empty(), "builds failed: {failed:?}");
    }

    async fn statuses(&self) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT status, count(*) FROM builds GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn finish(mut self) {
        if let Some((token, handle)) = self.dispatcher.take() {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
        }
        self.pool.close().await;
        self.db.drop_db().await;
    }
}

// ---- per-component costs ----

/// Heap bytes `make` allocates and keeps, per call (median of 3 rounds of 200).
fn heap_per<T>(mut make: impl FnMut() -> T) -> i64 {
    let mut rounds: Vec<i64> = (0..3)
        .map(|_| {
            let before = LIVE_BYTES.load(Ordering::Relaxed) as i64;
            let kept: Vec<T> = (0..200).map(|_| make()).collect();
            let after = LIVE_BYTES.load(Ordering::Relaxed) as i64;
            drop(kept);
            (after - before) / 200
        })
        .collect();
    rounds.sort();
    rounds[1]
}

/// What one in-flight build holds, piece by piece, measured in this process.
async fn components(sim: &SimProcess, bench: &Bench, warm: Uuid) {
    use imagefactory_exec::tekton::logs::LogFollower;
    use imagefactory_exec::tekton::monitor::RunState;
    use imagefactory_exec::tekton::status::{run_summary, taskrun_summary};
    use imagefactory_exec::{ExecutionContext, Executor, GitSource, ProviderConnection};

    let settings = ClusterSettings::parse(
        &sim.provider_config(),
        imagefactory_domain::provider::ProviderOwner::Global,
    )
    .unwrap();
    let (client, logs) = settings.clients().await.unwrap();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        &namespace_name(bench.tenant),
        &imagefactory_exec::tekton::submit::pipelinerun_resource(TektonVersion::V1),
    );
    let run = api.get(&run_name(warm, 1)).await.unwrap();
    let full = serde_json::to_value(&run).unwrap();
    let full_heap = heap_per(|| full.clone());
    let summary_heap = heap_per(|| run_summary(&full));
    let taskruns: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        &namespace_name(bench.tenant),
        &imagefactory_exec::tekton::submit::taskrun_resource(TektonVersion::V1),
    );
    let clone_tr = serde_json::to_value(
        taskruns
            .get(
                &imagefactory_exec::tekton::status::child_taskruns(&full)
                    .into_iter()
                    .find(|(task, _)| task == "clone")
                    .expect("the clone TaskRun")
                    .1,
            )
            .await
            .unwrap(),
    )
    .unwrap();
    let tr_full_heap = heap_per(|| clone_tr.clone());
    let tr_summary_heap = heap_per(|| taskrun_summary(&clone_tr));

    let executor = TektonExecutor::new(TektonSettings::default())
        .await
        .unwrap();
    let ctx = ExecutionContext {
        build_id: Uuid::now_v7(),
        tenant_id: bench.tenant,
        project_id: bench.project,
        execution_id: Uuid::new_v4(),
        attempt: 1,
        method: imagefactory_domain::BuildMethod::Kaniko,
        source: GitSource {
            url: GitUrl::parse("https://git.example.com/team/app.git").unwrap(),
            git_ref: GitRef::parse("main").unwrap(),
            credential: None,
        },
        image: ImageRef::parse("registry.example.com/team/app:1.0").unwrap(),
        config: MethodConfig::default(),
        registry: None,
        provider: Some(ProviderConnection {
            provider_id: bench.provider,
            name: "kube-sim".into(),
            tekton_enabled: true,
            config_version: 1,
            config: imagefactory_exec::parse_provider_config(
                &sim.provider_config(),
                imagefactory_domain::provider::ProviderOwner::Global,
            ),
            owner: imagefactory_domain::provider::ProviderOwner::Global,
        }),
        timeout: Duration::from_secs(3600),
    };
    let ctx_heap = heap_per(|| ctx.clone());
    let sink: Arc<dyn imagefactory_exec::ExecutionSink> = Arc::new(
        imagefactory_dispatch::sink::StoreSink::new(bench.pool.clone(), warm, Uuid::new_v4()),
    );
    let (_stop_tx, stop) = tokio::sync::watch::channel(None);
    let start = executor.start(ctx.clone(), sink.clone(), stop.clone());
    let start_size = std::mem::size_of_val(&*start);
    drop(start);
    let (_state_tx, state_rx) = tokio::sync::watch::channel(RunState::Unknown);
    let follower = LogFollower {
        log_clients: logs.clone(),
        version: TektonVersion::V1,
        namespace: namespace_name(bench.tenant),
        sink,
        resume: HashMap::new(),
        run_state: None,
        finished_taskruns: Default::default(),
        reads: Default::default(),
        patience: std::time::Duration::from_secs(300),
    };
    let follow = follower.run(state_rx);
    let follow_size = std::mem::size_of_val(&follow);
    drop(follow);
    println!(
        "  per-build pieces (heap bytes): PipelineRun as JSON value {full_heap} B, its watch summary {summary_heap} B; finished clone TaskRun {tr_full_heap} B, kept summary {tr_summary_heap} B; ExecutionContext {ctx_heap} B; executor start future {start_size} B; log follower future {follow_size} B; log streams over {}",
        if logs.multiplexed() {
            "HTTP/2 (multiplexed)"
        } else {
            "HTTP/1.1 (a connection each)"
        }
    );
}

// ---- (a) requests per build ----

async fn requests_per_build(duration_s: f64, label: &str, n: usize) -> f64 {
    let sim = SimProcess::start(&SimConfig {
        time_scale: 0.02,
        build_min_s: duration_s,
        build_max_s: duration_s,
        quick_first: false,
        build_log_lines: 20,
    })
    .await;
    let mut sim = sim;
    let bench = Bench::start(&sim, n).await;
    // Steady state: one build first warms the per-cluster caches (namespace,
    // preflight, registry Secret) and the shared watch, as a running
    // dispatcher has them.
    let warm = bench.submit(1).await;
    bench.wait_done(&warm, Duration::from_secs(120)).await;
    sim.ask("count").await;
    let ids = bench.submit(n).await;
    bench
        .wait_done(
            &ids,
            Duration::from_secs(120 + (duration_s * 0.02) as u64 * 2),
        )
        .await;
    let counts = sim.ask("counts").await;
    let statuses = bench.statuses().await;
    assert_eq!(
        statuses,
        vec![("succeeded".to_string(), n as i64 + 1)],
        "every build succeeds"
    );
    let total = counts["total"].as_u64().unwrap_or(0);
    let parts: Vec<String> = COUNTED
        .iter()
        .map(|(v, r)| format!("{v} {r}={}", counts[format!("{v} {r}")]))
        .filter(|p| !p.ends_with("=0"))
        .collect();
    println!(
        "  {n} builds of {label} simulated: {total} API requests ({})",
        parts.join(", ")
    );
    bench.finish().await;
    total as f64 / n as f64
}

// ---- (b), (c) many builds in flight ----

struct InFlight {
    rss_kb_per_build: i64,
    status_p99_ms: f64,
    builds_per_s: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn in_flight(n: usize) -> InFlight {
    // Every build must still be running when the last one has been created
    // and is streaming, so the build step lasts a fixed part plus a spread;
    // the spread is what sets the end rate (real builds do not end together).
    let time_scale = 0.1;
    // Submitting 5,000 builds takes minutes on a loaded 2-core machine.
    let hold_s = 60.0 + n as f64 * 0.05; // real seconds before a build can end
    let spread_s = 30.0 + n as f64 * 0.004; // real seconds over which ends spread
    let config = SimConfig {
        time_scale,
        build_min_s: hold_s / time_scale,
        build_max_s: (hold_s + spread_s) / time_scale,
        quick_first: true,
        build_log_lines: 10,
    };
    println!(
        "  load: {n} kaniko builds; build step {:.0}–{:.0} s real (uniform by TaskRun name), clone ~0.3 s, {} log lines per build step; the end rate is printed below",
        hold_s,
        hold_s + spread_s,
        config.build_log_lines,
    );
    let mut sim = SimProcess::start(&config).await;
    let bench = Bench::start(&sim, n).await;
    let warm = bench.submit(1).await;
    bench.wait_done(&warm, Duration::from_secs(300)).await;
    components(&sim, &bench, warm[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (base_rss, base_heap) = (rss_kb(), heap_kb());
    println!(
        "  idle after one build: RSS {base_rss} kB, heap {base_heap} kB (dispatcher pid {}, simulator pid {})",
        std::process::id(),
        sim.pid()
    );

    let started = Instant::now();
    let ids = bench.submit(n).await;
    let submitted = started.elapsed();
    let want = n as i64 + 1;
    while bench
        .count("SELECT count(*) FROM build_executions WHERE pipeline_run_uid IS NOT NULL")
        .await
        < want
    {
        bench.assert_none_failed().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let created = started.elapsed();
    let builds_per_s = n as f64 / created.as_secs_f64();
    println!(
        "  submit → PipelineRun created: {n} in {:.1} s ({builds_per_s:.1} builds/s; submitting alone took {:.1} s)",
        created.as_secs_f64(),
        submitted.as_secs_f64()
    );
    // Every build following its live build-step log stream.
    while bench
        .count("SELECT count(DISTINCT execution_id) FROM build_logs WHERE source = 'build/build-and-push'")
        .await
        < want
    {
        bench.assert_none_failed().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let streaming = started.elapsed();
    let running = bench
        .count("SELECT count(*) FROM builds WHERE status = 'running'")
        .await;
    let (rss, heap) = (rss_kb(), heap_kb());
    let rss_kb_per_build = (rss - base_rss) / n as i64;
    println!(
        "  {running} running, all streaming after {:.1} s: RSS {rss} kB (+{} kB), heap {heap} kB (+{} kB) → {rss_kb_per_build} kB RSS, {} kB heap per in-flight build",
        streaming.as_secs_f64(),
        rss - base_rss,
        heap - base_heap,
        (heap - base_heap) / n as i64
    );
    assert_eq!(
        running, n as i64,
        "every build is still running at the measurement (raise the hold time)"
    );
    if std::env::var("TEKTON_BENCH_EXIT_AT_MEASURE").as_deref() == Ok("1") {
        // For heap profilers: what is live now is reported as "leaked".
        println!("  exiting at the measurement (TEKTON_BENCH_EXIT_AT_MEASURE=1)");
        std::process::exit(0);
    }

    bench
        .wait_done(&ids, Duration::from_secs(600 + n as u64 / 10))
        .await;
    let ended = sim.ask("ended").await;
    let ended: HashMap<String, i64> = serde_json::from_value(ended).unwrap();
    let done = bench.done.lock().unwrap().clone();
    let mut latencies: Vec<f64> = Vec::new();
    let mut ends: Vec<i64> = Vec::new();
    for id in &ids {
        let name = run_name(*id, 1);
        if let (Some(end), Some(db)) = (ended.get(&name), done.get(id)) {
            latencies.push((db - end) as f64 / 1000.0);
            ends.push(*end);
        }
    }
    {
        // The stages of the same latency, from the moments noted in the
        // dispatcher (same clock).
        let stages = bench.stages.lock().unwrap();
        let events = END_EVENTS.lock().unwrap().take().unwrap_or_default();
        let event =
            |name: &str, stage: &str| events.get(&(name.to_string(), stage.to_string())).copied();
        let mut parts: [Vec<f64>; 6] = Default::default();
        for id in &ids {
            let name = run_name(*id, 1);
            let (
                Some(end),
                Some(seen),
                Some(drained),
                Some(called),
                Some(written),
                Some(outcome),
                Some(db),
            ) = (
                ended.get(&name),
                event(&name, "seen_ended"),
                event(&name, "logs_drained"),
                stages.artifacts_called.get(id),
                stages.artifacts_written.get(id),
                stages.outcome.get(id),
                done.get(id),
            )
            else {
                continue;
            };
            for (i, (from, to)) in [
                (end, &seen),
                (&seen, &drained),
                (&drained, called),
                (called, written),
                (written, outcome),
                (outcome, db),
            ]
            .into_iter()
            .enumerate()
            {
                parts[i].push((to - from) as f64 / 1000.0);
            }
        }
        let names = [
            "condition → the executor sees the run ended (watch)",
            "→ logs drained",
            "→ TaskRuns read",
            "artifacts written",
            "→ outcome returned",
            "→ finish committed and its NOTIFY received",
        ];
        for (name, mut values) in names.into_iter().zip(parts) {
            values.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "    {name}: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                percentile(&values, 0.5),
                percentile(&values, 0.9),
                percentile(&values, 0.99),
                values.last().copied().unwrap_or(0.0)
            );
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ends.sort();
    let span_s = (ends.last().unwrap_or(&0) - ends.first().unwrap_or(&0)) as f64 / 1e6;
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for e in &ends {
        *per_second.entry(e / 1_000_000).or_default() += 1;
    }
    println!(
        "  ends: {} runs over {span_s:.1} s ({:.0}/s average, {}/s peak second)",
        ends.len(),
        ends.len() as f64 / span_s.max(0.001),
        per_second.values().max().copied().unwrap_or(0)
    );
    let p99 = percentile(&latencies, 0.99);
    println!(
        "  condition → database latency: p50 {:.0} ms, p90 {:.0} ms, p99 {p99:.0} ms, max {:.0} ms ({} samples)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    let statuses = bench.statuses().await;
    assert_eq!(
        statuses,
        vec![("succeeded".to_string(), n as i64 + 1)],
        "every build succeeds"
    );
    bench.finish().await;
    InFlight {
        rss_kb_per_build,
        status_p99_ms: p99,
        builds_per_s,
    }
}

fn main() {
    if std::env::var("TEKTON_BENCH_ROLE").as_deref() == Ok("sim") {
        sim_main();
        return;
    }
    note_end_events();
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let inflight: usize = std::env::var("TEKTON_BENCH_INFLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        println!(
            "tekton executor benchmark: dispatcher + TektonExecutor + PostgreSQL here, kube-sim + Tekton controller in its own process (HTTPS)"
        );
        println!("  {}", uptime());
        // `TEKTON_BENCH_ONLY_INFLIGHT=1` skips (a) (profiling runs; the
        // summary then shows NaN for it).
        let (r10s, r10m) = if std::env::var("TEKTON_BENCH_ONLY_INFLIGHT").as_deref() == Ok("1") {
            (f64::NAN, f64::NAN)
        } else {
            let r10s = requests_per_build(10.0, "10s", 20).await;
            let r10m = requests_per_build(600.0, "10m", 20).await;
            println!("  requests per build: 10s → {r10s:.1}, 10m → {r10m:.1}");
            (r10s, r10m)
        };
        let f = in_flight(inflight).await;
        println!("  {}", uptime());
        println!(
            "tekton: requests_per_build_10s={r10s:.1} requests_per_build_10m={r10m:.1} rss_kb_per_build={} status_p99_ms={:.0} builds_per_s={:.1}",
            f.rss_kb_per_build, f.status_p99_ms, f.builds_per_s
        );
    });
}
