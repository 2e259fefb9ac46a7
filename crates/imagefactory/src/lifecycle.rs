//! The pieces of a running process: the secrets cipher, the dispatcher task,
//! waiting for the HTTP server and the dispatcher together, and SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context;
use imagefactory_dispatch::{Dispatcher, DispatcherMode};
use imagefactory_store::crypto::Cipher;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::executors;
use crate::settings::{ExecutorSettings, KeySettings};

/// After the dispatcher's own shutdown grace, how much longer the process
/// waits for the HTTP server (open log streams) before it exits anyway.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// The cipher from IF_SECRET_KEY, or in explicit dev mode a throwaway key.
pub fn cipher(settings: &KeySettings) -> anyhow::Result<Cipher> {
    match (&settings.secret_key, settings.dev_mode) {
        (Some(key), _) => Cipher::from_hex(key.expose()).context("IF_SECRET_KEY"),
        (None, true) => {
            tracing::warn!(
                "DEV MODE: no IF_SECRET_KEY, using a random throwaway key; secrets stored now \
                 cannot be decrypted after a restart. Never use this in production."
            );
            Ok(Cipher::random().0)
        }
        (None, false) => anyhow::bail!(
            "IF_SECRET_KEY is required (32 bytes as 64 hex characters, e.g. `openssl rand -hex 32`); \
             for local development only, pass --dev-insecure-key or set IF_DEV_MODE=true"
        ),
    }
}

/// Waits for the HTTP server and the dispatcher. Either one ending stops the
/// other; once stopping, the server gets `http_bound` to drain (follow-mode
/// log streams would otherwise hold the process open).
pub async fn run_until_stopped(
    mut http: tokio::task::JoinHandle<std::io::Result<()>>,
    dispatcher: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    shutdown: &CancellationToken,
    http_bound: Duration,
) -> anyhow::Result<()> {
    let mut dispatcher_result = Ok(());
    let http_result = match dispatcher {
        Some(mut d) => {
            tokio::select! {
                r = &mut http => {
                    shutdown.cancel();
                    dispatcher_result = joined(d.await);
                    r
                }
                r = &mut d => {
                    // A dispatcher that ends on its own (database gone) takes
                    // the API down with it rather than leaving builds unserved.
                    shutdown.cancel();
                    dispatcher_result = joined(r);
                    bounded(&mut http, http_bound).await
                }
            }
        }
        None => http.await,
    };
    let http_result = match http_result {
        Ok(r) => r.context("HTTP server"),
        Err(e) => Err(anyhow::anyhow!("HTTP server task: {e}")),
    };
    http_result.and(dispatcher_result)
}

async fn bounded(
    http: &mut tokio::task::JoinHandle<std::io::Result<()>>,
    bound: Duration,
) -> Result<std::io::Result<()>, tokio::task::JoinError> {
    match tokio::time::timeout(bound, &mut *http).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                ?bound,
                "HTTP server did not drain in time; closing open connections"
            );
            http.abort();
            Ok(Ok(()))
        }
    }
}

/// The result of a finished dispatcher task.
pub fn joined(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.map_err(|e| anyhow::anyhow!("dispatcher task: {e}"))?
}

/// Builds the executors from `settings` and runs a dispatcher until `shutdown`.
pub async fn start_dispatcher(
    pool: &PgPool,
    cipher: &Cipher,
    settings: &ExecutorSettings,
    mode: DispatcherMode,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let executors = executors::build(settings).await?;
    let mut dispatcher_settings = settings.dispatcher.clone();
    dispatcher_settings.global_cluster = settings.tekton.global_cluster();
    let dispatcher = Dispatcher::new(
        pool.clone(),
        dispatcher_settings,
        executors,
        Some(cipher.clone()),
        mode,
    );
    Ok(tokio::spawn(async move {
        dispatcher.run(shutdown).await.context("dispatcher")
    }))
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    shutdown_signal().await;
    shutdown.cancel();
}

/// Resolves on SIGINT or SIGTERM; in-flight requests then finish.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
