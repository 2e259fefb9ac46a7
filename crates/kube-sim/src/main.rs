//! `kube-sim`: run the simulated Kubernetes API server standalone.

use clap::Parser;
use kube_sim::tekton::{ControllerOptions, HostSteps};
use kube_sim::{KubeSim, KubeSimOptions};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-sim",
    about = "A simulated Kubernetes API server for tests and the quick start"
)]
struct Args {
    /// HTTPS port (0 = pick a free one).
    #[arg(long, env = "KUBE_SIM_PORT", default_value_t = 6443)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "KUBE_SIM_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Also serve plain HTTP on this port (tokens only).
    #[arg(long, env = "KUBE_SIM_HTTP_PORT")]
    http_port: Option<u16>,
    /// Write an admin kubeconfig here (mode 0600).
    #[arg(long, env = "KUBE_SIM_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
    /// Load Tekton CRDs (300-*.yaml) from this directory instead of the embedded copies.
    #[arg(long, env = "KUBE_SIM_CRD_DIR")]
    crd_dir: Option<PathBuf>,
    /// Use this admin token instead of a random one.
    #[arg(long, env = "KUBE_SIM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Do not create a default StorageClass.
    #[arg(long)]
    no_default_storage_class: bool,
    /// Do not run the Tekton controller simulation (PipelineRuns are stored, never run).
    #[arg(long)]
    no_tekton: bool,
    /// Real time per simulated time for the Tekton simulation (0.01 = 100x faster).
    #[arg(long, env = "KUBE_SIM_TIME_SCALE", default_value_t = 1.0, value_parser = parse_time_scale)]
    time_scale: f64,
    /// Run Task steps for real as host processes (with the host's tools),
    /// keeping pods' and claims' directories under this directory.
    #[arg(long, env = "KUBE_SIM_HOST_STEPS", value_name = "DIR")]
    host_steps: Option<PathBuf>,
}

fn parse_time_scale(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("--time-scale: `{s}` is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("--time-scale: must be a positive number, got {s}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let handle = KubeSim::start(KubeSimOptions {
        bind: args.bind,
        port: args.port,
        http_port: args.http_port,
        crd_dir: args.crd_dir,
        admin_token: args.admin_token,
        default_storage_class: (!args.no_default_storage_class).then(|| "standard".to_string()),
        host_steps: args.host_steps.map(|root| HostSteps { root }),
        tekton: (!args.no_tekton).then(|| ControllerOptions {
            time_scale: args.time_scale,
            ..ControllerOptions::default()
        }),
        ..KubeSimOptions::default()
    })
    .await?;
    if let Some(path) = &args.kubeconfig_out {
        handle
            .write_kubeconfig(path)
            .map_err(|e| anyhow::anyhow!("cannot write kubeconfig {}: {e}", path.display()))?;
        eprintln!("kube-sim: kubeconfig written to {}", path.display());
    }
    eprintln!("kube-sim: serving {}", handle.endpoint());
    if let Some(h) = handle.http_endpoint() {
        eprintln!("kube-sim: plain HTTP on {h}");
    }
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
