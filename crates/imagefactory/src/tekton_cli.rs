//! `imagefactory tekton install|status`: the Task bundle installer and the
//! readiness report, against a kubeconfig or a global provider's stored
//! connection (README "Installing and checking a cluster").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use imagefactory_domain::AddressPolicy;
use imagefactory_domain::provider::{ProviderOwner, ProviderType};
use imagefactory_exec::tekton::install::{install_for_provider, status_for_provider};
use imagefactory_exec::tekton::readiness::ClusterStatus;
use imagefactory_exec::{ProviderConnection, parse_provider_config};
use serde_json::json;
use uuid::Uuid;

use crate::settings::{DatabaseSettings, KeySettings};

#[derive(Debug, Subcommand)]
pub enum TektonCommand {
    /// Apply the current Task bundle (create missing, upgrade outdated,
    /// restore modified Tasks); prints one line per object.
    Install(InstallArgs),
    /// Report the Tekton API, each Task's state, the default StorageClass,
    /// the registry Secret and the service account; exits 1 unless ready.
    Status(TargetArgs),
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Ask the API server to validate only (dryRun=All): nothing changes.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("cluster").required(true).args(["provider", "kubeconfig"])))]
pub struct TargetArgs {
    /// A global provider's id: its stored connection is used (needs the
    /// database and IF_SECRET_KEY).
    #[arg(long)]
    pub provider: Option<Uuid>,
    /// A kubeconfig file (its current context unless --context).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// The namespace; default: the provider's shared Tasks namespace, else
    /// every Image Factory namespace on the cluster.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub key: KeySettings,
}

pub async fn run(command: TektonCommand) -> ExitCode {
    match run_inner(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imagefactory tekton: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(command: TektonCommand) -> anyhow::Result<ExitCode> {
    match command {
        TektonCommand::Install(args) => {
            let provider = provider(&args.target).await?;
            let reports = install_for_provider(
                &provider,
                policy(),
                args.target.namespace.as_deref(),
                args.dry_run,
            )
            .await?;
            if reports.is_empty() {
                anyhow::bail!(
                    "no namespace to install into: give --namespace (no Image Factory namespace exists on the cluster yet)"
                );
            }
            if args.target.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for report in &reports {
                    println!(
                        "namespace {}: Task bundle {}{}",
                        report.namespace,
                        report.bundle_version,
                        if report.dry_run { " (dry run)" } else { "" }
                    );
                    for object in &report.objects {
                        println!("  {}", object.line());
                    }
                }
            }
            Ok(if reports.iter().any(|r| r.failed()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        TektonCommand::Status(args) => {
            let provider = provider(&args).await?;
            let status =
                status_for_provider(&provider, policy(), args.namespace.as_deref()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            if let Some(error) = &status.error {
                eprintln!("imagefactory tekton: {error}");
            }
            Ok(if status.ready() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The operator's own cluster: no address restrictions.
fn policy() -> Arc<AddressPolicy> {
    Arc::new(AddressPolicy::new(true))
}

/// The connection to use: the kubeconfig as a global provider would have
/// it, or a global provider's stored config.
async fn provider(args: &TargetArgs) -> anyhow::Result<ProviderConnection> {
    if let Some(path) = &args.kubeconfig {
        let mut config = json!({
            "auth_method": "kubeconfig",
            "kubeconfig_path": path,
        });
        if let Some(context) = &args.context {
            config["context"] = json!(context);
        }
        return Ok(ProviderConnection {
            provider_id: Uuid::nil(),
            name: path.display().to_string(),
            tekton_enabled: true,
            config_version: 0,
            config: parse_provider_config(&config, ProviderOwner::Global),
            owner: ProviderOwner::Global,
        });
    }
    let id = args
        .provider
        .expect("clap requires --provider or --kubeconfig");
    let cipher = crate::lifecycle::cipher(&args.key)?;
    let pool = crate::database::connect(&args.database.url()).await?;
    let found = imagefactory_store::providers::get_owned(
        &pool,
        imagefactory_store::providers::Owner::Global,
        id,
    )
    .await
    .map_err(|e| anyhow::anyhow!("global provider {id}: {e}"))?;
    if found.provider_type != ProviderType::Kubernetes {
        anyhow::bail!(
            "provider {id} is a {} provider, not kubernetes",
            found.provider_type
        );
    }
    let config = imagefactory_store::providers::open_config(&cipher, &found)
        .map_err(|e| anyhow::anyhow!("opening provider {id}'s config: {e}"))?;
    pool.close().await;
    Ok(ProviderConnection {
        provider_id: found.id,
        name: found.name,
        tekton_enabled: found.tekton_enabled,
        config_version: found.config_version,
        config: parse_provider_config(&config, ProviderOwner::Global),
        owner: ProviderOwner::Global,
    })
}

fn print_status(status: &ClusterStatus) {
    match &status.tekton {
        Some(api) => println!(
            "Tekton API: tekton.dev {} (using {})",
            api.versions.join(", "),
            api.using.as_deref().unwrap_or("-")
        ),
        None => println!(
            "Tekton API: {}",
            status.error.as_deref().unwrap_or("unknown")
        ),
    }
    let sc = &status.default_storage_class;
    println!("{}: {} ({})", sc.name, ok(sc.ok), sc.detail);
    for ns in &status.namespaces {
        println!("namespace {} (bundle {}):", ns.namespace, ns.bundle_version);
        for task in &ns.tasks {
            println!("  Task {}: {}", task.name, task.state.as_str());
        }
        for check in &ns.checks {
            println!("  {}: {} ({})", check.name, ok(check.ok), check.detail);
        }
        for error in &ns.errors {
            println!("  error: {error}");
        }
    }
}

fn ok(ok: bool) -> &'static str {
    if ok { "ok" } else { "NOT OK" }
}
