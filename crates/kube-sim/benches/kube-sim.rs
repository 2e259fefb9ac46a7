//! kube-sim benchmark, with the Tekton controller plugged in as in the quick start:
//!
//! - raw create throughput over HTTPS/HTTP2 with pre-serialized bodies (pending
//!   PipelineRuns, so the controller only marks them pending);
//! - PipelineRun create→terminal throughput through kube-rs over HTTPS: runs with
//!   one instant step, created as fast as the client goes, until every one is terminal;
//! - peak concurrent in-flight runs: runs whose step lasts an hour, created through
//!   kube-rs; counts runs started and not finished;
//! - concurrent watches (HTTP/2 streams, each checked to receive every event).
//!
//! Ends with one summary line: `kube-sim: creates_per_s=<n> inflight=<n> watches=<n>`
//! (`creates_per_s`: kube-rs creates per second while the controller runs them).
//!
//! Sizes: KUBE_SIM_BENCH_CREATES (default 5000), KUBE_SIM_BENCH_INFLIGHT (10000),
//! KUBE_SIM_BENCH_WATCHES (10000), KUBE_SIM_BENCH_CONCURRENCY (64).

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_sim::cluster::gvr;
use kube_sim::store::{Store, storage_kind};
use kube_sim::tekton::ControllerOptions;
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A run of one task with one step (its duration is the controller's default);
/// `pending` ones are not started by the controller.
fn pipelinerun(name: &str, pending: bool) -> DynamicObject {
    let mut pr = json!({
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": name, "labels": {"bench": "true"}},
        "spec": {
            "params": [{"name": "image", "value": "registry.local/app:1"}],
            "pipelineSpec": {
                "params": [{"name": "image"}],
                "tasks": [{"name": "build", "taskSpec": {"steps": [{"name": "build", "image": "busybox"}]}}]
            }
        }
    });
    if pending {
        pr["spec"]["status"] = json!("PipelineRunPending");
    }
    serde_json::from_value(pr).unwrap()
}

fn terminal(store: &Store, ns: &str) -> usize {
    let kind = storage_kind(&gvr::PIPELINERUNS).expect("pipelineruns");
    store.count(&kind, Some(ns), &|pr: &Value| {
        pr.pointer("/status/completionTime").is_some()
    })
}

fn in_flight(store: &Store) -> usize {
    let running = |pr: &Value| {
        pr.pointer("/status/startTime").is_some() && pr.pointer("/status/completionTime").is_none()
    };
    let kind = storage_kind(&gvr::PIPELINERUNS).expect("pipelineruns");
    store.count(&kind, Some("inflight"), &running)
}

/// Create `creates` runs in `ns` through kube-rs; returns creates/s and the peak of
/// runs in flight (sampled every 250 ms while creating and for `hold` after).
async fn create_throughput(
    sim: &KubeSimHandle,
    ns: &str,
    creates: usize,
    concurrency: usize,
    hold: Duration,
) -> (f64, usize) {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun"),
        "pipelineruns",
    );
    // A few clients so creates spread over several connections.
    let mut apis = Vec::new();
    for _ in 0..4 {
        let client = sim.kube_client().await.expect("client");
        apis.push(Api::<DynamicObject>::namespaced_with(client, ns, &ar));
    }
    let cluster = sim.store().clone();
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (cluster, peak) = (cluster.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                peak.fetch_max(in_flight(&cluster), Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let results: Vec<bool> = futures::stream::iter(0..creates)
        .map(|i| {
            let api = apis[i % apis.len()].clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &pipelinerun(&format!("run-{i}"), false),
                )
                .await
                .is_ok()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let ok = results.iter().filter(|r| **r).count();
    // Runs still being started by the controller count once started.
    let held = Instant::now();
    while held.elapsed() < hold && peak.load(Ordering::Relaxed) < ok {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sampler.abort();
    peak.fetch_max(in_flight(&cluster), Ordering::Relaxed);
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "creates ({ns}): {ok}/{creates} PipelineRuns through kube-rs in {:.2}s with {concurrency} in parallel, using {cpu:.1} CPU-s (client and server in this process; {:.0} creates per CPU-second)",
        elapsed.as_secs_f64(),
        ok as f64 / cpu.max(0.01)
    );
    (
        ok as f64 / elapsed.as_secs_f64(),
        peak.load(Ordering::Relaxed),
    )
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;
type H2Full = hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>;

/// Creates over HTTPS/HTTP2 with pre-serialized bodies: the server's cost with
/// as little client work as possible.
async fn raw_create_throughput(sim: &KubeSimHandle, creates: usize, concurrency: usize) -> f64 {
    let mut conns: Vec<H2Full> = Vec::new();
    for _ in 0..4 {
        conns.push(h2_connection_with(sim).await);
    }
    let token = format!("Bearer {}", sim.admin_token());
    let uri = format!(
        "{}/apis/tekton.dev/v1/namespaces/raw/pipelineruns",
        sim.endpoint()
    );
    let start = Instant::now();
    let ok: usize = futures::stream::iter(0..creates)
        .map(|i| {
            let mut sender = conns[i % conns.len()].clone();
            let body = serde_json::to_vec(&pipelinerun(&format!("raw-{i}"), true)).unwrap();
            let req = http::Request::post(&uri)
                .header("authorization", &token)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(Bytes::from(body)))
                .unwrap();
            async move {
                match sender.send_request(req).await {
                    Ok(resp) if resp.status() == 201 => {
                        resp.into_body().collect().await.is_ok() as usize
                    }
                    _ => 0,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |a, b| async move { a + b })
        .await;
    let elapsed = start.elapsed();
    println!(
        "raw creates (HTTP/2, pre-serialized): {ok}/{creates} in {:.2}s",
        elapsed.as_secs_f64()
    );
    ok as f64 / elapsed.as_secs_f64()
}

async fn h2_connection_with<B>(sim: &KubeSimHandle) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls_stream(sim).await))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn tls_stream(sim: &KubeSimHandle) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
            sim.ca_pem().as_bytes(),
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let addr = sim.endpoint().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

async fn h2_connection(sim: &KubeSimHandle) -> H2 {
    h2_connection_with(sim).await
}

/// Open `count` watches, create `events` objects, and count the watches that saw all of them.
async fn concurrent_watches(sim: &KubeSimHandle, count: usize, events: usize) -> usize {
    let client = sim.kube_client().await.unwrap();
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "watch-bench"}})).unwrap(),
    )
    .await
    .unwrap();
    let rv = sim.store().current_rv();
    let per_conn = 500;
    let mut conns = Vec::new();
    for _ in 0..count.div_ceil(per_conn) {
        conns.push(h2_connection(sim).await);
    }
    let open = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let token = sim.admin_token().to_string();
    let start = Instant::now();
    for i in 0..count {
        let mut sender = conns[i / per_conn].clone();
        let (open, complete) = (open.clone(), complete.clone());
        let uri = format!(
            "{}/apis/tekton.dev/v1/namespaces/watch-bench/pipelineruns?watch=1&resourceVersion={rv}&timeoutSeconds=600",
            sim.endpoint()
        );
        let req = http::Request::get(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        tokio::spawn(async move {
            let Ok(resp) = sender.send_request(req).await else {
                return;
            };
            if resp.status() != 200 {
                return;
            }
            open.fetch_add(1, Ordering::Relaxed);
            let mut body = resp.into_body();
            let mut seen = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.iter().filter(|b| **b == b'\n').count();
                    if seen >= events {
                        complete.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while open.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "watches: {} of {count} open after {:.2}s",
        open.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun"),
        "pipelineruns",
    );
    let api = Api::<DynamicObject>::namespaced_with(client, "watch-bench", &ar);
    let fan_out = Instant::now();
    for i in 0..events {
        api.create(
            &PostParams::default(),
            &pipelinerun(&format!("w-{i}"), true),
        )
        .await
        .unwrap();
    }
    while complete.load(Ordering::Relaxed) < count
        && Instant::now() < deadline + Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = complete.load(Ordering::Relaxed);
    println!(
        "watches: {done} of {count} received all {events} events ({} deliveries in {:.2}s)",
        done * events,
        fan_out.elapsed().as_secs_f64()
    );
    done
}

async fn start_sim(step: Duration, namespaces: &[&str]) -> KubeSimHandle {
    let sim = KubeSim::start(KubeSimOptions {
        tekton: Some(ControllerOptions {
            time_scale: 1.0,
            pod_start_delay: Duration::ZERO,
            default_step_duration: step,
            ..ControllerOptions::default()
        }),
        ..KubeSimOptions::default()
    })
    .await
    .expect("kube-sim starts");
    let client = sim.kube_client().await.unwrap();
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    for ns in namespaces {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    }
    sim
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let creates = env_usize("KUBE_SIM_BENCH_CREATES", 5_000);
        let inflight_runs = env_usize("KUBE_SIM_BENCH_INFLIGHT", 10_000);
        let watches = env_usize("KUBE_SIM_BENCH_WATCHES", 10_000);
        let concurrency = env_usize("KUBE_SIM_BENCH_CONCURRENCY", 64);

        // Instant steps: create→terminal throughput.
        let sim = start_sim(Duration::ZERO, &["raw", "bench"]).await;
        let raw_per_s = raw_create_throughput(&sim, creates, concurrency).await;
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let (kube_per_s, _) =
            create_throughput(&sim, "bench", creates, concurrency, Duration::ZERO).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut done = terminal(sim.store(), "bench");
        while done < creates && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            done = terminal(sim.store(), "bench");
        }
        let total = start.elapsed().as_secs_f64();
        // CPU until every run is terminal: the create phase alone hides the controller's
        // backlog when it falls behind the creates.
        let cpu = cpu_seconds() - cpu_start;
        println!(
            "create→terminal: {done}/{creates} PipelineRuns terminal {total:.2}s after the first create ({:.0} runs/s end to end; {cpu:.1} CPU-s, {:.0} runs per CPU-second)",
            done as f64 / total,
            done as f64 / cpu.max(0.01)
        );
        println!(
            "creates/s: {kube_per_s:.0} through kube-rs over HTTPS/1.1 (controller running them), {raw_per_s:.0} over one-stream-per-request HTTP/2"
        );
        let watches_ok = concurrent_watches(&sim, watches, 5).await;
        sim.shutdown().await;

        // Hour-long steps: every run stays in flight once started.
        let sim = start_sim(Duration::from_secs(3600), &["inflight"]).await;
        let (_, inflight) = create_throughput(
            &sim,
            "inflight",
            inflight_runs,
            concurrency,
            Duration::from_secs(60),
        )
        .await;
        println!("in flight: peak {inflight} of {inflight_runs} runs started and not finished");
        sim.shutdown().await;

        println!(
            "kube-sim: creates_per_s={} inflight={inflight} watches={watches_ok}",
            kube_per_s.round() as u64
        );
    });
}
