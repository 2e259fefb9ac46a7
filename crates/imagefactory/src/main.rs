//! `imagefactory`: the service binary. Subcommands `serve` (API + embedded
//! dispatcher), `dispatcher` (standalone), `migrate` and `tekton`
//! (install / status of the Task bundle).

use anyhow::Context;
use clap::Parser;
use imagefactory::lifecycle::{
    HTTP_DRAIN, cancel_on_signal, cipher, joined, run_until_stopped, start_dispatcher,
};
use imagefactory::settings::{
    Cli, Command, DatabaseSettings, DispatcherCommandSettings, ServeSettings,
};
use imagefactory::{connection, database, http, metrics, telemetry};
use imagefactory_api::AppState;
use imagefactory_dispatch::DispatcherMode;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client logs nothing of its own: no subscriber, output is its own.
    let cli = match cli.command {
        Command::Client(command) => return imagefactory_cli::run(command).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "imagefactory", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        command => Cli { command, ..cli },
    };
    if let Err(err) = telemetry::init(&cli.logging) {
        eprintln!("imagefactory: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(settings) => serve(settings).await,
        Command::Dispatcher(settings) => dispatcher(settings).await,
        Command::Migrate(settings) => migrate(settings).await,
        // Its own exit code: a report that is not ready is not an error to log.
        Command::Tekton(command) => return imagefactory::tekton_cli::run(command).await,
        Command::Client(_) | Command::Completions { .. } => unreachable!("handled above"),
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

async fn serve(mut settings: ServeSettings) -> anyhow::Result<()> {
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
    // Bound first: the address policy refuses the API's own address.
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
    settings.executors.tekton.api_listen_addr = Some(listener.local_addr()?);
    let policy = settings.executors.tekton.address_policy();
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
    state.metrics_token = settings.metrics.metrics_token.clone();
    settings.http.apply(&mut state);
    state.dispatcher_stale_after =
        imagefactory_dispatch::admin::stale_after(&settings.executors.dispatcher);
    state.provider_address_policy = policy.clone();
    state.global_cluster = settings.executors.tekton.global_cluster();
    state.connection_tester = Some(std::sync::Arc::new(connection::TektonConnectionTester {
        policy: policy.clone(),
    }));
    state.tekton_ops = Some(std::sync::Arc::new(connection::TektonTaskOps { policy }));
    // Ends when the pool closes.
    tokio::spawn(imagefactory_api::token_cache::listen(
        pool.clone(),
        state.token_cache.clone(),
    ));
    // The API under /api/v1 with the web dashboard at /.
    let app = imagefactory_web::app(state);
    tracing::info!(addr = %listener.local_addr()?, "imagefactory serving");
    let signal = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let http = tokio::spawn(http::serve(
        listener,
        app,
        settings.http.clone(),
        shutdown.clone(),
    ));
    let http_bound = settings.executors.dispatcher.shutdown_grace + HTTP_DRAIN;
    let result = run_until_stopped(http, dispatcher, &shutdown, http_bound).await;
    signal.abort();
    pool.close().await;
    tracing::info!("imagefactory stopped");
    result
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
    let metrics = metrics::serve_dispatcher_metrics(&settings.metrics, shutdown.clone()).await?;
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
    if let Some(metrics) = metrics {
        // The dispatcher may have ended on its own (database gone).
        metrics.abort();
    }
    pool.close().await;
    tracing::info!("dispatcher stopped");
    result
}
