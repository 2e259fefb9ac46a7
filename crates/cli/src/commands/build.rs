//! `imagefactory build submit|list|get|logs|cancel|retry`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::{Connection, PageArgs};
use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::exit;
use crate::output::Printer;
use crate::render;
use crate::watch::Watch;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: BuildCommand,
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Submit a build; with --follow, show its progress and log and exit
    /// with its result.
    Submit(SubmitArgs),
    /// List builds, newest first.
    List(ListArgs),
    /// Show one build with its configuration.
    Get { id: String },
    /// Print a build's log; with --follow, stream it until the build ends
    /// (and exit with its result).
    Logs(LogsArgs),
    /// Cancel a queued or running build.
    Cancel { id: String },
    /// Queue a failed, cancelled or timed-out build again.
    Retry {
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// Stream state changes and the log until the build ends; exit with
    /// its result (0 succeeded, 1 failed, 3 cancelled, 4 timed out).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// While following, how long to keep reconnecting to a server that went
    /// away (e.g. `30s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconnect_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Project id.
    #[arg(long)]
    pub project: String,
    /// docker, buildx, kaniko or packer.
    #[arg(long)]
    pub method: String,
    /// Branch, tag or commit [default: the project's default branch].
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Destination `registry/repository[:tag]`.
    #[arg(long)]
    pub image: Option<String>,
    /// Dockerfile path inside the context.
    #[arg(long)]
    pub dockerfile: Option<String>,
    /// Build context directory relative to the repository root.
    #[arg(long)]
    pub context: Option<String>,
    /// Target platform `os/arch[/variant]` (buildx); repeat for several.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Build argument `KEY=VALUE`; repeat for several.
    #[arg(long = "build-arg", value_parser = parse_key_value)]
    pub build_args: Vec<(String, String)>,
    /// Registry credential id used to push.
    #[arg(long)]
    pub registry_credential: Option<String>,
    /// Infrastructure provider id.
    #[arg(long)]
    pub provider: Option<String>,
    /// kubernetes (default) or local.
    #[arg(long)]
    pub infrastructure: Option<String>,
    /// Build timeout, e.g. `30m`, `1h` or `90s` (whole seconds).
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<u64>,
    /// Higher runs first, -1000..=1000.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only builds of this project id.
    #[arg(long)]
    pub project: Option<String>,
    /// Only builds in this state (queued, running, succeeded, failed,
    /// cancelled, timed_out).
    #[arg(long)]
    pub status: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_timeout(s: &str) -> Result<u64, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?,
    };
    if d.subsec_nanos() != 0 || d.is_zero() {
        return Err(format!(
            "{s:?}: must be a whole number of seconds, at least 1"
        ));
    }
    Ok(d.as_secs())
}

/// Pure: the `POST /builds` body of the flags (unset flags left out).
pub fn submit_body(a: &SubmitArgs) -> Value {
    let mut body = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.to_owned(), v);
        }
    };
    put("project_id", Some(json!(a.project)));
    put("method", Some(json!(a.method)));
    put("git_ref", a.git_ref.clone().map(Value::from));
    put("image", a.image.clone().map(Value::from));
    put(
        "registry_credential_id",
        a.registry_credential.clone().map(Value::from),
    );
    put(
        "infrastructure_provider_id",
        a.provider.clone().map(Value::from),
    );
    put(
        "infrastructure_type",
        a.infrastructure.clone().map(Value::from),
    );
    put("timeout_seconds", a.timeout.map(Value::from));
    put("priority", a.priority.map(Value::from));
    let mut config = Map::new();
    if let Some(d) = &a.dockerfile {
        config.insert("dockerfile".into(), json!(d));
    }
    if let Some(c) = &a.context {
        config.insert("context".into(), json!(c));
    }
    if !a.platforms.is_empty() {
        config.insert("platforms".into(), json!(a.platforms));
    }
    if !a.build_args.is_empty() {
        let args: Map<String, Value> = a
            .build_args
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        config.insert("build_args".into(), Value::Object(args));
    }
    if !config.is_empty() {
        body.insert("config".into(), Value::Object(config));
    }
    Value::Object(body)
}

const LIST_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STATUS", "status"),
    ("METHOD", "method"),
    ("IMAGE", "image"),
    ("REF", "git_ref"),
    ("CREATED", "created_at"),
];

pub async fn run(args: BuildArgs) -> CliResult<u8> {
    let mut s = args.conn.session()?;
    let client = &s.client;
    match args.command {
        BuildCommand::Submit(a) => {
            let build = client.post("/builds", &submit_body(&a)).await?;
            started(client, &build, "submitted", &a.follow, &mut s.out).await
        }
        BuildCommand::List(a) => {
            let filters = [("project_id", a.project), ("status", a.status)];
            s.list("/builds", &filters, &a.page, LIST_COLUMNS).await?;
            Ok(exit::OK)
        }
        BuildCommand::Get { id } => {
            s.show(&format!("/builds/{id}")).await?;
            Ok(exit::OK)
        }
        BuildCommand::Logs(a) => logs(client, &a, &mut s.out).await,
        BuildCommand::Cancel { id } => {
            let build = client
                .post(&format!("/builds/{id}/cancel"), &json!({}))
                .await?;
            announce(&s.out, &build, "cancel requested for");
            Ok(exit::OK)
        }
        BuildCommand::Retry { id, follow } => {
            let build = client
                .post(&format!("/builds/{id}/retry"), &json!({}))
                .await?;
            started(client, &build, "queued again:", &follow, &mut s.out).await
        }
    }
}

/// After submit or retry: the build, then its progress if followed.
async fn started(
    client: &Client,
    build: &Value,
    verb: &str,
    follow: &FollowArgs,
    out: &mut Printer,
) -> CliResult<u8> {
    let id = build["id"].as_str().map(str::to_owned).ok_or_else(|| {
        CliError::Unavailable(format!("the server's answer has no build id: {build}"))
    })?;
    if !follow.follow {
        announce(out, build, verb);
        return Ok(exit::OK);
    }
    if out.json {
        out.json_line(&json!({"event": "build", "build": build}));
    } else {
        out.line(&format!("build {id} {verb}"));
    }
    let watch = Watch {
        client,
        build_id: id,
        states: true,
        reconnect_for: follow.reconnect_timeout,
    };
    watch.run(build["status"].as_str(), out).await
}

fn announce(out: &Printer, build: &Value, verb: &str) {
    if out.json {
        out.document(build);
    } else {
        out.line(&format!(
            "build {} {verb} (status {})",
            render::cell(&build["id"]),
            out.palette.status(&render::cell(&build["status"]))
        ));
    }
}

async fn logs(client: &Client, a: &LogsArgs, out: &mut Printer) -> CliResult<u8> {
    if a.follow.follow {
        let watch = Watch {
            client,
            build_id: a.id.clone(),
            states: false,
            reconnect_for: a.follow.reconnect_timeout,
        };
        return watch.run(None, out).await;
    }
    let mut response = client
        .stream(client.request(reqwest::Method::GET, &format!("/builds/{}/logs", a.id)))
        .await?;
    // Streamed as it arrives: a long log is never held whole (text mode).
    let mut text = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::client::unavailable(&client.url(""), &e))?
    {
        if out.json {
            text.extend_from_slice(&chunk);
        } else {
            std::io::stdout()
                .write_all(&chunk)
                .map_err(|e| CliError::Unavailable(format!("cannot write to stdout: {e}")))?;
        }
    }
    if out.json {
        let text = String::from_utf8_lossy(&text);
        out.document(&json!({"build_id": a.id, "lines": text.lines().collect::<Vec<_>>()}));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    #[test]
    fn flags_become_the_submit_body() {
        let w = Wrap::try_parse_from([
            "x",
            "--project",
            "p1",
            "--method",
            "buildx",
            "--ref",
            "main",
            "--image",
            "r/i:1",
            "--dockerfile",
            "Dockerfile.ci",
            "--context",
            "app",
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--build-arg",
            "A=1",
            "--build-arg",
            "B=x=y",
            "--registry-credential",
            "c1",
            "--provider",
            "k1",
            "--timeout",
            "10m",
            "--priority",
            "-5",
        ])
        .unwrap();
        let body = submit_body(&w.submit);
        assert_eq!(
            body,
            json!({
                "project_id": "p1", "method": "buildx", "git_ref": "main", "image": "r/i:1",
                "registry_credential_id": "c1", "infrastructure_provider_id": "k1",
                "timeout_seconds": 600, "priority": -5,
                "config": {"dockerfile": "Dockerfile.ci", "context": "app",
                    "platforms": ["linux/amd64", "linux/arm64"],
                    "build_args": {"A": "1", "B": "x=y"}}
            })
        );
        let w = Wrap::try_parse_from(["x", "--project", "p", "--method", "docker"]).unwrap();
        assert_eq!(
            submit_body(&w.submit),
            json!({"project_id": "p", "method": "docker"})
        );
    }

    #[test]
    fn malformed_flags_are_refused() {
        for bad in [
            &["--build-arg", "NOEQUALS"][..],
            &["--build-arg", "=v"],
            &["--timeout", "0"],
            &["--timeout", "1.5s"],
            &["--timeout", "soon"],
        ] {
            let mut argv = vec!["x", "--project", "p", "--method", "docker"];
            argv.extend_from_slice(bad);
            assert!(Wrap::try_parse_from(&argv).is_err(), "{bad:?}");
        }
        assert_eq!(parse_timeout("90").unwrap(), 90);
        assert_eq!(parse_timeout("1h").unwrap(), 3600);
    }
}
