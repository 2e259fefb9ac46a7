//! `imagefactory`: the service binary. Subcommands `serve` and `migrate`.

mod database;
mod settings;
mod telemetry;

use anyhow::Context;
use clap::Parser;
use imagefactory_api::AppState;
use imagefactory_store::crypto::Cipher;
use std::process::ExitCode;

use settings::{Cli, Command, DatabaseSettings, ServeSettings};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(err) = telemetry::init(&cli.logging) {
        eprintln!("imagefactory: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(settings) => serve(settings).await,
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
fn cipher(settings: &ServeSettings) -> anyhow::Result<Cipher> {
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
    let cipher = cipher(&settings)?;
    if settings.admin_token.is_none() {
        tracing::warn!(
            "IF_ADMIN_TOKEN is not set: the admin API (tenants, tokens, global providers) is disabled"
        );
    }
    let pool = database::connect(&settings.database.url()).await?;
    if settings.auto_migrate {
        database::migrate(&pool).await?;
    }
    let state = AppState::new(pool.clone(), cipher, settings.admin_token.clone());
    let app = imagefactory_api::router(state);
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "imagefactory serving");
    axum_serve(listener, app).await?;
    pool.close().await;
    tracing::info!("imagefactory stopped");
    Ok(())
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")
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
