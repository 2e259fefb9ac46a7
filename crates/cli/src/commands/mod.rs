//! The commands, one module per area; shared flags and list paging here.

pub mod admin;
pub mod build;
pub mod login;
pub mod resources;

use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value, json};

use crate::client::Client;
use crate::config::{self, Target};
use crate::error::{CliError, CliResult};
use crate::output::{OutputFormat, Printer};
use crate::render;

/// Where the server is and how to sign in, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server URL, e.g. http://127.0.0.1:8080 [default: the one `login` stored]
    #[arg(long, env = "IF_URL", global = true)]
    pub url: Option<String>,
    /// API token (tenant or admin). Prefer IF_TOKEN or `login`: a flag is
    /// visible to other users in the process list.
    #[arg(long, env = "IF_TOKEN", global = true, hide_env_values = true,
          value_parser = |s: &str| Ok::<_, String>(TokenArg(s.to_owned())))]
    pub token: Option<TokenArg>,
    /// Config file [default: <user config dir>/imagefactory/config.json]
    #[arg(long, env = "IF_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// `text` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
}

/// A token from a flag or `IF_TOKEN`; `Debug` does not show it.
#[derive(Clone)]
pub struct TokenArg(pub String);

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenArg(<redacted>)")
    }
}

impl Connection {
    pub fn config_path(&self) -> CliResult<PathBuf> {
        match &self.config {
            Some(p) => Ok(p.clone()),
            None => config::default_path(),
        }
    }

    pub fn target(&self) -> CliResult<Target> {
        let stored = config::load(&self.config_path()?)?;
        let token = self.token.as_ref().map(|t| t.0.as_str());
        config::resolve(self.url.as_deref(), token, stored.as_ref())
    }

    pub fn client(&self) -> CliResult<Client> {
        Client::new(&self.target()?)
    }

    pub fn session(&self) -> CliResult<Session> {
        Ok(Session {
            client: self.client()?,
            out: Printer::new(self.output),
        })
    }
}

/// What a command works with: the API client and where its output goes.
/// The calls every resource command makes (list, get, create, delete) are
/// here once.
pub struct Session {
    pub client: Client,
    pub out: Printer,
}

impl Session {
    /// The collection at `path` as a table (text) or its document (json):
    /// one page, or every page with `--all`.
    pub async fn list(
        &self,
        path: &str,
        filters: &[(&str, Option<String>)],
        page: &PageArgs,
        columns: &[(&str, &str)],
    ) -> CliResult<()> {
        let list = fetch_list(&self.client, path, filters, page).await?;
        print_list(&self.out, &list, columns);
        Ok(())
    }

    /// The object at `path`.
    pub async fn show(&self, path: &str) -> CliResult<()> {
        print_one(&self.out, &self.client.get(path).await?);
        Ok(())
    }

    /// `POST path` with `body`; prints what the server made.
    pub async fn create(&self, path: &str, body: &Value) -> CliResult<()> {
        print_one(&self.out, &self.client.post(path, body).await?);
        Ok(())
    }

    /// `DELETE collection/id`, then `<done> <what> <id>` (text) or
    /// `{"<done>": what, "id": id}` (json), e.g. `deleted project …`.
    pub async fn delete(
        &self,
        collection: &str,
        id: &str,
        done: &str,
        what: &str,
    ) -> CliResult<()> {
        self.client.delete(&format!("{collection}/{id}")).await?;
        if self.out.json {
            let mut doc = Map::new();
            doc.insert(done.into(), what.into());
            doc.insert("id".into(), id.into());
            self.out.document(&Value::Object(doc));
        } else {
            self.out.line(&format!("{done} {what} {id}"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Items per page (1..=100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` through every page.
    #[arg(long, conflicts_with = "cursor")]
    pub all: bool,
}

/// Fetches a list (one page, or every page with `--all`) as
/// `{"items": [...], "next_cursor": ...}`.
async fn fetch_list(
    client: &Client,
    path: &str,
    filters: &[(&str, Option<String>)],
    page: &PageArgs,
) -> CliResult<Value> {
    let mut items = Vec::new();
    let mut cursor = page.cursor.clone();
    loop {
        let mut query: Vec<(String, String)> = filters
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect();
        if let Some(limit) = page.limit {
            query.push(("limit".into(), limit.to_string()));
        }
        if let Some(c) = &cursor {
            query.push(("cursor".into(), c.clone()));
        }
        let qs = query_string(&query);
        let page_value = client.get(&format!("{path}{qs}")).await?;
        items.extend(page_value["items"].as_array().cloned().unwrap_or_default());
        let next = page_value["next_cursor"].as_str().map(str::to_owned);
        match next {
            Some(n) if page.all => cursor = Some(n),
            next => return Ok(json!({"items": items, "next_cursor": next})),
        }
    }
}

/// `?a=b&c=d`, percent-encoded; empty for no pairs.
pub fn query_string(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", encoded.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A list as a table (text) or its document (json), with a hint for the
/// next page.
fn print_list(out: &Printer, list: &Value, columns: &[(&str, &str)]) {
    if out.json {
        out.document(list);
        return;
    }
    let items = list["items"].as_array().cloned().unwrap_or_default();
    out.block(&render::table(columns, &items));
    if let Some(next) = list["next_cursor"].as_str() {
        out.line(
            &out.palette
                .dim(&format!("more: --cursor {next} (or --all)")),
        );
    }
}

/// One object as `key: value` lines (text) or its document (json).
fn print_one(out: &Printer, value: &Value) {
    if out.json {
        out.document(value);
    } else {
        out.block(&render::details(value));
    }
}

/// The first line of standard input, for secrets kept out of flags.
pub fn read_secret_line(what: &str) -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Unavailable(format!("cannot read {what} from stdin: {e}")))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(CliError::Usage(format!("no {what} on stdin")));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_flags_do_not_show_the_token() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Wrap {
            #[command(flatten)]
            conn: Connection,
        }
        let w = Wrap::try_parse_from(["x", "--token", "ifk_secret", "--url", "http://h"]).unwrap();
        assert_eq!(w.conn.target().unwrap().token, "ifk_secret");
        assert!(!format!("{w:?}").contains("ifk_secret"), "{w:?}");
    }

    #[test]
    fn query_strings_are_encoded() {
        assert_eq!(query_string(&[]), "");
        let q = query_string(&[
            ("status".into(), "timed_out".into()),
            ("x".into(), "a b&c".into()),
        ]);
        assert_eq!(q, "?status=timed_out&x=a%20b%26c");
    }
}
