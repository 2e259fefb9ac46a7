//! `imagefactory tenant …` (platform admin) and `imagefactory token …`
//! (a tenant's own tokens, or with --tenant the admin's view of a tenant's).

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Connection, PageArgs};
use crate::error::CliResult;
use crate::exit;

#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: TenantCommand,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    List(PageArgs),
    Get {
        id: String,
    },
    Create {
        /// Lowercase name, unique.
        #[arg(long)]
        name: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        max_concurrent_builds: Option<i32>,
        /// Let the tenant run builds on the dispatcher's own host.
        #[arg(long)]
        allow_local_builds: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// The caller's tenant's tokens (with --tenant, as the platform admin).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create a token; its secret is printed once, here only.
    Create {
        #[arg(long)]
        name: String,
        /// viewer, developer or admin.
        #[arg(long)]
        role: String,
        /// RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    Revoke {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

const TENANT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("DISPLAY NAME", "display_name"),
    ("MAX BUILDS", "max_concurrent_builds"),
    ("LOCAL", "allow_local_builds"),
];
const TOKEN_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("ROLE", "role"),
    ("PREFIX", "prefix"),
    ("EXPIRES", "expires_at"),
    ("REVOKED", "revoked_at"),
];

pub async fn tenant(args: TenantArgs) -> CliResult<u8> {
    let s = args.conn.session()?;
    match args.command {
        TenantCommand::List(page) => s.list("/tenants", &[], &page, TENANT_COLUMNS).await?,
        TenantCommand::Get { id } => s.show(&format!("/tenants/{id}")).await?,
        TenantCommand::Create {
            name,
            display_name,
            max_concurrent_builds,
            allow_local_builds,
        } => {
            let mut body = json!({"name": name, "allow_local_builds": allow_local_builds});
            if let Some(d) = display_name {
                body["display_name"] = d.into();
            }
            if let Some(m) = max_concurrent_builds {
                body["max_concurrent_builds"] = m.into();
            }
            s.create("/tenants", &body).await?;
        }
        TenantCommand::Delete { id } => s.delete("/tenants", &id, "deleted", "tenant").await?,
    }
    Ok(exit::OK)
}

fn tokens_path(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("/tenants/{t}/tokens"),
        None => "/tokens".into(),
    }
}

pub async fn token(args: TokenArgs) -> CliResult<u8> {
    let s = args.conn.session()?;
    match args.command {
        TokenCommand::List { tenant, page } => {
            let path = tokens_path(tenant.as_deref());
            s.list(&path, &[], &page, TOKEN_COLUMNS).await?;
        }
        TokenCommand::Create {
            name,
            role,
            expires_at,
            tenant,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(e) = expires_at {
                body["expires_at"] = e.into();
            }
            s.create(&tokens_path(tenant.as_deref()), &body).await?;
        }
        TokenCommand::Revoke { id, tenant } => {
            let path = tokens_path(tenant.as_deref());
            s.delete(&path, &id, "revoked", "token").await?;
        }
    }
    Ok(exit::OK)
}
