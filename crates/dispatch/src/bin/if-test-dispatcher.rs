//! A dispatcher process with the scripted [`TestExecutor`] in every slot, for
//! crash tests (SIGKILL a real process) and the benchmark. SIGTERM/SIGINT shut
//! it down gracefully (handover).

use std::sync::Arc;

use clap::Parser;
use imagefactory_dispatch::testing::TestExecutor;
use imagefactory_dispatch::{Dispatcher, DispatcherMode, DispatcherSettings, Executors};
use sqlx::postgres::PgPoolOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Dispatcher id (lease owner); generated when absent.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    settings: DispatcherSettings,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&cli.database_url)
        .await?;
    TestExecutor::install(&pool).await?;
    let executor: Arc<dyn imagefactory_exec::Executor> = Arc::new(TestExecutor::new(pool.clone()));
    let executors = Executors {
        tekton: Some(executor.clone()),
        local: Some(executor),
    };
    let mut dispatcher = Dispatcher::new(
        pool,
        cli.settings,
        executors,
        None,
        DispatcherMode::Standalone,
    );
    if let Some(id) = cli.id {
        dispatcher = dispatcher.with_id(id);
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        trigger.cancel();
    });
    println!("ready {}", dispatcher.id());
    dispatcher.run(shutdown).await?;
    Ok(())
}
