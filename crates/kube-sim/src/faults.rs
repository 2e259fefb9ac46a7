//! Fault injection, configurable at runtime: error responses, latency,
//! dropped or expired watches. Rules match a verb and/or a resource plural,
//! every matching request or each one with a probability (drawn from a
//! seedable generator, so a run's sequence of draws can be repeated).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP code (500 InternalError, 503, 429 TooManyRequests
    /// with `Retry-After: retry_after`, 409 Conflict).
    Error { code: u16, retry_after: Option<u32> },
    /// Carry the request out, then answer with this HTTP code instead of its
    /// result: a server that acted before failing (a reply lost in a proxy,
    /// a timeout after the write), which clients cannot tell from one that
    /// did not act.
    ErrorAfterActing { code: u16 },
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
    /// The chance (0.0–1.0) that it hits a matching request; `None` = every
    /// one. A request it does not hit uses none of `times`.
    pub probability: Option<f64>,
}

impl FaultRule {
    pub fn new(verb: Option<&str>, resource: Option<&str>, action: FaultAction) -> Self {
        Self {
            verb: verb.map(str::to_string),
            resource: resource.map(str::to_string),
            action,
            times: None,
            probability: None,
        }
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Hit each matching request with chance `p` (clamped to 0.0–1.0).
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = Some(if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) });
        self
    }
}

struct Entry {
    id: u64,
    rule: FaultRule,
    /// Requests it has hit so far.
    hits: u64,
}

pub struct Faults {
    rules: Mutex<Vec<Entry>>,
    next_id: Mutex<u64>,
    /// Draws for rules with a probability; [`Faults::seed`] makes them repeatable.
    rng: Mutex<StdRng>,
    /// Bumped to end every open watch at once.
    drop_generation: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            next_id: Mutex::new(1),
            rng: Mutex::new(StdRng::from_os_rng()),
            drop_generation: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Add a rule; returns its id for [`Faults::remove`].
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut id = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *id += 1;
        self.lock_rules().push(Entry {
            id: *id,
            rule,
            hits: 0,
        });
        *id
    }

    pub fn remove(&self, id: u64) {
        self.lock_rules().retain(|e| e.id != id);
    }

    pub fn clear(&self) {
        self.lock_rules().clear();
    }

    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.lock_rules()
            .iter()
            .map(|e| (e.id, e.rule.clone()))
            .collect()
    }

    /// Restart the draws of probabilistic rules from `seed`: the same
    /// requests in the same order then meet the same faults.
    pub fn seed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(seed);
    }

    /// How many requests rule `id` has hit so far (0 for an unknown id or
    /// one that is gone).
    pub fn hits(&self, id: u64) -> u64 {
        self.lock_rules()
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.hits)
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start counting the requests that match `verb` / `resource` (`None` =
    /// any): a zero-latency rule, so it changes nothing but its count. Read
    /// it with [`Faults::counted`].
    pub fn count_requests(&self, verb: Option<&str>, resource: Option<&str>) -> u64 {
        self.add(FaultRule::new(
            verb,
            resource,
            FaultAction::Latency(Duration::ZERO),
        ))
    }

    /// How many requests the counting rule `id` has met so far (0 for an
    /// unknown id).
    pub fn counted(&self, id: u64) -> u32 {
        u32::try_from(self.hits(id)).unwrap_or(u32::MAX)
    }

    /// The actions that apply to this request (consuming one use of counted
    /// rules; a probabilistic rule applies only when its draw says so).
    pub fn take(&self, verb: &str, resource: &str) -> Vec<FaultAction> {
        let mut rules = self.lock_rules();
        let mut out = Vec::new();
        for e in rules.iter_mut() {
            let r = &mut e.rule;
            let verb_ok = r.verb.as_deref().is_none_or(|v| v == verb);
            let res_ok = r.resource.as_deref().is_none_or(|x| x == resource);
            if !(verb_ok && res_ok && r.times != Some(0)) {
                continue;
            }
            if let Some(p) = r.probability {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                if !rng.random_bool(p) {
                    continue;
                }
            }
            if let Some(t) = r.times.as_mut() {
                *t -= 1;
            }
            e.hits += 1;
            out.push(r.action.clone());
        }
        rules.retain(|e| e.rule.times != Some(0));
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

    fn error(code: u16) -> FaultAction {
        FaultAction::Error {
            code,
            retry_after: None,
        }
    }

    /// Which of `n` requests a 10 % rule hits, after seeding with `seed`.
    fn draws(f: &Faults, id: u64, seed: u64, n: usize) -> Vec<bool> {
        f.seed(seed);
        (0..n)
            .map(|_| {
                let before = f.hits(id);
                f.take("get", "pods");
                f.hits(id) > before
            })
            .collect()
    }

    #[test]
    fn probabilistic_rules_hit_about_their_share_repeatably_from_a_seed() {
        let f = Faults::default();
        let id = f.add(FaultRule::new(None, None, error(500)).probability(0.1));
        let first = draws(&f, id, 7, 10_000);
        let hits = first.iter().filter(|h| **h).count();
        // Binomial(10 000, 0.1): sd 30; ±300 is ten of them.
        assert!((700..=1_300).contains(&hits), "{hits} hits of 10 000");
        assert_eq!(f.hits(id), hits as u64);
        assert_eq!(draws(&f, id, 7, 10_000), first, "same seed, same draws");
        assert_ne!(draws(&f, id, 8, 10_000), first, "another seed, other draws");

        let never = f.add(FaultRule::new(None, None, error(503)).probability(0.0));
        let always = f.add(FaultRule::new(None, None, error(429)).probability(1.0));
        for _ in 0..100 {
            f.take("get", "pods");
        }
        assert_eq!(f.hits(never), 0);
        assert_eq!(f.hits(always), 100);
    }

    #[test]
    fn a_probabilistic_rule_uses_its_budget_only_on_hits() {
        let f = Faults::default();
        f.seed(1);
        let id = f.add(
            FaultRule::new(Some("create"), None, error(500))
                .probability(0.5)
                .times(3),
        );
        let mut errors = 0;
        let mut requests = 0;
        while f.list().iter().any(|(i, _)| *i == id) {
            errors += f.take("create", "pods").len();
            requests += 1;
            assert!(requests < 1_000, "the rule never ran out");
        }
        assert_eq!(errors, 3, "exactly its budget, however many draws missed");
        assert!(f.take("create", "pods").is_empty());
    }
}
