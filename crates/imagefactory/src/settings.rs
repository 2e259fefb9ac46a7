//! Every setting is an `IF_*` environment variable and a flag (clap `env`).
//! Secrets are held in `Secret`, which never prints.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imagefactory_dispatch::DispatcherSettings;
use imagefactory_domain::Secret;

use crate::http::HttpSettings;
use crate::local_args::LocalArgs;
use crate::metrics::{DispatcherMetricsSettings, MetricsSettings};
use crate::tekton_args::TektonArgs;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/imagefactory";

#[derive(Debug, Parser)]
#[command(
    name = "imagefactory",
    version,
    about = "Multi-tenant container-image build service"
)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LogSettings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST API and, unless IF_DISPATCHER_ENABLED=false, an embedded dispatcher.
    Serve(ServeSettings),
    /// Run a standalone dispatcher (no HTTP API); any number may run at once.
    Dispatcher(DispatcherCommandSettings),
    /// Create the database if missing and apply the schema migrations.
    Migrate(DatabaseSettings),
    /// Install or check Image Factory's Tekton Tasks on a cluster.
    #[command(subcommand)]
    Tekton(crate::tekton_cli::TektonCommand),
    /// The API client: builds, projects, providers, tokens... (README
    /// "Command-line client").
    #[command(flatten)]
    Client(imagefactory_cli::ClientCommand),
    /// Print a shell completion script, e.g. `imagefactory completions bash`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogSettings {
    /// Log line format.
    #[arg(long, env = "IF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,imagefactory_api=debug`.
    #[arg(long, env = "IF_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Debug, Args, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; falls back to DATABASE_URL, then to the local default.
    /// The database is created if it does not exist.
    #[arg(long, env = "IF_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DatabaseSettings {
    pub fn url(&self) -> String {
        database_url(
            self.database_url.clone(),
            std::env::var("DATABASE_URL").ok(),
        )
    }
}

/// `IF_DATABASE_URL`, else a non-empty `DATABASE_URL`, else the local default.
fn database_url(if_database_url: Option<String>, database_url: Option<String>) -> String {
    if_database_url
        .or_else(|| database_url.filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

#[derive(Debug, Args)]
pub struct ServeSettings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Address the HTTP server listens on.
    #[arg(long, env = "IF_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// Bearer token of the platform admin (tenants, tokens, global providers).
    /// Without it the admin API answers 401.
    #[arg(long, env = "IF_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<Secret>,
    #[command(flatten)]
    pub key: KeySettings,
    /// Apply pending migrations at startup.
    #[arg(long, env = "IF_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_migrate: bool,
    /// Run a dispatcher inside this process (sharing its database pool and
    /// shutdown signal).
    #[arg(long, env = "IF_DISPATCHER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub dispatcher_enabled: bool,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub metrics: MetricsSettings,
    #[command(flatten)]
    pub executors: ExecutorSettings,
}

/// The key encrypting secrets at rest (provider credentials, registry passwords).
#[derive(Debug, Args, Clone)]
pub struct KeySettings {
    /// 32-byte key (64 hex characters) encrypting secrets at rest. Required
    /// unless --dev-insecure-key.
    #[arg(long, env = "IF_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_key: Option<Secret>,
    /// Development only: without IF_SECRET_KEY, generate a throwaway key
    /// (secrets stored in this run cannot be read after a restart).
    #[arg(long = "dev-insecure-key", env = "IF_DEV_MODE")]
    pub dev_mode: bool,
}

/// What a dispatcher needs besides the database: its own settings
/// (IF_DISPATCHER_*, IF_BUILD_TEKTON_ENABLED) and its executors'.
#[derive(Debug, Args, Clone)]
pub struct ExecutorSettings {
    #[command(flatten)]
    pub dispatcher: DispatcherSettings,
    #[command(flatten)]
    pub local: LocalArgs,
    #[command(flatten)]
    pub tekton: TektonArgs,
}

#[derive(Debug, Args)]
pub struct DispatcherCommandSettings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub key: KeySettings,
    /// Apply pending migrations at startup.
    #[arg(long, env = "IF_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_migrate: bool,
    #[command(flatten)]
    pub metrics: DispatcherMetricsSettings,
    #[command(flatten)]
    pub executors: ExecutorSettings,
}

/// A non-empty secret value (flags and IF_* variables holding secrets).
pub fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("imagefactory").chain(args.iter().copied()))
    }

    #[test]
    fn serve_flags_parse_and_secrets_do_not_print() {
        let cli = parse(&[
            "serve",
            "--listen-addr",
            "0.0.0.0:9000",
            "--admin-token",
            "adm1n",
            "--secret-key",
            "00",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.logging.log_format, LogFormat::Json);
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.listen_addr.port(), 9000);
        assert_eq!(s.admin_token.as_ref().unwrap().expose(), "adm1n");
        assert!(s.auto_migrate);
        assert!(s.dispatcher_enabled);
        let printed = format!("{s:?}");
        assert!(!printed.contains("adm1n"), "{printed}");
    }

    #[test]
    fn dispatcher_and_local_flags_parse() {
        let cli = parse(&[
            "serve",
            "--dispatcher-enabled",
            "false",
            "--dispatcher-max-in-flight",
            "3",
            "--local-container-cli",
            "buildah",
            "--local-insecure-registries",
            "127.0.0.1:5000,reg:5001",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert!(!s.dispatcher_enabled);
        assert_eq!(s.executors.dispatcher.max_in_flight, 3);
        let local = s.executors.local.settings();
        assert_eq!(local.container_cli.as_str(), "buildah");
        assert_eq!(local.insecure_registries, ["127.0.0.1:5000", "reg:5001"]);
        assert_eq!(local.git_protocols, ["https", "ssh", "git", "http"]);

        let cli = parse(&["dispatcher", "--local-container-cli", "nerdctl"]);
        let err = cli.unwrap_err().to_string();
        assert!(err.contains("nerdctl"), "{err}");
    }

    #[test]
    fn http_limits_have_defaults_and_flags() {
        let Command::Serve(s) = parse(&["serve"]).unwrap().command else {
            panic!("not serve")
        };
        let limits = s.http.limits();
        assert_eq!(s.http.http_header_read_timeout.as_secs(), 10);
        assert_eq!(s.http.http_max_connections, 1024);
        assert_eq!(limits.body_read_timeout.as_secs(), 30);
        assert_eq!(limits.log_followers_per_token, 4);
        assert_eq!(limits.auth_failures, 20);
        assert_eq!(limits.auth_failure_window.as_secs(), 60);
        let Command::Serve(s) = parse(&[
            "serve",
            "--http-header-read-timeout",
            "2s",
            "--http-log-followers-per-token",
            "1",
            "--http-auth-failure-window",
            "5m",
        ])
        .unwrap()
        .command
        else {
            panic!("not serve")
        };
        assert_eq!(s.http.http_header_read_timeout.as_secs(), 2);
        assert_eq!(s.http.limits().log_followers_per_token, 1);
        assert_eq!(s.http.limits().auth_failure_window.as_secs(), 300);
        let err = parse(&["serve", "--http-log-followers-per-token", "0"]).unwrap_err();
        assert!(err.to_string().contains("log-followers"), "{err}");
    }

    #[test]
    fn bad_listen_addr_is_refused() {
        let err = parse(&["serve", "--listen-addr", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--listen-addr"), "{err}");
    }

    #[test]
    fn explicit_database_url_wins() {
        let s = DatabaseSettings {
            database_url: Some("postgres://x/y".into()),
        };
        assert_eq!(s.url(), "postgres://x/y");
    }

    #[test]
    fn database_url_falls_back_to_database_url_then_the_local_default() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            database_url(some("postgres://if/a"), some("postgres://env/b")),
            "postgres://if/a"
        );
        assert_eq!(
            database_url(None, some("postgres://env/b")),
            "postgres://env/b"
        );
        assert_eq!(database_url(None, some("")), DEFAULT_DATABASE_URL);
        assert_eq!(database_url(None, None), DEFAULT_DATABASE_URL);
        assert_eq!(
            DEFAULT_DATABASE_URL,
            "postgres://postgres@127.0.0.1:5432/imagefactory"
        );
    }
}
