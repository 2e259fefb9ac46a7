//! Listeners: HTTPS (rustls, optional client certificates) and plain HTTP,
//! serving HTTP/1.1 and HTTP/2 with hyper. A listener can be stopped (all
//! connections dropped, like an API server going away) and started again on
//! the same port.

use crate::api::Api;
use crate::auth::User;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub struct RunningListener {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Restarting on the same port must not wait for TIME_WAIT sockets.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

pub fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    api: Arc<Api>,
) -> std::io::Result<RunningListener> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = token.cancelled() => break,
            };
            let Ok((stream, _peer)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (api, tls, token) = (api.clone(), tls.clone(), token.clone());
            connections.spawn(async move {
                tokio::select! {
                    _ = serve_connection(stream, tls, api) => {}
                    _ = token.cancelled() => {}
                }
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
    });
    Ok(RunningListener {
        addr,
        shutdown,
        task,
    })
}

async fn serve_connection(stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>, api: Arc<Api>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(100_000);
    match tls {
        Some(acceptor) => {
            let Ok(tls_stream) = acceptor.accept(stream).await else {
                return;
            };
            let user = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| crate::tls::identity_from_cert(c))
                .map(|(name, groups)| User { name, groups });
            let svc = service_fn(move |req| {
                let (api, user) = (api.clone(), user.clone());
                async move { Ok::<_, std::convert::Infallible>(api.handle(req, user).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(tls_stream), svc)
                .await;
        }
        None => {
            let svc = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, std::convert::Infallible>(api.handle(req, None).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        }
    }
}
