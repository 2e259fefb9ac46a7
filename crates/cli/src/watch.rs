//! Following one build: its state changes (polled) and log lines (SSE,
//! resumed after a dropped connection), in order: a line arriving while
//! `queued` is shown shows `running` first (lines are written once a build
//! is claimed), and the final state is shown after the last line. Returns the exit code of the build's result.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::exit;
use crate::follow::{LogEvent, follow_logs};
use crate::output::Printer;
use crate::render::{self, StateTracker};

const STATE_POLL: Duration = Duration::from_secs(1);

pub struct Watch<'a> {
    pub client: &'a Client,
    pub build_id: String,
    /// Show state changes (submit/retry `--follow`), not only the log.
    pub states: bool,
    pub reconnect_for: Duration,
}

/// What the loop keeps while following.
struct Progress {
    tracker: StateTracker,
    lines: u64,
    source: Option<String>,
    started: Instant,
}

impl Watch<'_> {
    pub async fn run(&self, initial: Option<&str>, out: &mut Printer) -> CliResult<u8> {
        let (tx, mut rx) = mpsc::channel(256);
        let follower = {
            let (client, id, window) = (
                self.client.clone(),
                self.build_id.clone(),
                self.reconnect_for,
            );
            tokio::spawn(async move { follow_logs(&client, &id, window, tx).await })
        };
        let mut p = Progress {
            tracker: StateTracker::default(),
            lines: 0,
            source: None,
            started: Instant::now(),
        };
        if let Some(status) = initial.filter(|_| self.states) {
            self.show_state(&mut p, status, out);
        }
        out.start_status();
        let mut poll = tokio::time::interval(STATE_POLL);
        let status = loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(LogEvent::Line { id, source, line }) => {
                        // A line means the build was claimed: shown as
                        // running even if it has ended since (a fast build
                        // can end before the next poll).
                        if self.states && p.tracker.current() == Some("queued") {
                            self.show_state(&mut p, "running", out);
                        }
                        show_line(out, &id, source.as_deref(), &line);
                        p.lines += 1;
                        p.source = source.or(p.source.take());
                    }
                    Some(LogEvent::End(status)) => break status,
                    None => {
                        out.finish_status();
                        return Err(follower_error(follower).await);
                    }
                },
                _ = poll.tick(), if self.states => self.refresh_state(&mut p, out).await,
            }
            let status = p.tracker.current().unwrap_or("following").to_owned();
            out.set_status(render::status_message(
                &status,
                p.source.as_deref(),
                p.lines,
                p.started.elapsed(),
                out.palette,
            ));
        };
        out.finish_status();
        self.show_end(&status, out).await;
        Ok(exit::for_build_status(&status))
    }

    fn show_state(&self, p: &mut Progress, status: &str, out: &Printer) {
        if let Some(changed) = p.tracker.observe(status) {
            if out.json {
                out.json_line(
                    &json!({"event": "state", "build_id": self.build_id, "status": changed}),
                );
            } else {
                out.line(&render::state_line(&changed, out.palette));
            }
        }
    }

    /// Reads the build's state and shows a change; terminal states wait for
    /// the log's end, so they come after every line. A failed read is left
    /// to the log follower, which reports an unreachable server.
    async fn refresh_state(&self, p: &mut Progress, out: &Printer) {
        if let Ok(build) = self.client.get(&format!("/builds/{}", self.build_id)).await
            && let Some(status) = build["status"].as_str()
            && matches!(status, "queued" | "running")
        {
            self.show_state(p, status, out);
        }
    }

    async fn show_end(&self, status: &str, out: &Printer) {
        let build = self
            .client
            .get(&format!("/builds/{}", self.build_id))
            .await
            .unwrap_or(Value::Null);
        let artifacts = self
            .client
            .get(&format!("/builds/{}/artifacts", self.build_id))
            .await
            .ok();
        let images: Vec<(String, String)> = artifacts
            .iter()
            .flat_map(|a| a["items"].as_array().cloned().unwrap_or_default())
            .filter(|a| matches!(a["kind"].as_str(), Some("image_url" | "image_digest")))
            .map(|a| (render::cell(&a["name"]), render::cell(&a["value"])))
            .collect();
        if out.json {
            out.json_line(&json!({
                "event": "end", "build_id": self.build_id, "status": status,
                "error_message": build["error_message"],
                "artifacts": images.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            }));
            return;
        }
        if !self.states {
            // `build logs -f` prints the log and nothing else.
            return;
        }
        out.line(&render::state_line(status, out.palette));
        if let Some(message) = build["error_message"].as_str() {
            out.line(&format!("error: {message}"));
        }
        for (name, value) in images {
            out.line(&format!("{name}: {value}"));
        }
    }
}

fn show_line(out: &Printer, id: &str, source: Option<&str>, line: &str) {
    if out.json {
        out.json_line(&json!({"event": "log", "id": id, "source": source, "line": line}));
    } else {
        out.line(&render::log_line(source, line, out.palette));
    }
}

async fn follower_error(handle: tokio::task::JoinHandle<CliResult<()>>) -> CliError {
    match handle.await {
        Ok(Err(e)) => e,
        Ok(Ok(())) => CliError::Unavailable("the log stream ended without the build's end".into()),
        Err(e) => CliError::Unavailable(format!("the log follower stopped: {e}")),
    }
}
