//! Log streams over HTTP/2. A `follow=true` log stream stays open as long as
//! its step runs; over kube's default HTTP/1.1 transport each one holds a
//! TCP and TLS connection of its own (buffers on both ends), which with
//! thousands of builds in flight is a large part of the dispatcher's memory.
//! Here every log request (and the log follower's TaskRun reads) is a stream
//! on a small pool of HTTP/2 connections (ALPN `h2`, as the kube-apiserver
//! and kube-sim offer): a connection carries at most
//! [`STREAMS_PER_CONNECTION`] streams, never more than the server's own
//! `SETTINGS_MAX_CONCURRENT_STREAMS`, and another connection is opened when
//! all are full. So a long follow never waits for a slot, and the executor's
//! other requests (the ordinary client) never wait behind log streams.
//!
//! The client is a `kube::Client` with kube's own layers (base URI, auth,
//! extra headers) over this transport, so the same `Api::log_stream` code
//! runs on it. A server that does not negotiate `h2` makes the pool switch
//! its cluster's log requests back to the ordinary client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use imagefactory_domain::address::AddressPolicy;
use kube::client::{Body, ConfigExt};
use rustls_pki_types::ServerName;
use tower::{BoxError, ServiceBuilder};

use super::kube_metrics::KubeMetricsLayer;

/// Streams one connection carries at most (the server may allow fewer).
pub const STREAMS_PER_CONNECTION: usize = 100;

/// Connection-level receive window: log streams share it, and a stream whose
/// reader is busy (writing a batch to the database) must not stall the rest.
const CONNECTION_WINDOW: u32 = 8 << 20;

/// HTTP/2 keep-alive of the log connections. A `follow=true` stream of a
/// quiet step carries no data for minutes, so a connection that died
/// silently (a NAT or load balancer dropped it, the API server's host
/// vanished) would otherwise never be noticed: its followers would wait
/// forever. Every `interval` a PING is sent; no PONG within `timeout` closes
/// the connection, which ends its streams with an error (the followers
/// reopen them on a new connection and resume at their position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for KeepAlive {
    /// 30 s / 20 s: as kubectl's and client-go's HTTP/2 health checks
    /// (`ReadIdleTimeout` 30 s, `PingTimeout` 15 s), a little more patient.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The clients a cluster uses for log streams.
#[derive(Clone)]
pub struct LogClients {
    /// Multiplexed on HTTP/2; `None` when the configuration cannot use it
    /// (a proxy is configured).
    h2: Option<kube::Client>,
    /// The ordinary client, for servers without HTTP/2.
    fallback: kube::Client,
    h1_only: Arc<AtomicBool>,
    pool: Option<Arc<PoolInner>>,
}

impl LogClients {
    /// Log clients for `config`; `fallback` is the cluster's ordinary client.
    /// With a `policy` (a tenant's provider) connections are opened only to
    /// addresses it allows.
    pub fn new(
        config: &kube::Config,
        fallback: kube::Client,
        policy: Option<Arc<AddressPolicy>>,
        metrics: KubeMetricsLayer,
    ) -> Self {
        Self::with_keepalive(config, fallback, KeepAlive::default(), policy, metrics)
    }

    /// As [`LogClients::new`], with the HTTP/2 keep-alive given.
    pub fn with_keepalive(
        config: &kube::Config,
        fallback: kube::Client,
        keepalive: KeepAlive,
        policy: Option<Arc<AddressPolicy>>,
        metrics: KubeMetricsLayer,
    ) -> Self {
        let h1_only = Arc::new(AtomicBool::new(false));
        let (h2, pool) = match h2_client(config, h1_only.clone(), keepalive, policy, metrics) {
            Ok((client, pool)) => (Some(client), Some(pool)),
            Err(e) => {
                tracing::debug!(error = %e, "log streams use HTTP/1.1");
                (None, None)
            }
        };
        Self {
            h2,
            fallback,
            h1_only,
            pool,
        }
    }

    /// Only the ordinary client (tests, or when HTTP/2 is not wanted).
    pub fn http1(client: kube::Client) -> Self {
        Self {
            h2: None,
            fallback: client,
            h1_only: Arc::new(AtomicBool::new(true)),
            pool: None,
        }
    }

    /// The client for the next log request.
    pub fn client(&self) -> kube::Client {
        match &self.h2 {
            Some(c) if !self.h1_only.load(Ordering::Relaxed) => c.clone(),
            _ => self.fallback.clone(),
        }
    }

    /// Whether log requests currently go over HTTP/2.
    pub fn multiplexed(&self) -> bool {
        self.h2.is_some() && !self.h1_only.load(Ordering::Relaxed)
    }

    /// HTTP/2 connections open now, and streams open on them.
    pub async fn usage(&self) -> (usize, usize) {
        let Some(pool) = &self.pool else {
            return (0, 0);
        };
        let connections = pool.connections.lock().await;
        let live = connections
            .iter()
            .filter(|c| !c.closed.load(Ordering::Relaxed));
        live.fold((0, 0), |(n, streams), c| {
            (n + 1, streams + c.active.load(Ordering::Relaxed))
        })
    }
}

fn h2_client(
    config: &kube::Config,
    h1_only: Arc<AtomicBool>,
    keepalive: KeepAlive,
    policy: Option<Arc<AddressPolicy>>,
    metrics: KubeMetricsLayer,
) -> Result<(kube::Client, Arc<PoolInner>), String> {
    if config.proxy_url.is_some() {
        return Err("a proxy is configured".into());
    }
    if config.cluster_url.scheme_str() != Some("https") {
        return Err("the cluster URL is not https".into());
    }
    let host = config
        .cluster_url
        .host()
        .ok_or("the cluster URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let name = config
        .tls_server_name
        .clone()
        .unwrap_or_else(|| host.clone());
    let server_name =
        ServerName::try_from(name).map_err(|e| format!("invalid TLS server name: {e}"))?;
    let mut tls = config
        .rustls_client_config()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let inner = Arc::new(PoolInner {
        host,
        port,
        server_name,
        tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        connect_timeout: config.connect_timeout.unwrap_or(Duration::from_secs(10)),
        connections: tokio::sync::Mutex::new(Vec::new()),
        h1_only,
        keepalive,
        policy,
    });
    let pool = H2Pool {
        inner: inner.clone(),
    };
    let auth = config.auth_layer().map_err(|e| format!("auth: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("headers: {e}"))?;
    let service = ServiceBuilder::new()
        .layer(metrics)
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .service(pool);
    Ok((
        kube::Client::new(service, config.default_namespace.clone()),
        inner,
    ))
}

#[derive(Clone)]
struct H2Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    connections: tokio::sync::Mutex<Vec<Arc<Connection>>>,
    h1_only: Arc<AtomicBool>,
    keepalive: KeepAlive,
    /// A tenant provider's address policy (`None`: a global provider).
    policy: Option<Arc<AddressPolicy>>,
}

struct Connection {
    send: h2::client::SendRequest<Bytes>,
    /// Streams open on this connection (taken under the pool's lock).
    active: AtomicUsize,
    /// The connection task ended (server went away, GOAWAY, I/O error).
    closed: Arc<AtomicBool>,
}

impl Connection {
    fn has_room(&self) -> bool {
        let limit = STREAMS_PER_CONNECTION.min(self.send.current_max_send_streams());
        self.active.load(Ordering::Relaxed) < limit
    }
}

/// Gives a connection's stream slot back when the response (or the failed
/// request) is dropped.
struct StreamSlot(Arc<Connection>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolInner {
    /// A slot on a connection with room, opening one when all are full.
    async fn acquire(&self) -> Result<StreamSlot, BoxError> {
        let mut connections = self.connections.lock().await;
        // Forget dead connections and idle extra ones (the first stays).
        let mut kept = 0;
        connections.retain(|c| {
            let keep = !c.closed.load(Ordering::Relaxed)
                && (kept == 0 || c.active.load(Ordering::Relaxed) > 0);
            kept += usize::from(keep);
            keep
        });
        if let Some(c) = connections.iter().find(|c| c.has_room()) {
            c.active.fetch_add(1, Ordering::Relaxed);
            return Ok(StreamSlot(c.clone()));
        }
        let connection = Arc::new(self.dial().await?);
        connection.active.fetch_add(1, Ordering::Relaxed);
        connections.push(connection.clone());
        Ok(StreamSlot(connection))
    }

    async fn dial(&self) -> Result<Connection, BoxError> {
        let tcp = match &self.policy {
            Some(policy) => {
                super::connect::connect(policy, &self.host, self.port, self.connect_timeout).await?
            }
            None => tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| format!("connecting to {}:{} timed out", self.host, self.port))??,
        };
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            self.h1_only.store(true, Ordering::Relaxed);
            return Err(format!(
                "{}:{} did not negotiate HTTP/2; log streams fall back to HTTP/1.1",
                self.host, self.port
            )
            .into());
        }
        let (send, mut connection) = h2::client::Builder::new()
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tls)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let pings = connection.ping_pong();
        let keepalive = self.keepalive;
        let peer = format!("{}:{}", self.host, self.port);
        tokio::spawn(async move {
            let unanswered = async {
                match pings {
                    Some(pings) => keep_alive(pings, keepalive).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "log stream connection ended");
                    }
                }
                why = unanswered => {
                    tracing::warn!(peer = %peer, reason = %why,
                        "log stream connection is dead; closing it (its log streams are reopened)");
                }
            }
            // Before the streams learn of it: a follower reopening its
            // stream must not be given this connection again.
            flag.store(true, Ordering::Relaxed);
            // Dropping the connection ends its open streams with an error.
            drop(connection);
        });
        Ok(Connection {
            send,
            active: AtomicUsize::new(0),
            closed,
        })
    }
}

/// PING the server every `interval`; returns (why) when a PONG did not come
/// within `timeout` or the ping could not be sent. Pings are tiny (17 bytes
/// each way), and one in flight at a time.
async fn keep_alive(mut pings: h2::PingPong, keepalive: KeepAlive) -> String {
    let mut tick = tokio::time::interval(keepalive.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match tokio::time::timeout(keepalive.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return format!("ping failed: {e}"),
            Err(_) => {
                return format!("no answer to a ping within {:?}", keepalive.timeout);
            }
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<StreamBody>, BoxError>> + Send + 'static>>;

impl tower::Service<Request<Body>> for H2Pool {
    type Response = Response<StreamBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let slot = inner.acquire().await?;
            let mut send = slot.0.send.clone().ready().await?;
            let (response, mut stream) =
                send.send_request(Request::from_parts(parts, ()), body.is_empty())?;
            if !body.is_empty() {
                stream.send_data(body, true)?;
            }
            let (parts, recv) = response.await?.into_parts();
            Ok(Response::from_parts(
                parts,
                StreamBody {
                    recv,
                    data_done: false,
                    _slot: slot,
                },
            ))
        })
    }
}

/// A response body read from an HTTP/2 stream; flow-control capacity is
/// released as data is handed on, and the stream's slot when it is dropped.
pub struct StreamBody {
    recv: h2::RecvStream,
    data_done: bool,
    _slot: StreamSlot,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data_done && self.recv.is_end_stream()
    }
}
