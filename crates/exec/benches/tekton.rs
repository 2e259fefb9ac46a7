//! Tekton executor benchmark against kube-sim (in-process, HTTPS):
//! (a) Kubernetes API requests per build for 10 s and 10 min simulated builds;
//! (b) resident memory per in-flight build (live log stream included) and
//!     condition-change → outcome latency p99 with many builds in flight;
//! (c) submit → PipelineRun created throughput.
//! `cargo bench --bench tekton`; `TEKTON_BENCH_INFLIGHT` sets the in-flight
//! count (default 1000). Ends with one `tekton: ...` summary line.

#[path = "../tests/tekton_support/mod.rs"]
mod tekton_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagefactory_domain::BuildMethod;
use imagefactory_exec::{Executor, Outcome};
use kube_sim::cluster::EventKind;
use kube_sim::{FaultAction, FaultRule};
use tekton_support::*;
use uuid::Uuid;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Counts every API request the simulator serves (a zero-latency fault rule
/// with a huge budget; the budget left tells how many requests it saw).
struct RequestCounter<'a> {
    sim: &'a Sim,
    id: u64,
}

impl<'a> RequestCounter<'a> {
    fn start(sim: &'a Sim) -> Self {
        Self::of(sim, None, None)
    }

    /// Counts only requests of this verb and resource.
    fn of(sim: &'a Sim, verb: Option<&str>, resource: Option<&str>) -> Self {
        let rule =
            FaultRule::new(verb, resource, FaultAction::Latency(Duration::ZERO)).times(u32::MAX);
        Self {
            sim,
            id: sim.handle.faults().add(rule),
        }
    }

    fn count(&self) -> u64 {
        let rules = self.sim.handle.faults().list();
        let left = rules
            .iter()
            .find(|(id, _)| *id == self.id)
            .and_then(|(_, r)| r.times)
            .unwrap_or(0);
        u64::from(u32::MAX - left)
    }
}

async fn requests_per_build(duration: &str, builds: usize) -> f64 {
    let lines: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some(duration), &refs, None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = Arc::new(executor().await);
    // All builds go to one provider, as in production: one client, one watch.
    let provider = sim.provider();
    // Steady state: one build first warms the per-cluster caches (namespace,
    // preflight) and the shared watch, as a running dispatcher has them.
    let (_tx, stop) = no_stop();
    let warm = executor
        .start(
            context(BuildMethod::Kaniko, provider.clone(), tenant),
            MemorySink::new(),
            stop,
        )
        .await;
    assert_eq!(warm, Outcome::Succeeded);
    let counter = RequestCounter::start(&sim);
    let kinds = [
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
    let breakdown: Vec<(String, RequestCounter)> = kinds
        .iter()
        .map(|(v, r)| {
            (
                format!("{v} {r}"),
                RequestCounter::of(&sim, Some(v), Some(r)),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..builds {
        let executor = executor.clone();
        let ctx = context(BuildMethod::Kaniko, provider.clone(), tenant);
        tasks.push(tokio::spawn(async move {
            let (_tx, stop) = no_stop();
            executor.start(ctx, MemorySink::new(), stop).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Succeeded);
    }
    let total = counter.count();
    let parts: Vec<String> = breakdown
        .iter()
        .map(|(k, c)| format!("{k}={}", c.count()))
        .collect();
    println!(
        "  {builds} builds of {duration} simulated: {total} API requests ({})",
        parts.join(", ")
    );
    total as f64 / builds as f64
}

struct InFlight {
    rss_kb_per_build: i64,
    status_p99_ms: u128,
    builds_per_s: f64,
}

async fn in_flight(builds: usize) -> InFlight {
    let lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    // Long enough that every build is in flight at once; 1 simulated s = 20 ms.
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("30m"), &refs, None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = Arc::new(executor().await);
    // All builds go to one provider, as in production: one client, one watch.
    let provider = sim.provider();
    // Record when each run's terminal condition lands in the cluster.
    let ended: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let mut events = sim.handle.cluster().subscribe();
        let ended = ended.clone();
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                if ev.kind != EventKind::Modified || ev.gvr.plural != "pipelineruns" {
                    continue;
                }
                let done = ev.object["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Succeeded" && c["status"] != "Unknown")
                    });
                if done && let Some(name) = ev.object["metadata"]["name"].as_str() {
                    ended
                        .lock()
                        .unwrap()
                        .entry(name.to_string())
                        .or_insert_with(Instant::now);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kb();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut sinks = Vec::new();
    for _ in 0..builds {
        let executor = executor.clone();
        let mut ctx = context(BuildMethod::Kaniko, provider.clone(), tenant);
        // Submitting thousands takes a while; only the step's length matters.
        ctx.timeout = Duration::from_secs(24 * 3600);
        let sink = MemorySink::new();
        sinks.push(sink.clone());
        tasks.push(tokio::spawn(async move {
            let (_tx, stop) = no_stop();
            let outcome = executor.start(ctx, sink.clone(), stop).await;
            (
                outcome,
                Instant::now(),
                sink.references.lock().unwrap()[0].name.clone().unwrap(),
            )
        }));
    }
    // Submit throughput: until every run exists.
    while sinks
        .iter()
        .any(|s| s.references.lock().unwrap().is_empty())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let builds_per_s = builds as f64 / started.elapsed().as_secs_f64();
    // Memory with every build following a live build-step log stream.
    while sinks
        .iter()
        .any(|s| s.text("build/build-and-push").is_empty())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let loaded = rss_kb();
    let rss_kb_per_build = (loaded as i64 - baseline as i64) / builds as i64;
    println!("  {builds} in flight: RSS {baseline} kB idle → {loaded} kB (simulator included)");
    let mut latencies = Vec::new();
    for t in tasks {
        let (outcome, at, name) = t.await.unwrap();
        assert_eq!(outcome, Outcome::Succeeded);
        if let Some(end) = ended.lock().unwrap().get(&name) {
            latencies.push(at.saturating_duration_since(*end).as_millis());
        }
    }
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    println!(
        "  condition → outcome latency: p50 {} ms, p99 {p99} ms ({} samples)",
        latencies.get(latencies.len() / 2).copied().unwrap_or(0),
        latencies.len()
    );
    InFlight {
        rss_kb_per_build,
        status_p99_ms: p99,
        builds_per_s,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let inflight: usize = std::env::var("TEKTON_BENCH_INFLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
        println!("tekton executor benchmark (kube-sim in-process, HTTPS, time scale 1 s = 20 ms)");
        let r10s = requests_per_build("10s", 20).await;
        let r10m = requests_per_build("10m", 20).await;
        println!("  requests per build: 10s → {r10s:.1}, 10m → {r10m:.1}");
        let f = in_flight(inflight).await;
        println!(
            "tekton: requests_per_build_10s={r10s:.1} requests_per_build_10m={r10m:.1} rss_kb_per_build={} status_p99_ms={} builds_per_s={:.1}",
            f.rss_kb_per_build, f.status_p99_ms, f.builds_per_s
        );
    });
}
