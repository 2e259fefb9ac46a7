//! The operator's lines in a build's log (source [`OPERATOR_SOURCE`]): the
//! namespace used, the PipelineRun created, adopted or re-attached to, and
//! how the attempt ended after how long. They let an operator go from a
//! build to its objects on the cluster without reading the dispatcher's log.

use std::time::Duration;

use crate::{ExecutionSink, LogLine, Outcome};

/// The log source of Image Factory's own lines (the dispatcher's notices
/// about lost lines use it too).
pub const OPERATOR_SOURCE: &str = "imagefactory";

/// Writes operator lines at increasing positions of [`OPERATOR_SOURCE`].
pub struct OperatorLog {
    next: i64,
}

impl OperatorLog {
    /// For a new execution: nothing of it is stored yet.
    pub fn new() -> Self {
        Self { next: 0 }
    }

    /// For a re-attached execution: after the lines already stored.
    pub async fn resume(sink: &dyn ExecutionSink) -> Self {
        let mut log = Self::new();
        log.skip_stored(sink).await;
        log
    }

    /// Past any line another writer (the dispatcher's lost-lines notice)
    /// put under the same source meanwhile, so this one is not taken for a
    /// duplicate of it.
    async fn skip_stored(&mut self, sink: &dyn ExecutionSink) {
        if let Some(last) = sink
            .log_positions()
            .await
            .ok()
            .and_then(|p| p.get(OPERATOR_SOURCE).copied())
        {
            self.next = self.next.max(last + 1);
        }
    }

    /// Append `line`; a line the sink could not store is reported by the
    /// sink itself, and the build goes on.
    pub async fn line(&mut self, sink: &dyn ExecutionSink, line: String) {
        let position = self.next;
        self.next += 1;
        let _ = sink
            .logs(&[LogLine {
                source: OPERATOR_SOURCE.to_string(),
                position,
                line,
            }])
            .await;
    }

    /// The completion line: how the attempt ended and after how long (none
    /// on a handover: the dispatcher that re-attaches writes it).
    pub async fn finished(
        &mut self,
        sink: &dyn ExecutionSink,
        run: Option<&str>,
        outcome: &Outcome,
        took: Duration,
    ) {
        let Some(line) = completion_line(run, outcome, took) else {
            return;
        };
        self.skip_stored(sink).await;
        self.line(sink, line).await;
    }
}

impl Default for OperatorLog {
    fn default() -> Self {
        Self::new()
    }
}

/// `PipelineRun <name> finished: <outcome> after <seconds> s`, or for an
/// attempt that ended before a run existed, `Finished before a PipelineRun
/// was created: …`.
pub fn completion_line(run: Option<&str>, outcome: &Outcome, took: Duration) -> Option<String> {
    let what = match outcome {
        Outcome::Succeeded => "succeeded".to_string(),
        Outcome::Failed { message } => format!("failed ({message})"),
        Outcome::Cancelled { .. } => "cancelled".to_string(),
        Outcome::TimedOut { .. } => "timed out".to_string(),
        Outcome::Transient { message } => {
            format!("ended on an infrastructure error, to be retried ({message})")
        }
        Outcome::Unreachable { message } => {
            format!("the cluster could not be reached, to be retried ({message})")
        }
        Outcome::HandedOver => return None,
    };
    let secs = took.as_secs_f64();
    Some(match run {
        Some(name) => format!("PipelineRun {name} finished: {what} after {secs:.1} s"),
        None => format!("Finished before a PipelineRun was created: {what} after {secs:.1} s"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_line_names_run_outcome_and_duration() {
        let took = Duration::from_millis(2140);
        assert_eq!(
            completion_line(Some("if-1"), &Outcome::Succeeded, took).unwrap(),
            "PipelineRun if-1 finished: succeeded after 2.1 s"
        );
        let failed = Outcome::Failed {
            message: "step build exited 1".into(),
        };
        assert_eq!(
            completion_line(None, &failed, took).unwrap(),
            "Finished before a PipelineRun was created: failed (step build exited 1) after 2.1 s"
        );
        assert_eq!(
            completion_line(Some("if-1"), &Outcome::HandedOver, took),
            None
        );
    }
}
