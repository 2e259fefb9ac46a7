//! Flags of `imagefactory-dev`. Settings the service already has keep their
//! `IF_*` variables (database, key, admin token, logging, dispatcher, executors);
//! the demo's own knobs are flags only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use imagefactory::http::HttpSettings;
use imagefactory::settings::{ExecutorSettings, KeySettings, LogFormat, LogSettings, parse_secret};
use imagefactory_dispatch::settings::parse_duration;
use imagefactory_domain::Secret;

/// A database of its own, so demo tenants never land in the `imagefactory`
/// database that `imagefactory serve` uses by default.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/imagefactory_dev";

#[derive(Debug, Parser)]
#[command(
    name = "imagefactory-dev",
    version,
    about = "Image Factory in one process on a simulated cluster (kube-sim): runs a demo build, then keeps serving",
    long_about = "Image Factory in one process for trying it out: creates and migrates the database, starts \
                  kube-sim (a simulated Kubernetes API server with a simulated Tekton controller) over HTTPS, \
                  installs the project's Tekton Tasks, serves the real REST API with an embedded dispatcher \
                  and the real Tekton executor, then submits a demo build through the API, follows it to its \
                  end and prints how to continue with curl. Development and demos only."
)]
pub struct DevArgs {
    /// HTTP port of the API on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Exit after the demo build instead of serving: status 0 iff the build succeeded.
    #[arg(long)]
    pub exit: bool,
    /// Build for real on this host instead of simulating the steps: a local
    /// docker-registry and a sample git repository on 127.0.0.1, kube-sim's
    /// host step runner (git, buildah), and the pushed image's digest checked
    /// against the registry's. Needs git, buildah and docker-registry.
    #[arg(long)]
    pub real_steps: bool,
    /// PostgreSQL URL; the database is created if missing and migrated.
    #[arg(long, env = "IF_DATABASE_URL", hide_env_values = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Key encrypting secrets at rest (64 hex characters); without it a
    /// throwaway key is used, so data of earlier runs cannot be decrypted.
    #[arg(long, env = "IF_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_key: Option<Secret>,
    /// Platform admin token; without it a random one is generated (never printed).
    #[arg(long, env = "IF_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<Secret>,
    /// Real time per simulated time in kube-sim's Tekton controller (0.2 = 5x
    /// faster; the demo build's ~9 simulated seconds then take about 2 s).
    #[arg(long, default_value_t = 0.2, value_parser = parse_time_scale)]
    pub time_scale: f64,
    /// HTTPS port of kube-sim on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub kube_sim_port: u16,
    /// Write kube-sim's admin kubeconfig here (mode 0600), for kubectl.
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Give up on the demo build after this long (e.g. `90s`, `5m`).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub demo_timeout: Duration,
    /// Log line format.
    #[arg(long, env = "IF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (`tracing` EnvFilter syntax); quiet by default so the demo's
    /// own output stays readable.
    #[arg(long, env = "IF_LOG", default_value = "warn")]
    pub log: String,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub executors: ExecutorSettings,
}

impl DevArgs {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn logging(&self) -> LogSettings {
        LogSettings {
            log_format: self.log_format,
            log: self.log.clone(),
        }
    }

    /// Dev mode is implied: without IF_SECRET_KEY the key is a throwaway one.
    pub fn key(&self) -> KeySettings {
        KeySettings {
            secret_key: self.secret_key.clone(),
            dev_mode: true,
        }
    }
}

fn parse_time_scale(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a positive number, got {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<DevArgs, clap::Error> {
        DevArgs::try_parse_from(std::iter::once("imagefactory-dev").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_serve_on_8080_and_keep_running() {
        // Only defaults are checked that no IF_* variable of the shell sets.
        let a = parse(&[]).unwrap();
        assert_eq!(a.listen_addr(), "127.0.0.1:8080".parse().unwrap());
        assert!(!a.exit);
        assert_eq!(a.time_scale, 0.2);
        assert!(!a.real_steps, "the simulated demo is the default");
        assert_eq!(a.kube_sim_port, 0);
        assert_eq!(a.demo_timeout, Duration::from_secs(120));
        assert!(a.key().dev_mode);
    }

    #[test]
    fn flags_parse_and_secrets_do_not_print() {
        let a = parse(&[
            "--port",
            "0",
            "--exit",
            "--real-steps",
            "--time-scale",
            "0.05",
            "--admin-token",
            "adm1n-secret",
            "--secret-key",
            "k3y-secret",
            "--demo-timeout",
            "90s",
            "--dispatcher-poll-interval",
            "500ms",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/x",
        ])
        .unwrap();
        assert_eq!(a.port, 0);
        assert!(a.exit);
        assert!(a.real_steps);
        assert_eq!(a.time_scale, 0.05);
        assert_eq!(a.demo_timeout, Duration::from_secs(90));
        assert_eq!(
            a.executors.dispatcher.poll_interval,
            Duration::from_millis(500)
        );
        assert_eq!(a.database_url, "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(a.key().secret_key.unwrap().expose(), "k3y-secret");
        let printed = format!("{a:?}");
        assert!(!printed.contains("adm1n-secret"), "{printed}");
        assert!(!printed.contains("k3y-secret"), "{printed}");
    }

    #[test]
    fn time_scale_must_be_positive() {
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            let arg = format!("--time-scale={bad}");
            let err = parse(&[&arg]).unwrap_err().to_string();
            assert!(err.contains("--time-scale"), "{bad}: {err}");
        }
    }
}
