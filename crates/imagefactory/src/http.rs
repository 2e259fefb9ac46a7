//! The HTTP server: the API router over hyper with the limits a public
//! endpoint needs — a deadline for request headers (slowloris), a cap on
//! open connections, and the per-client limits of `imagefactory_api::limits`
//! — and graceful shutdown: on cancel it stops accepting and lets open
//! requests finish (the caller bounds how long).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use clap::Args;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use imagefactory_api::{AppState, HttpLimits, TokenCache};
use imagefactory_dispatch::settings::parse_duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// `IF_HTTP_*`: limits of the HTTP server (`serve` and `imagefactory-dev`).
#[derive(Debug, Args, Clone)]
pub struct HttpSettings {
    /// Longest time a client may take to send a request's headers (also how
    /// long an idle keep-alive connection stays open); then it is closed.
    #[arg(long, env = "IF_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_read_timeout: Duration,
    /// Longest time a request body may take to arrive in full (408 after).
    #[arg(long, env = "IF_HTTP_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_read_timeout: Duration,
    /// Open connections at most; further clients wait to be accepted.
    #[arg(long, env = "IF_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Concurrent `?follow=true` log streams per token (429 beyond).
    #[arg(long, env = "IF_HTTP_LOG_FOLLOWERS_PER_TOKEN", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_log_followers_per_token: u32,
    /// Failed token checks from one client address (IPv6: its /64) within
    /// IF_HTTP_AUTH_FAILURE_WINDOW after which its requests get 429.
    #[arg(long, env = "IF_HTTP_AUTH_FAILURES", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_auth_failures: u32,
    #[arg(long, env = "IF_HTTP_AUTH_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub http_auth_failure_window: Duration,
    /// How long a verified tenant token is trusted without asking the
    /// database; revocations end it sooner (LISTEN/NOTIFY). `0s`: no cache.
    #[arg(long, env = "IF_HTTP_TOKEN_CACHE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub http_token_cache_ttl: Duration,
}

impl HttpSettings {
    /// The per-client limits the API enforces.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            body_read_timeout: self.http_body_read_timeout,
            log_followers_per_token: self.http_log_followers_per_token as usize,
            auth_failures: self.http_auth_failures,
            auth_failure_window: self.http_auth_failure_window,
        }
    }

    /// Sets the API's limits and token cache in `state`.
    pub fn apply(&self, state: &mut AppState) {
        state.limits = self.limits();
        state.token_cache = TokenCache::new(self.http_token_cache_ttl);
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits for open
/// connections to finish their requests (keep-alive is turned off).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The timer makes the header deadline effective; without one hyper
    // does not enforce it.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.http_header_read_timeout);
    let permits = Arc::new(Semaphore::new(settings.http_max_connections as usize));
    let graceful = GracefulShutdown::new();
    loop {
        // A connection is accepted only with a permit: at the cap, clients
        // wait in the listen backlog instead of costing memory here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not exit.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // The router for this connection, with its peer address
        // (`ConnectInfo`, which the API's auth throttle counts by).
        let app = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let connection =
            http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        http: HttpSettings,
    }

    async fn request(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        s
    }

    async fn answered(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 12];
        matches!(
            tokio::time::timeout(within, s.read_exact(&mut buf)).await,
            Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200")
        )
    }

    #[tokio::test]
    async fn beyond_the_connection_cap_a_client_waits_until_one_closes() {
        let settings = Wrapper::parse_from(["t", "--http-max-connections", "2"]).http;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, settings, shutdown.clone()));

        // Two kept-alive connections hold both permits.
        let mut first = request(addr).await;
        let mut second = request(addr).await;
        assert!(answered(&mut first, Duration::from_secs(10)).await);
        assert!(answered(&mut second, Duration::from_secs(10)).await);
        let mut third = request(addr).await;
        assert!(!answered(&mut third, Duration::from_millis(500)).await);
        drop(first);
        assert!(answered(&mut third, Duration::from_secs(10)).await);

        shutdown.cancel();
        drop((second, third));
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("graceful shutdown ends")
            .unwrap()
            .unwrap();
    }
}
