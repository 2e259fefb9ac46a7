//! `imagefactory`: the service binary. Subcommands `serve` (API + embedded
//! dispatcher), `dispatcher` (standalone) and `migrate`.

mod connection;
mod database;
mod executors;
mod local_args;
mod settings;
mod tekton_args;
mod telemetry;

use anyhow::Context;
use clap::Parser;
use imagefactory_api::AppState;
use imagefactory_dispatch::{Dispatcher, DispatcherMode};
use imagefactory_store::crypto::Cipher;
use sqlx::PgPool;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use settings::{
    Cli, Command, DatabaseSettings, DispatcherCommandSettings, ExecutorSettings, KeySettings,
    ServeSettings,
};

/// After the dispatcher's own shutdown grace, how much longer the process
/// waits for the HTTP server (open log streams) before it exits anyway.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init(&cli.logging) {
        eprintln!("imagefactory: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(settings) => serve(settings).await,
        Command::Dispatcher(settings) => dispatcher(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Logged once, with its causes; no second copy on stderr.
            tracing::error!(error = format!("{err:#}"), "imagefactory failed");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: DatabaseSettings) -> anyhow::Result<()> {
    let pool = database::connect(&settings.url()).await?;
    database::migrate(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The cipher from IF_SECRET_KEY, or in explicit dev mode a throwaway key.
fn cipher(settings: &KeySettings) -> anyhow::Result<Cipher> {
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

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let cipher = cipher(&settings.key)?;
    if settings.admin_token.is_none() {
        tracing::warn!(
            "IF_ADMIN_TOKEN is not set: the admin API (tenants, tokens, global providers) is disabled"
        );
    }
    let pool = database::connect(&settings.database.url()).await?;
    if settings.auto_migrate {
        database::migrate(&pool).await?;
    }
    let shutdown = CancellationToken::new();
    let dispatcher = if settings.dispatcher_enabled {
        Some(
            start_dispatcher(
                &pool,
                &cipher,
                &settings.executors,
                DispatcherMode::Embedded,
                shutdown.clone(),
            )
            .await?,
        )
    } else {
        tracing::info!("embedded dispatcher disabled (IF_DISPATCHER_ENABLED=false)");
        None
    };
    let mut state = AppState::new(pool.clone(), cipher, settings.admin_token.clone());
    state.dispatcher_stale_after =
        imagefactory_dispatch::admin::stale_after(&settings.executors.dispatcher);
    state.connection_tester = Some(std::sync::Arc::new(connection::TektonConnectionTester));
    let app = imagefactory_api::router(state);
    let listener = match tokio::net::TcpListener::bind(settings.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            shutdown.cancel();
            if let Some(d) = dispatcher {
                let _ = d.await;
            }
            return Err(e).with_context(|| format!("cannot listen on {}", settings.listen_addr));
        }
    };
    tracing::info!(addr = %listener.local_addr()?, "imagefactory serving");
    let signal = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let http_bound = settings.executors.dispatcher.shutdown_grace + HTTP_DRAIN;
    let result = run_until_stopped(http, dispatcher, &shutdown, http_bound).await;
    signal.abort();
    pool.close().await;
    tracing::info!("imagefactory stopped");
    result
}

/// Waits for the HTTP server and the dispatcher. Either one ending stops the
/// other; once stopping, the server gets `http_bound` to drain (follow-mode
/// log streams would otherwise hold the process open).
async fn run_until_stopped(
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

fn joined(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.map_err(|e| anyhow::anyhow!("dispatcher task: {e}"))?
}

/// `imagefactory dispatcher`: claims and runs builds, no HTTP API.
async fn dispatcher(settings: DispatcherCommandSettings) -> anyhow::Result<()> {
    let cipher = cipher(&settings.key)?;
    let pool = database::connect(&settings.database.url()).await?;
    if settings.auto_migrate {
        database::migrate(&pool).await?;
    }
    let shutdown = CancellationToken::new();
    let signal = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let handle = start_dispatcher(
        &pool,
        &cipher,
        &settings.executors,
        DispatcherMode::Standalone,
        shutdown,
    )
    .await?;
    let result = joined(handle.await);
    signal.abort();
    pool.close().await;
    tracing::info!("dispatcher stopped");
    result
}

async fn start_dispatcher(
    pool: &PgPool,
    cipher: &Cipher,
    settings: &ExecutorSettings,
    mode: DispatcherMode,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let executors = executors::build(settings).await?;
    let dispatcher = Dispatcher::new(
        pool.clone(),
        settings.dispatcher.clone(),
        executors,
        Some(cipher.clone()),
        mode,
    );
    Ok(tokio::spawn(async move {
        dispatcher.run(shutdown).await.context("dispatcher")
    }))
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    shutdown_signal().await;
    shutdown.cancel();
}

/// Resolves on SIGINT or SIGTERM; in-flight requests then finish.
async fn shutdown_signal() {
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
