//! `imagefactory login`: checks a token against the server and stores both
//! in the config file (mode 0600) for later commands.

use clap::Args;
use serde_json::json;

use super::{Connection, read_secret_line};
use crate::client::Client;
use crate::config::{self, StoredLogin, Target};
use crate::error::{CliError, CliResult};
use crate::exit;
use crate::output::Printer;

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: Connection,
}

/// Which kind of token the server took.
async fn token_kind(client: &Client) -> CliResult<&'static str> {
    match client.get("/builds?limit=1").await {
        Ok(_) => Ok("tenant"),
        Err(CliError::Api {
            status: 401 | 403,
            body,
        }) => {
            // Not a tenant token: maybe the platform admin's.
            match client.get("/tenants?limit=1").await {
                Ok(_) => Ok("admin"),
                Err(_) => Err(CliError::Api { status: 401, body }),
            }
        }
        Err(other) => Err(other),
    }
}

pub async fn run(args: LoginArgs) -> CliResult<u8> {
    let out = Printer::new(args.conn.output);
    let url = args.conn.url.as_deref().ok_or_else(|| {
        CliError::Usage("login needs the server URL: pass --url or set IF_URL".into())
    })?;
    let token = match &args.conn.token {
        Some(t) => t.0.clone(),
        None => read_secret_line("token (pass --token, set IF_TOKEN or give it on stdin)")?,
    };
    let target: Target = config::resolve(Some(url), Some(&token), None)?;
    let kind = token_kind(&Client::new(&target)?).await?;
    let path = args.conn.config_path()?;
    config::save(
        &path,
        &StoredLogin {
            url: target.url.clone(),
            token: target.token,
        },
    )?;
    if out.json {
        out.document(&json!({"url": target.url, "token_kind": kind, "config": path}));
    } else {
        out.line(&format!(
            "logged in to {} with a {kind} token; saved to {}",
            target.url,
            path.display()
        ));
    }
    Ok(exit::OK)
}
