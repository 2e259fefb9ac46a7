//! Deleting finished PipelineRuns per provider retention, after their logs
//! and artifacts are persisted, so clusters do not fill with old runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use serde_json::Value;

use super::client::{Retention, TektonVersion};
use super::error::{TektonError, is_not_found};
use super::status::succeeded_condition;
use super::submit::{MANAGED_BY_SELECTOR, pipelinerun_resource};

/// Runs that finished this recently are left alone (except the caller's own),
/// so another dispatcher still draining their logs is not cut short.
pub const GRACE: Duration = Duration::from_secs(120);

/// A finished run: name and completion time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub name: String,
    pub completed: DateTime<Utc>,
}

/// Which finished runs to delete: beyond the newest `keep_last`, or older
/// than `ttl`. `own` (the run just persisted) skips the grace period.
pub fn select_for_deletion(
    runs: &[FinishedRun],
    retention: &Retention,
    now: DateTime<Utc>,
    own: &str,
) -> Vec<String> {
    let mut sorted: Vec<&FinishedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| b.completed.cmp(&a.completed).then(a.name.cmp(&b.name)));
    let grace = chrono::Duration::from_std(GRACE).unwrap_or_default();
    sorted
        .iter()
        .enumerate()
        .filter(|(i, run)| {
            let beyond_count = retention.keep_last.is_some_and(|k| *i >= k);
            let expired = retention
                .ttl
                .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
                .is_some_and(|ttl| now - run.completed > ttl);
            let settled = run.name == own || now - run.completed > grace;
            (beyond_count || expired) && settled
        })
        .map(|(_, run)| run.name.clone())
        .collect()
}

fn finished(run: &Value) -> Option<FinishedRun> {
    let condition = succeeded_condition(run)?;
    if condition.status == "Unknown" {
        return None;
    }
    let completed = run
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    Some(FinishedRun {
        name: run.pointer("/metadata/name")?.as_str()?.to_string(),
        completed,
    })
}

/// Apply retention in a namespace; returns the deleted run names.
pub async fn apply_retention(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    retention: &Retention,
    own: &str,
) -> Result<Vec<String>, TektonError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &pipelinerun_resource(version));
    let list = api
        .list(&ListParams::default().labels(MANAGED_BY_SELECTOR))
        .await
        .map_err(|e| TektonError::kube(format!("listing PipelineRuns in {namespace}"), e))?;
    let runs: Vec<FinishedRun> = list
        .items
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter_map(|r| finished(&r))
        .collect();
    let doomed = select_for_deletion(&runs, retention, Utc::now(), own);
    for name in &doomed {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(TektonError::kube(
                    format!("deleting PipelineRun {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, minutes_ago: i64, now: DateTime<Utc>) -> FinishedRun {
        FinishedRun {
            name: name.into(),
            completed: now - chrono::Duration::minutes(minutes_ago),
        }
    }

    #[test]
    fn keeps_the_newest_and_drops_the_expired() {
        let now = Utc::now();
        let runs = vec![
            run("a", 100, now),
            run("b", 50, now),
            run("c", 10, now),
            run("d", 0, now),
        ];
        let keep2 = Retention {
            keep_last: Some(2),
            ttl: None,
        };
        assert_eq!(select_for_deletion(&runs, &keep2, now, "d"), vec!["b", "a"]);
        let ttl = Retention {
            keep_last: None,
            ttl: Some(Duration::from_secs(60 * 60)),
        };
        assert_eq!(select_for_deletion(&runs, &ttl, now, "d"), vec!["a"]);
        // keep_last 0: the own run goes at once, a run just finished by
        // someone else waits out the grace period.
        let none = Retention {
            keep_last: Some(0),
            ttl: None,
        };
        let runs = vec![run("own", 0, now), run("other", 0, now)];
        assert_eq!(select_for_deletion(&runs, &none, now, "own"), vec!["own"]);
        assert!(select_for_deletion(&runs, &Retention::default(), now, "own").is_empty());
    }
}
