//! Pure text of what the client prints: state changes, log lines, the live
//! status line, tables and details. Colours only when the palette says so.

use std::time::Duration;

use console::Style;
use serde_json::Value;

/// Colours on or off (a terminal without `NO_COLOR`).
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub colors: bool,
}

impl Palette {
    fn paint(self, style: Style, text: &str) -> String {
        style.force_styling(self.colors).apply_to(text).to_string()
    }

    /// A build status in its colour.
    pub fn status(self, status: &str) -> String {
        let style = match status {
            "succeeded" => Style::new().green().bold(),
            "failed" | "timed_out" => Style::new().red().bold(),
            "cancelled" => Style::new().yellow().bold(),
            "running" => Style::new().cyan(),
            _ => Style::new().dim(),
        };
        self.paint(style, status)
    }

    pub fn dim(self, text: &str) -> String {
        self.paint(Style::new().dim(), text)
    }
}

/// `state: <status>` — one line per state change of a followed build.
pub fn state_line(status: &str, p: Palette) -> String {
    format!("{} {}", p.dim("state:"), p.status(status))
}

/// A log line under its source: `[build/build-and-push] STEP 1/2`.
pub fn log_line(source: Option<&str>, line: &str, p: Palette) -> String {
    match source {
        Some(s) => format!("{} {line}", p.dim(&format!("[{s}]"))),
        None => line.to_owned(),
    }
}

/// The live status line: status, current task/step, lines so far, time.
pub fn status_message(
    status: &str,
    source: Option<&str>,
    lines: u64,
    elapsed: Duration,
    p: Palette,
) -> String {
    let secs = elapsed.as_secs();
    let mut parts = vec![p.status(status)];
    if let Some(s) = source {
        parts.push(s.to_owned());
    }
    parts.push(format!("{lines} lines"));
    parts.push(format!("{}:{:02}", secs / 60, secs % 60));
    parts.join(" · ")
}

/// Tracks the state shown last, so each change is shown once.
#[derive(Debug, Default)]
pub struct StateTracker {
    shown: Option<String>,
}

impl StateTracker {
    /// `Some(status)` when it differs from what was shown last.
    pub fn observe(&mut self, status: &str) -> Option<String> {
        if self.shown.as_deref() == Some(status) {
            return None;
        }
        self.shown = Some(status.to_owned());
        Some(status.to_owned())
    }

    pub fn current(&self) -> Option<&str> {
        self.shown.as_deref()
    }
}

/// A JSON field as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Items as an aligned table with the given `(header, field)` columns.
pub fn table(columns: &[(&str, &str)], items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|(_, f)| cell(&item[*f])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// An object as `key: value` lines (nested values as compact JSON).
pub fn details(v: &Value) -> String {
    let Some(map) = v.as_object() else {
        return format!("{}\n", cell(v));
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter()
        .map(|(k, v)| {
            format!(
                "{:<width$}  {}\n",
                format!("{k}:"),
                cell(v),
                width = width + 1
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Palette = Palette { colors: false };

    #[test]
    fn plain_lines_have_no_escapes_and_colored_ones_do() {
        assert_eq!(state_line("running", PLAIN), "state: running");
        assert_eq!(
            log_line(Some("build/build-and-push"), "STEP 1/2", PLAIN),
            "[build/build-and-push] STEP 1/2"
        );
        assert_eq!(log_line(None, "bare", PLAIN), "bare");
        let colored = state_line("failed", Palette { colors: true });
        assert!(
            colored.contains('\u{1b}') && colored.contains("failed"),
            "{colored:?}"
        );
    }

    #[test]
    fn the_status_line_names_the_step_and_progress() {
        let text = status_message(
            "running",
            Some("clone/clone"),
            12,
            Duration::from_secs(75),
            PLAIN,
        );
        assert_eq!(text, "running · clone/clone · 12 lines · 1:15");
        let text = status_message("queued", None, 0, Duration::ZERO, PLAIN);
        assert_eq!(text, "queued · 0 lines · 0:00");
    }

    #[test]
    fn each_state_change_is_shown_once() {
        let mut t = StateTracker::default();
        let seen: Vec<_> = ["queued", "queued", "running", "running", "succeeded"]
            .iter()
            .filter_map(|s| t.observe(s))
            .collect();
        assert_eq!(seen, ["queued", "running", "succeeded"]);
        assert_eq!(t.current(), Some("succeeded"));
    }

    #[test]
    fn tables_align_and_show_missing_values() {
        let items = [
            json!({"id": "a1", "status": "running", "n": 3}),
            json!({"id": "b", "status": null, "n": 10}),
        ];
        let text = table(&[("ID", "id"), ("STATUS", "status"), ("N", "n")], &items);
        assert_eq!(text, "ID  STATUS   N\na1  running  3\nb   -        10\n");
        assert_eq!(table(&[("ID", "id")], &[]), "ID\n");
    }

    #[test]
    fn details_list_every_field() {
        // Keys in alphabetical order: the same whether serde_json keeps
        // insertion order or sorts.
        let text = details(&json!({"config": {"a": 1}, "error": null, "id": "x"}));
        assert_eq!(text, "config:  {\"a\":1}\nerror:   -\nid:      x\n");
    }
}
