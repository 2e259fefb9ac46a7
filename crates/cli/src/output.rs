//! Where output goes: plain lines, JSON documents (`--output json`: one
//! document, or one per line for streams), and on a terminal a live status
//! line kept below the printed lines.

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::render::Palette;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

pub struct Printer {
    pub json: bool,
    pub palette: Palette,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        let tty = std::io::stdout().is_terminal();
        let colors = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            json: format == OutputFormat::Json,
            palette: Palette { colors },
            tty,
            bar: None,
        }
    }

    /// A line of text (above the status line, if one is shown).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    /// Text as given (for blocks that end with their own newline).
    pub fn block(&self, text: &str) {
        self.line(text.strip_suffix('\n').unwrap_or(text));
    }

    /// A JSON document, pretty-printed.
    pub fn document(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON serializes")
        );
    }

    /// One JSON document per line, for streams.
    pub fn json_line(&self, value: &Value) {
        self.line(&value.to_string());
    }

    /// Shows a live status line: on a terminal, in text mode only.
    pub fn start_status(&mut self) {
        if self.tty && !self.json && self.bar.is_none() {
            // On stdout, the terminal checked above: `println` through a
            // bar whose target is hidden would drop the line.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        }
    }

    pub fn set_status(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    pub fn finish_status(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
