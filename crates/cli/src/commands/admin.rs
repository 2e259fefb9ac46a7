//! `imagefactory tenant …` (platform admin) and `imagefactory token …`
//! (a tenant's own tokens, or with --tenant the admin's view of a tenant's).

use clap::{Args, Subcommand};
use serde_json::json;

use super::resources::deleted;
use super::{Connection, PageArgs, fetch_list, print_list, print_one};
use crate::error::CliResult;
use crate::exit;
use crate::output::Printer;

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
    let client = args.conn.client()?;
    let out = Printer::new(args.conn.output);
    match args.command {
        TenantCommand::List(page) => {
            let list = fetch_list(&client, "/tenants", &[], &page).await?;
            print_list(&out, &list, TENANT_COLUMNS);
        }
        TenantCommand::Get { id } => print_one(&out, &client.get(&format!("/tenants/{id}")).await?),
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
            print_one(&out, &client.post("/tenants", &body).await?);
        }
        TenantCommand::Delete { id } => {
            client.delete(&format!("/tenants/{id}")).await?;
            deleted(&out, "tenant", &id);
        }
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
    let client = args.conn.client()?;
    let out = Printer::new(args.conn.output);
    match args.command {
        TokenCommand::List { tenant, page } => {
            let list = fetch_list(&client, &tokens_path(tenant.as_deref()), &[], &page).await?;
            print_list(&out, &list, TOKEN_COLUMNS);
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
            let created = client.post(&tokens_path(tenant.as_deref()), &body).await?;
            print_one(&out, &created);
        }
        TokenCommand::Revoke { id, tenant } => {
            client
                .delete(&format!("{}/{id}", tokens_path(tenant.as_deref())))
                .await?;
            if out.json {
                out.document(&json!({"revoked": "token", "id": id}));
            } else {
                out.line(&format!("revoked token {id}"));
            }
        }
    }
    Ok(exit::OK)
}
