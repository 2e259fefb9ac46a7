//! Following a build's log: the SSE stream with each line's source, and
//! after a dropped connection (network, server restart) a new one that
//! resumes with `Last-Event-ID` after the last line received, so no line is
//! shown twice or lost. The server being away longer than the reconnect
//! window ends the follow with its last error.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::client::{Client, checked, send};
use crate::error::{CliError, CliResult};
use crate::sse;

/// What the follower passes on, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Line {
        id: String,
        /// `<task>/<step>` for Tekton steps, `imagefactory` for the
        /// service's own lines, `clone`/`build`/`push` for local builds.
        source: Option<String>,
        line: String,
    },
    /// The build ended with this status; every line was sent before.
    End(String),
}

#[derive(Deserialize)]
struct LineData {
    source: Option<String>,
    line: String,
}

/// Pure: a `log` event's data as `format=json` sends it (the bare line
/// from a server that sends text).
pub fn parse_line(id: String, data: &str) -> LogEvent {
    match serde_json::from_str::<LineData>(data) {
        Ok(d) => LogEvent::Line {
            id,
            source: d.source,
            line: d.line,
        },
        Err(_) => LogEvent::Line {
            id,
            source: None,
            line: data.to_owned(),
        },
    }
}

enum StreamEnd {
    /// The `end` event arrived (or nobody listens any more).
    Finished,
    /// The server refused for good (unknown build, bad token).
    Refused(CliError),
    /// Worth reconnecting: connection lost, server unavailable or busy.
    Dropped(CliError),
}

/// Follows build `build` until its `end` event, sending each event to `tx`.
pub async fn follow_logs(
    client: &Client,
    build: &str,
    reconnect_for: Duration,
    tx: mpsc::Sender<LogEvent>,
) -> CliResult<()> {
    let mut last_id: Option<String> = None;
    let mut down_since: Option<Instant> = None;
    let mut delay = Duration::from_millis(200);
    loop {
        let mut connected = false;
        match one_stream(client, build, &mut last_id, &mut connected, &tx).await {
            StreamEnd::Finished => return Ok(()),
            StreamEnd::Refused(err) => return Err(err),
            StreamEnd::Dropped(err) => {
                if connected {
                    down_since = None;
                    delay = Duration::from_millis(200);
                }
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= reconnect_for {
                    return Err(err);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn one_stream(
    client: &Client,
    build: &str,
    last_id: &mut Option<String>,
    connected: &mut bool,
    tx: &mpsc::Sender<LogEvent>,
) -> StreamEnd {
    let mut request = client
        .request(Method::GET, &format!("/builds/{build}/logs"))
        .query(&[("follow", "true"), ("format", "json")]);
    if let Some(id) = last_id.as_deref() {
        request = request.header("last-event-id", id);
    }
    let response = match send(request, &client.url("")).await {
        Ok(r) => r,
        Err(e) => return StreamEnd::Dropped(e),
    };
    let response = match checked(response).await {
        Ok(r) => r,
        Err(CliError::Api { status, body }) if matches!(status, 429 | 502 | 503 | 504) => {
            return StreamEnd::Dropped(CliError::Api { status, body });
        }
        Err(e) => return StreamEnd::Refused(e),
    };
    *connected = true;
    let mut events = std::pin::pin!(sse::events(response.bytes_stream()));
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                return StreamEnd::Dropped(CliError::Unavailable(format!(
                    "the log stream broke: {e}"
                )));
            }
        };
        let out = match event.event.as_str() {
            "log" => {
                let id = event.id.clone().unwrap_or_default();
                *last_id = event.id;
                parse_line(id, &event.data)
            }
            "end" => LogEvent::End(event.data),
            "error" => {
                return StreamEnd::Dropped(CliError::Unavailable(format!(
                    "the server ended the log stream: {}",
                    event.data
                )));
            }
            _ => continue,
        };
        let end = matches!(out, LogEvent::End(_));
        if tx.send(out).await.is_err() || end {
            return StreamEnd::Finished;
        }
    }
    StreamEnd::Dropped(CliError::Unavailable(
        "the log stream closed before the build ended".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_data_with_and_without_source() {
        assert_eq!(
            parse_line("7".into(), r#"{"source":"build/push","line":"done"}"#),
            LogEvent::Line {
                id: "7".into(),
                source: Some("build/push".into()),
                line: "done".into()
            }
        );
        // A bare line (text format) is kept whole, even if it looks like JSON.
        assert_eq!(
            parse_line("8".into(), r#"{"x": 1}"#),
            LogEvent::Line {
                id: "8".into(),
                source: None,
                line: r#"{"x": 1}"#.into()
            }
        );
    }
}
