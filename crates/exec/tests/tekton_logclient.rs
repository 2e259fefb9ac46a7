//! Log streams multiplexed on HTTP/2 against kube-sim over HTTPS: many
//! concurrent `follow=true` streams share a few connections (at most
//! `STREAMS_PER_CONNECTION` streams each), every stream gets its lines, a
//! server reached without TLS (no HTTP/2 negotiation) keeps HTTP/1.1, and
//! keep-alive pings close a connection that went silent.

mod tekton_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use imagefactory_exec::tekton::logclient::{KeepAlive, STREAMS_PER_CONNECTION};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube_sim::cluster::gvr;
use serde_json::json;
use tekton_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_follow_streams_share_a_few_http2_connections() {
    let sim = Sim::start(SimOptions::default()).await;
    let cluster = running_pod_with_a_line(&sim);

    let settings = tenant_settings(&sim.config());
    let (_client, logs) = settings.clients().await.unwrap();
    assert!(logs.multiplexed(), "kube-sim offers h2: log streams use it");

    let streams = STREAMS_PER_CONNECTION + STREAMS_PER_CONNECTION / 2;
    let mut readers = Vec::new();
    for _ in 0..streams {
        let pods: Api<Pod> = Api::namespaced(logs.client(), "default");
        let params = LogParams {
            container: Some("step-a".into()),
            follow: true,
            ..Default::default()
        };
        let stream = pods.log_stream("p", &params).await.expect("follow opens");
        readers.push(tokio::spawn(async move {
            stream
                .lines()
                .map(|l| l.unwrap())
                .collect::<Vec<String>>()
                .await
        }));
    }
    // Every stream is open at once: more than one connection's worth.
    let (connections, open) = logs.usage().await;
    assert_eq!(open, streams);
    assert_eq!(connections, 2, "{streams} streams need two connections");

    cluster.append_pod_log("default", "p", "step-a", "second");
    let mut done = cluster.get(&gvr::PODS, Some("default"), "p").unwrap();
    done["status"]["containerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    cluster
        .update_status(&gvr::PODS, Some("default"), "p", done["status"].clone())
        .unwrap();
    for reader in readers {
        let lines = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the follow ends with the container")
            .unwrap();
        assert_eq!(lines, vec!["first".to_string(), "second".to_string()]);
    }
    // Streams give their slots back when they end.
    let (_, open) = logs.usage().await;
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_endpoint_keeps_http1_for_logs() {
    let sim = kube_sim::KubeSim::start(kube_sim::KubeSimOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let config = json!({
        "auth_method": "token",
        "endpoint": sim.http_endpoint().unwrap(),
        "token": sim.admin_token(),
    });
    let (_client, logs) = tenant_settings(&config).clients().await.unwrap();
    assert!(!logs.multiplexed());
    // The fallback client works: the pods of a namespace can be listed.
    let pods: Api<Pod> = Api::namespaced(logs.client(), "default");
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A TCP relay between the client and kube-sim that can go silent: once
/// frozen it forwards nothing more in either direction but keeps both
/// sockets open, as a connection dropped by a NAT or a dead host looks to
/// the client (no FIN, no RST, just silence).
struct SilentProxy {
    addr: std::net::SocketAddr,
    frozen: Arc<AtomicBool>,
    /// Bytes relayed client → server (pings show up here).
    upstream_bytes: Arc<AtomicUsize>,
}

impl SilentProxy {
    async fn start(target: std::net::SocketAddr) -> SilentProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let upstream_bytes = Arc::new(AtomicUsize::new(0));
        let (f, u) = (frozen.clone(), upstream_bytes.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(relay(cr, sw, f.clone(), Some(u.clone())));
                tokio::spawn(relay(sr, cw, f.clone(), None));
            }
        });
        SilentProxy {
            addr,
            frozen,
            upstream_bytes,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    count: Option<Arc<AtomicUsize>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Silence: hold both sockets open, forward nothing.
            let _hold = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(count) = &count {
            count.fetch_add(n, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_keep_a_quiet_stream_and_close_a_silently_dead_connection() {
    let sim = Sim::start(SimOptions::default()).await;
    let cluster = running_pod_with_a_line(&sim);

    let endpoint = sim.handle.endpoint();
    let host_port = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let target = tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = SilentProxy::start(target).await;
    let mut config = sim.config();
    config["endpoint"] = json!(format!("https://{}", proxy.addr));
    // Pings often; a generous timeout, as this machine may be loaded.
    let keepalive = KeepAlive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
    };
    let (_client, logs) = tenant_settings(&config)
        .clients_with(keepalive)
        .await
        .unwrap();
    assert!(logs.multiplexed());

    let pods: Api<Pod> = Api::namespaced(logs.client(), "default");
    let params = LogParams {
        container: Some("step-a".into()),
        follow: true,
        ..Default::default()
    };
    let stream = pods.log_stream("p", &params).await.expect("follow opens");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut lines = stream.lines();
        while let Some(line) = lines.next().await {
            let _ = tx.send(line.map_err(|e| e.to_string()));
        }
    });
    assert_eq!(next_line(&mut rx).await, Some(Ok("first".to_string())));

    // Healthy but quiet: pings go out and are answered (at least 60 pings,
    // 6 s at the least, longer than the ping timeout), and the stream lives.
    let before = proxy.upstream_bytes.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    // A ping is a 17-byte frame, 39 bytes as a TLS 1.3 record.
    while proxy.upstream_bytes.load(Ordering::SeqCst) < before + 60 * 39 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no keep-alive pings went out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logs.usage().await, (1, 1), "the connection is kept");
    cluster.append_pod_log("default", "p", "step-a", "second");
    assert_eq!(next_line(&mut rx).await, Some(Ok("second".to_string())));

    // The path goes silent: no FIN, no RST. The unanswered ping closes the
    // connection and the follow stream ends with an error instead of
    // waiting forever.
    proxy.freeze();
    match next_line(&mut rx).await {
        Some(Err(_)) | None => {}
        Some(Ok(line)) => panic!("unexpected line {line:?}"),
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the reader ends")
        .unwrap();
    assert_eq!(logs.usage().await, (0, 0), "the dead connection is gone");
}

async fn next_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>,
) -> Option<Result<String, String>> {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a line (or the stream's end) within 60 s")
}

/// Pod `default/p` with its container `step-a` running and one log line
/// (`first`) written; the cluster, to write more.
fn running_pod_with_a_line(sim: &Sim) -> std::sync::Arc<dyn kube_sim::cluster::Cluster> {
    let cluster = sim.handle.cluster();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "step-a", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "step-a", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    });
    cluster.create(&gvr::PODS, Some("default"), pod).unwrap();
    cluster.append_pod_log("default", "p", "step-a", "first");
    cluster
}
