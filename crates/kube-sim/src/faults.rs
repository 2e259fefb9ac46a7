//! Fault injection, configurable at runtime: error responses, latency,
//! dropped or expired watches. Rules match a verb and/or a resource plural.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP code (500 InternalError, 503, 429 TooManyRequests
    /// with `Retry-After: retry_after`, 409 Conflict).
    Error { code: u16, retry_after: Option<u32> },
    /// Delay the request before handling it.
    Latency(Duration),
    /// Watches end (connection closed mid-stream) after this long.
    DropWatch { after: Duration },
    /// Watches get an in-stream ERROR with a 410 Expired Status right away.
    ExpireWatch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`; `None` = any.
    pub verb: Option<String>,
    /// Resource plural (`pipelineruns`, `pods/log`); `None` = any.
    pub resource: Option<String>,
    pub action: FaultAction,
    /// How many requests it hits before it disappears; `None` = until removed.
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn new(verb: Option<&str>, resource: Option<&str>, action: FaultAction) -> Self {
        Self {
            verb: verb.map(str::to_string),
            resource: resource.map(str::to_string),
            action,
            times: None,
        }
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
}

pub struct Faults {
    rules: Mutex<Vec<(u64, FaultRule)>>,
    next_id: Mutex<u64>,
    /// Bumped to end every open watch at once.
    drop_generation: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            next_id: Mutex::new(1),
            drop_generation: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Add a rule; returns its id for [`Faults::remove`].
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut id = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *id += 1;
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*id, rule));
        *id
    }

    pub fn remove(&self, id: u64) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _)| *i != id);
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Start counting the requests that match `verb` / `resource` (`None` =
    /// any): a zero-latency rule with the largest use budget, so it changes
    /// nothing but its count. Read it with [`Faults::counted`].
    pub fn count_requests(&self, verb: Option<&str>, resource: Option<&str>) -> u64 {
        self.add(
            FaultRule::new(verb, resource, FaultAction::Latency(Duration::ZERO)).times(u32::MAX),
        )
    }

    /// How many requests the counting rule `id` has met so far (0 for an
    /// unknown id).
    pub fn counted(&self, id: u64) -> u32 {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, r)| r.times)
            .map_or(0, |left| u32::MAX - left)
    }

    /// The actions that apply to this request (consuming one use of counted rules).
    pub fn take(&self, verb: &str, resource: &str) -> Vec<FaultAction> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (_, r) in rules.iter_mut() {
            let verb_ok = r.verb.as_deref().is_none_or(|v| v == verb);
            let res_ok = r.resource.as_deref().is_none_or(|x| x == resource);
            if verb_ok && res_ok && r.times != Some(0) {
                if let Some(t) = r.times.as_mut() {
                    *t -= 1;
                }
                out.push(r.action.clone());
            }
        }
        rules.retain(|(_, r)| r.times != Some(0));
        out
    }

    /// End every open watch now (clients see the connection close).
    pub fn drop_all_watches(&self) {
        self.drop_generation.send_modify(|g| *g += 1);
    }

    pub fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_count_only_matching_requests() {
        let f = Faults::default();
        let patches = f.count_requests(Some("patch"), Some("tasks"));
        let all = f.count_requests(None, None);
        for (verb, resource) in [("patch", "tasks"), ("get", "tasks"), ("patch", "pods")] {
            // A counter only ever adds no delay.
            let actions = f.take(verb, resource);
            assert!(
                actions
                    .iter()
                    .all(|a| *a == FaultAction::Latency(Duration::ZERO))
            );
        }
        assert_eq!(f.counted(patches), 1);
        assert_eq!(f.counted(all), 3);
        assert_eq!(f.counted(9999), 0);
    }

    #[test]
    fn counted_rules_expire_and_match_filters() {
        let f = Faults::default();
        f.add(
            FaultRule::new(
                Some("create"),
                Some("pods"),
                FaultAction::Error {
                    code: 500,
                    retry_after: None,
                },
            )
            .times(1),
        );
        assert!(f.take("get", "pods").is_empty());
        assert!(f.take("create", "secrets").is_empty());
        assert_eq!(f.take("create", "pods").len(), 1);
        assert!(f.take("create", "pods").is_empty());
        let id = f.add(FaultRule::new(None, None, FaultAction::ExpireWatch));
        assert_eq!(f.take("watch", "x"), vec![FaultAction::ExpireWatch]);
        f.remove(id);
        assert!(f.take("watch", "x").is_empty());
    }
}
