//! `imagefactory-dev`: the quick start. Image Factory in one process against
//! kube-sim — database created and migrated, the simulated cluster with its
//! Tekton controller, the real API router and an embedded dispatcher with the
//! real Tekton executor — then a demo build submitted and followed through the
//! REST API. Keeps serving until Ctrl-C, or exits after the demo (`--exit`).
//!
//! Development and demos only: this is the one binary that links kube-sim;
//! the production `imagefactory` binary does not (issue 4).

mod cli;
mod demo;
mod instructions;
mod sim;
mod sse;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use imagefactory::lifecycle::{
    HTTP_DRAIN, cancel_on_signal, cipher, run_until_stopped, start_dispatcher,
};
use imagefactory::{connection, database, http, telemetry};
use imagefactory_api::AppState;
use imagefactory_dispatch::DispatcherMode;
use imagefactory_domain::Secret;
use tokio_util::sync::CancellationToken;

use cli::DevArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = DevArgs::parse();
    if let Err(err) = telemetry::init(&args.logging()) {
        eprintln!("imagefactory-dev: {err:#}");
        return ExitCode::FAILURE;
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("imagefactory-dev: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(true)`: the demo build succeeded (with `--exit`) or the server was
/// stopped cleanly after the demo.
async fn run(mut args: DevArgs) -> anyhow::Result<bool> {
    let cipher = cipher(&args.key())?;
    let admin = match &args.admin_token {
        Some(t) => t.clone(),
        // Random, and never printed: the demo hands out a tenant token instead.
        None => Secret::new(format!(
            "dev-admin-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
    };

    let sim = sim::start(args.kube_sim_port, args.time_scale).await?;
    println!(
        "kube-sim (simulated Kubernetes + Tekton, time scale {}) at {}",
        args.time_scale,
        sim.endpoint()
    );
    let kubeconfig = match &args.kubeconfig_out {
        Some(path) => {
            sim::write_kubeconfig(&sim, path)?;
            println!("  admin kubeconfig written to {}", path.display());
            Some(path.display().to_string())
        }
        None => None,
    };

    let pool = database::connect(&args.database_url).await?;
    database::migrate(&pool).await?;
    println!(
        "PostgreSQL database {} (migrated)",
        database::redact_url(&args.database_url)
    );

    // Bound first: the address policy refuses the API's own address.
    let listener = match tokio::net::TcpListener::bind(args.listen_addr()).await {
        Ok(l) => l,
        Err(e) => {
            sim.shutdown().await;
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on {} (another server there? choose one with --port)",
                    args.listen_addr()
                )
            });
        }
    };
    // The demo's tenant provider points at kube-sim on 127.0.0.1.
    args.executors.tekton.provider_allow_loopback = true;
    args.executors.tekton.api_listen_addr = Some(listener.local_addr()?);
    let policy = args.executors.tekton.address_policy();
    let shutdown = CancellationToken::new();
    let signal = tokio::spawn(cancel_on_signal(shutdown.clone()));
    let dispatcher = start_dispatcher(
        &pool,
        &cipher,
        &args.executors,
        DispatcherMode::Embedded,
        shutdown.clone(),
    )
    .await?;
    let mut state = AppState::new(pool.clone(), cipher, Some(admin.clone()));
    args.http.apply(&mut state);
    state.dispatcher_stale_after =
        imagefactory_dispatch::admin::stale_after(&args.executors.dispatcher);
    state.provider_address_policy = policy.clone();
    state.connection_tester = Some(Arc::new(connection::TektonConnectionTester { policy }));
    let base_url = format!("http://{}", listener.local_addr()?);
    println!("Image Factory API at {base_url}, embedded dispatcher with the Tekton executor");
    let http = tokio::spawn(http::serve(
        listener,
        imagefactory_api::router(state),
        args.http.clone(),
        shutdown.clone(),
    ));
    let http_bound = args.executors.dispatcher.shutdown_grace + HTTP_DRAIN;
    let server = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            run_until_stopped(http, Some(dispatcher), &shutdown, http_bound).await
        })
    };

    let demo = tokio::select! {
        r = demo::run(&base_url, &admin, &sim, kubeconfig.as_deref(), args.demo_timeout, !args.exit) => Some(r),
        () = shutdown.cancelled() => None,
    };
    let mut ok = match &demo {
        Some(Ok(outcome)) if args.exit => {
            shutdown.cancel();
            outcome.succeeded()
        }
        Some(Ok(outcome)) => {
            if !outcome.succeeded() {
                println!(
                    "The demo build ended {}; the server keeps running so you can look into it.",
                    outcome.status
                );
            }
            println!("Serving until Ctrl-C.");
            true
        }
        Some(Err(err)) => {
            eprintln!("imagefactory-dev: the demo failed: {err:#}");
            shutdown.cancel();
            false
        }
        None => {
            eprintln!("imagefactory-dev: stopped before the demo finished");
            false
        }
    };

    let stopped = server
        .await
        .map_err(|e| anyhow::anyhow!("server task: {e}"))?;
    signal.abort();
    sim.shutdown().await;
    pool.close().await;
    if let Err(err) = stopped {
        eprintln!("imagefactory-dev: {err:#}");
        ok = false;
    }
    println!("Stopped.");
    Ok(ok)
}
