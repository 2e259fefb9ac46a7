//! Deleting finished PipelineRuns per provider retention, after their logs
//! and artifacts are persisted, so clusters do not fill with old runs.

use chrono::{DateTime, Utc};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::client::{Retention, TektonVersion};
use super::error::{TektonError, is_not_found};
use super::status::succeeded_condition;
use super::submit::{MANAGED_BY_SELECTOR, pipelinerun_resource};

/// Set on a run once its logs and artifacts are in the database; only such
/// runs are ever deleted, so a run another dispatcher is still draining stays.
pub const PERSISTED: &str = "imagefactory.io/persisted";

/// A finished run whose logs and artifacts are persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRun {
    pub name: String,
    pub completed: DateTime<Utc>,
}

/// Which finished runs to delete: beyond the newest `keep_last`, or older
/// than `ttl`.
pub fn select_for_deletion(
    runs: &[FinishedRun],
    retention: &Retention,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut sorted: Vec<&FinishedRun> = runs.iter().collect();
    sorted.sort_by(|a, b| b.completed.cmp(&a.completed).then(a.name.cmp(&b.name)));
    sorted
        .iter()
        .enumerate()
        .filter(|(i, run)| {
            let beyond_count = retention.keep_last.is_some_and(|k| *i >= k);
            let expired = retention
                .ttl
                .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
                .is_some_and(|ttl| now - run.completed > ttl);
            beyond_count || expired
        })
        .map(|(_, run)| run.name.clone())
        .collect()
}

/// Mark a run as persisted (merge-patch of an annotation).
pub async fn mark_persisted(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    name: &str,
) -> Result<(), TektonError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &pipelinerun_resource(version));
    let patch = serde_json::json!({ "metadata": { "annotations": { PERSISTED: "true" } } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(TektonError::kube(
            format!("marking PipelineRun {namespace}/{name} persisted"),
            e,
        )),
    }
}

fn finished(run: &Value) -> Option<FinishedRun> {
    let condition = succeeded_condition(run)?;
    let persisted = run
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PERSISTED))
        .and_then(Value::as_str)
        == Some("true");
    if condition.status == "Unknown" || !persisted {
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
    let doomed = select_for_deletion(&runs, retention, Utc::now());
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
    use std::time::Duration;

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
        assert_eq!(select_for_deletion(&runs, &keep2, now), vec!["b", "a"]);
        let ttl = Retention {
            keep_last: None,
            ttl: Some(Duration::from_secs(60 * 60)),
        };
        assert_eq!(select_for_deletion(&runs, &ttl, now), vec!["a"]);
        let both = Retention {
            keep_last: Some(3),
            ttl: Some(Duration::from_secs(30 * 60)),
        };
        assert_eq!(select_for_deletion(&runs, &both, now), vec!["b", "a"]);
        assert!(select_for_deletion(&runs, &Retention::default(), now).is_empty());
    }

    #[test]
    fn only_finished_and_persisted_runs_are_candidates() {
        let base = serde_json::json!({
            "metadata": {"name": "r", "annotations": {PERSISTED: "true"}},
            "status": {"completionTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]}
        });
        assert!(finished(&base).is_some());
        let mut unpersisted = base.clone();
        unpersisted["metadata"]["annotations"] = serde_json::json!({});
        assert!(finished(&unpersisted).is_none());
        let mut running = base.clone();
        running["status"]["conditions"][0]["status"] = "Unknown".into();
        assert!(finished(&running).is_none());
    }
}
