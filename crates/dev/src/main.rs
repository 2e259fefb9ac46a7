//! `imagefactory-dev`: the quick start. Image Factory in one process against
//! kube-sim — database created and migrated, the simulated cluster with its
//! Tekton controller, the real API router and an embedded dispatcher with the
//! real Tekton executor — then a demo build submitted and followed through the
//! REST API. Keeps serving until Ctrl-C, or exits after the demo (`--exit`).
//! With `--real-steps` the build runs for real on this host (git, buildah)
//! against a local git server and registry (`imagefactory_dev::real`).
//!
//! Development and demos only: this is the one binary that links kube-sim;
//! the production `imagefactory` binary does not (issue 4).

mod cli;
mod demo;
mod instructions;

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
use kube_sim::KubeSimHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cli::DevArgs;
use imagefactory_dev::real::RealSteps;
use imagefactory_dev::sim;

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
/// stopped cleanly after the demo. `--real-steps`' registry, git server and
/// directory go when it ends, however it ends.
async fn run(args: DevArgs) -> anyhow::Result<bool> {
    // First: a missing tool is reported before anything starts.
    let real = if args.real_steps {
        Some(start_real().await?)
    } else {
        None
    };
    let result = run_demo(args, real.as_ref()).await;
    if let Some(real) = real {
        real.shutdown().await;
    }
    result
}

/// The registry and the sample repository of `--real-steps`.
async fn start_real() -> anyhow::Result<RealSteps> {
    let real = RealSteps::start().await?;
    println!(
        "Real steps: sample repository {} (Dockerfile, hello.txt), docker-registry at http://{}, files under {} (removed on exit)",
        real.repo_url(),
        real.registry().host(),
        real.dir().display()
    );
    Ok(real)
}

async fn run_demo(mut args: DevArgs, real: Option<&RealSteps>) -> anyhow::Result<bool> {
    let cipher = cipher(&args.key())?;
    let admin = admin_token(&args);
    let (sim, kubeconfig) = start_sim(&args, real).await?;
    let pool = database::connect(&args.database_url).await?;
    database::migrate(&pool).await?;
    println!(
        "PostgreSQL database {} (migrated)",
        database::redact_url(&args.database_url)
    );
    let listener = match bind_api(&mut args).await {
        Ok(l) => l,
        Err(e) => {
            sim.shutdown().await;
            return Err(e);
        }
    };
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
    // As `serve`: a global cluster lets builds that name no provider in.
    state.global_cluster = args.executors.tekton.global_cluster();
    let serving = serve(&args, state, listener, dispatcher, &shutdown)?;

    let demo = tokio::select! {
        r = demo::run(&serving.base_url, &admin, &sim, kubeconfig.as_deref(), args.demo_timeout, !args.exit, real) => Some(r),
        () = shutdown.cancelled() => None,
    };
    let mut ok = demo_verdict(demo, args.exit, &shutdown);

    let stopped = serving
        .task
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

/// `--admin-token`, or a random one that is never printed: the demo hands
/// out a tenant token instead.
fn admin_token(args: &DevArgs) -> Secret {
    match &args.admin_token {
        Some(t) => t.clone(),
        None => Secret::new(format!(
            "dev-admin-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
    }
}

/// kube-sim (its host step runner with `real`), and the path of its admin
/// kubeconfig when one was asked for.
async fn start_sim(
    args: &DevArgs,
    real: Option<&RealSteps>,
) -> anyhow::Result<(KubeSimHandle, Option<String>)> {
    let sim = sim::start(
        args.kube_sim_port,
        args.time_scale,
        real.map(RealSteps::host_steps),
    )
    .await?;
    let steps = if real.is_some() {
        ", steps run on this host"
    } else {
        ""
    };
    println!(
        "kube-sim (simulated Kubernetes + Tekton, time scale {}{steps}) at {}",
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
    Ok((sim, kubeconfig))
}

/// Bind the API and point the Tekton executor's address policy at it.
async fn bind_api(args: &mut DevArgs) -> anyhow::Result<TcpListener> {
    // Bound first: the address policy refuses the API's own address.
    let addr = args.listen_addr();
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (another server there? choose one with --port)")
    })?;
    // The demo's tenant provider points at kube-sim on 127.0.0.1.
    args.executors.tekton.provider_allow_loopback = true;
    args.executors.tekton.api_listen_addr = Some(listener.local_addr()?);
    Ok(listener)
}

/// The running API and dispatcher: where to reach it, and the task that ends
/// when both have stopped.
struct Serving {
    base_url: String,
    task: JoinHandle<anyhow::Result<()>>,
}

fn serve(
    args: &DevArgs,
    mut state: AppState,
    listener: TcpListener,
    dispatcher: JoinHandle<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Serving> {
    let policy = args.executors.tekton.address_policy();
    args.http.apply(&mut state);
    // Ends when the pool closes.
    tokio::spawn(imagefactory_api::token_cache::listen(
        state.pool.clone(),
        state.token_cache.clone(),
    ));
    state.dispatcher_stale_after =
        imagefactory_dispatch::admin::stale_after(&args.executors.dispatcher);
    state.provider_address_policy = policy.clone();
    state.connection_tester = Some(Arc::new(connection::TektonConnectionTester {
        policy: policy.clone(),
    }));
    state.tekton_ops = Some(Arc::new(connection::TektonTaskOps { policy }));
    let base_url = format!("http://{}", listener.local_addr()?);
    println!("Image Factory API at {base_url}, embedded dispatcher with the Tekton executor");
    let http = tokio::spawn(http::serve(
        listener,
        imagefactory_web::app(state),
        args.http.clone(),
        shutdown.clone(),
    ));
    let http_bound = args.executors.dispatcher.shutdown_grace + HTTP_DRAIN;
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        run_until_stopped(http, Some(dispatcher), &shutdown, http_bound).await
    });
    Ok(Serving { base_url, task })
}

/// Whether the run counts as a success so far, stopping the server when the
/// demo failed or `--exit` asked for it. `None`: stopped before the demo ended.
fn demo_verdict(
    demo: Option<anyhow::Result<demo::Outcome>>,
    exit: bool,
    shutdown: &CancellationToken,
) -> bool {
    match demo {
        Some(Ok(outcome)) if exit => {
            shutdown.cancel();
            outcome.succeeded()
        }
        Some(Ok(outcome)) => {
            if !outcome.succeeded() {
                println!(
                    "The demo build ended {}{}; the server keeps running so you can look into it.",
                    outcome.status,
                    if outcome.digest_matches == Some(false) {
                        " but its digest is not the registry's"
                    } else {
                        ""
                    }
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
    }
}
