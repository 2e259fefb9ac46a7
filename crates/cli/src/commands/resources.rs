//! `imagefactory project|provider|registry-credential …`: a tenant's
//! resources. Secrets (git and registry passwords) are read from stdin,
//! never from flags.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Connection, PageArgs, read_secret_line};
use crate::error::CliResult;
use crate::exit;
use crate::output::Printer;
use crate::render;

#[derive(Debug, Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: ProjectCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    List(PageArgs),
    Get {
        id: String,
    },
    /// Create a project (a git repository builds come from).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        git_url: String,
        #[arg(long)]
        default_branch: Option<String>,
        /// User name for a private repository; the password is read from
        /// stdin (--git-password-stdin).
        #[arg(long, requires = "git_password_stdin")]
        git_username: Option<String>,
        #[arg(long, requires = "git_username")]
        git_password_stdin: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ProviderArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: ProviderCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// The tenant's providers (with --global: the admin's global ones).
    List {
        #[arg(long)]
        global: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    Get {
        id: String,
        #[arg(long)]
        global: bool,
    },
    /// Connect to the provider's cluster; exits 1 unless it is reachable,
    /// accepts the credentials and serves Tekton.
    Test {
        id: String,
        #[arg(long)]
        global: bool,
    },
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: CredentialCommand,
}

#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    List(PageArgs),
    Get {
        id: String,
    },
    /// Store a registry login; the password is read from stdin.
    Create {
        #[arg(long)]
        name: String,
        /// Registry host, e.g. registry.example.com
        #[arg(long)]
        registry: String,
        #[arg(long)]
        username: String,
        /// Read the password from the first line of stdin (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    Delete {
        id: String,
    },
}

const PROJECT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("GIT URL", "git_url"),
    ("BRANCH", "default_branch"),
];
const PROVIDER_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("TYPE", "provider_type"),
    ("STATUS", "status"),
    ("GLOBAL", "is_global"),
    ("TEKTON", "tekton_enabled"),
];
const CREDENTIAL_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("REGISTRY", "registry"),
    ("USERNAME", "username"),
];

pub async fn project(args: ProjectArgs) -> CliResult<u8> {
    let s = args.conn.session()?;
    match args.command {
        ProjectCommand::List(page) => s.list("/projects", &[], &page, PROJECT_COLUMNS).await?,
        ProjectCommand::Get { id } => s.show(&format!("/projects/{id}")).await?,
        ProjectCommand::Create {
            name,
            git_url,
            default_branch,
            git_username,
            git_password_stdin,
        } => {
            let mut body = json!({"name": name, "git_url": git_url});
            if let Some(b) = default_branch {
                body["default_branch"] = b.into();
            }
            if let (Some(user), true) = (git_username, git_password_stdin) {
                let password = read_secret_line("git password")?;
                body["git_credential"] = json!({"username": user, "password": password});
            }
            s.create("/projects", &body).await?;
        }
        ProjectCommand::Delete { id } => s.delete("/projects", &id, "deleted", "project").await?,
    }
    Ok(exit::OK)
}

pub async fn provider(args: ProviderArgs) -> CliResult<u8> {
    let s = args.conn.session()?;
    let base = |global: bool| {
        if global {
            "/admin/providers"
        } else {
            "/providers"
        }
    };
    match args.command {
        ProviderCommand::List { global, page } => {
            s.list(base(global), &[], &page, PROVIDER_COLUMNS).await?
        }
        ProviderCommand::Get { id, global } => s.show(&format!("{}/{id}", base(global))).await?,
        ProviderCommand::Test { id, global } => {
            let path = format!("{}/{id}/test-connection", base(global));
            let report = s.client.post(&path, &json!({})).await?;
            print_report(&s.out, &report);
            return Ok(if connection_ok(&report) {
                exit::OK
            } else {
                exit::BUILD_FAILED
            });
        }
    }
    Ok(exit::OK)
}

/// Pure: reachable, authenticated, Tekton served, no error.
pub fn connection_ok(report: &Value) -> bool {
    report["reachable"] == true
        && report["authenticated"] == true
        && report["error"].is_null()
        && report["tekton_versions"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
}

fn print_report(out: &Printer, report: &Value) {
    if out.json {
        out.document(report);
        return;
    }
    let verdict = if connection_ok(report) {
        out.palette.status("succeeded")
    } else {
        out.palette.status("failed")
    };
    out.line(&format!("connection test: {verdict}"));
    out.block(&render::details(report));
}

pub async fn credential(args: CredentialArgs) -> CliResult<u8> {
    const PATH: &str = "/registry-credentials";
    let s = args.conn.session()?;
    match args.command {
        CredentialCommand::List(page) => s.list(PATH, &[], &page, CREDENTIAL_COLUMNS).await?,
        CredentialCommand::Get { id } => s.show(&format!("{PATH}/{id}")).await?,
        CredentialCommand::Create {
            name,
            registry,
            username,
            password_stdin: _,
        } => {
            let password = read_secret_line("registry password")?;
            let body = json!({"name": name, "registry": registry, "username": username,
                              "password": password});
            s.create(PATH, &body).await?;
        }
        CredentialCommand::Delete { id } => {
            s.delete(PATH, &id, "deleted", "registry credential")
                .await?
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_ok_only_when_everything_is() {
        let ok = json!({"reachable": true, "authenticated": true, "tekton_versions": ["v1"], "error": null});
        assert!(connection_ok(&ok));
        for (k, v) in [
            ("reachable", json!(false)),
            ("authenticated", json!(false)),
            ("tekton_versions", json!([])),
            ("error", json!("connection refused")),
        ] {
            let mut bad = ok.clone();
            bad[k] = v;
            assert!(!connection_ok(&bad), "{bad}");
        }
    }
}
