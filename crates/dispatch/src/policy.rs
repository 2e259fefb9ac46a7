//! What an executor's outcome means for the build: terminal status, requeue
//! with backoff, or handover. Pure functions.

use std::time::Duration;

use imagefactory_domain::BuildStatus;
use imagefactory_exec::Outcome;
use imagefactory_store::queue::Finish;

/// Exponential backoff with "equal jitter": the delay before attempt
/// `attempt + 1` is half of `base * 2^(attempt-1)` (capped at `max`) plus a
/// random part of the other half. `jitter` is uniform in `[0, 1)`.
pub fn backoff(attempt: i32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1u32 << exponent).min(max);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The settings `decide` needs.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long uncounted attempts (`Outcome::Unreachable`) go on.
    pub unreachable_grace: Duration,
}

/// Longest wait between two attempts that could not reach their cluster:
/// a cluster that is back is used within this, however long it was away.
pub const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The attempts in a row that could not reach their cluster, up to and
/// including the one being decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unreached {
    /// How many.
    pub tries: i32,
    /// Since the first of them started.
    pub lasted: Duration,
}

/// A duration in whole seconds, as people read it (`1m 30s`).
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// `None` means the execution was handed over: release the lease, record
/// nothing. `attempt` counts the attempts of this round that count toward
/// the budget, this one included; `unreached` matters for
/// `Outcome::Unreachable` only.
pub fn decide(
    outcome: &Outcome,
    attempt: i32,
    build_max_attempts: i32,
    policy: RetryPolicy,
    unreached: Unreached,
    jitter: f64,
) -> Option<Finish> {
    let terminal = |status, message: Option<&str>| {
        Some(Finish::Terminal {
            status,
            message: message.map(str::to_owned),
        })
    };
    match outcome {
        Outcome::Succeeded => terminal(BuildStatus::Succeeded, None),
        Outcome::Failed { message } => terminal(BuildStatus::Failed, Some(message)),
        Outcome::Cancelled { message } => terminal(BuildStatus::Cancelled, Some(message)),
        Outcome::TimedOut { message } => terminal(BuildStatus::TimedOut, Some(message)),
        Outcome::Transient { message } => {
            let max = build_max_attempts.min(policy.max_attempts).max(1);
            if attempt < max {
                Some(Finish::Requeue {
                    delay: backoff(attempt, policy.backoff_base, policy.backoff_max, jitter),
                    message: format!("attempt {attempt} of {max} failed (will retry): {message}"),
                    counted: true,
                })
            } else {
                terminal(
                    BuildStatus::Failed,
                    Some(&format!("gave up after {attempt} attempts: {message}")),
                )
            }
        }
        // Nothing of the attempt exists on the cluster, so trying again
        // cannot run the build twice: an outage must not use up its
        // attempts. Bounded by time instead, from the first such try.
        Outcome::Unreachable { message } => {
            let Unreached { tries, lasted } = unreached;
            let grace = policy.unreachable_grace;
            if lasted < grace {
                Some(Finish::Requeue {
                    delay: backoff(
                        tries,
                        policy.backoff_base,
                        policy.backoff_max.min(UNREACHABLE_BACKOFF_MAX),
                        jitter,
                    ),
                    message: format!(
                        "the cluster could not be reached (try {tries} in {}; not counted as an attempt, retried for up to {}): {message}",
                        human(lasted),
                        human(grace)
                    ),
                    counted: false,
                })
            } else {
                terminal(
                    BuildStatus::Failed,
                    Some(&format!(
                        "gave up: the build's cluster could not be reached for {} ({tries} tries; IF_DISPATCHER_UNREACHABLE_GRACE is {}): {message}",
                        human(lasted),
                        human(grace)
                    )),
                )
            }
        }
        Outcome::HandedOver => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(2),
        backoff_max: Duration::from_secs(60),
        unreachable_grace: Duration::from_secs(600),
    };
    const NONE: Unreached = Unreached {
        tries: 0,
        lasted: Duration::ZERO,
    };

    #[test]
    fn backoff_doubles_is_capped_and_jitters_within_the_upper_half() {
        let b = Duration::from_secs(2);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(1, b, m, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, b, m, 0.999_999).as_millis(), 1999);
        assert_eq!(backoff(2, b, m, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(3, b, m, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, b, m, 0.0), Duration::from_secs(30));
        assert!(backoff(40, b, m, 1.0) <= m);
    }

    #[test]
    fn transient_requeues_until_the_lower_max_then_fails() {
        let t = Outcome::Transient {
            message: "cluster unreachable".into(),
        };
        match decide(&t, 1, 5, POLICY, NONE, 0.5) {
            Some(Finish::Requeue {
                delay,
                message,
                counted,
            }) => {
                assert_eq!(delay, Duration::from_millis(1500));
                assert!(message.contains("cluster unreachable"));
                assert!(counted);
            }
            other => panic!("{other:?}"),
        }
        // the build allows 5, the dispatcher caps at 3
        match decide(&t, 3, 5, POLICY, NONE, 0.5) {
            Some(Finish::Terminal {
                status: BuildStatus::Failed,
                message: Some(m),
            }) => {
                assert!(m.starts_with("gave up after 3 attempts"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // the build allows only 1
        assert!(matches!(
            decide(&t, 1, 1, POLICY, NONE, 0.5),
            Some(Finish::Terminal {
                status: BuildStatus::Failed,
                ..
            })
        ));
    }

    #[test]
    fn permanent_outcomes_are_terminal_at_once_and_handover_records_nothing() {
        let f = Outcome::Failed {
            message: "missing Task".into(),
        };
        assert_eq!(
            decide(&f, 1, 3, POLICY, NONE, 0.0),
            Some(Finish::Terminal {
                status: BuildStatus::Failed,
                message: Some("missing Task".into())
            })
        );
        assert!(matches!(
            decide(&Outcome::Succeeded, 1, 3, POLICY, NONE, 0.0),
            Some(Finish::Terminal {
                status: BuildStatus::Succeeded,
                message: None
            })
        ));
        assert!(matches!(
            decide(
                &Outcome::TimedOut {
                    message: "x".into()
                },
                1,
                3,
                POLICY,
                NONE,
                0.0
            ),
            Some(Finish::Terminal {
                status: BuildStatus::TimedOut,
                ..
            })
        ));
        assert_eq!(decide(&Outcome::HandedOver, 1, 3, POLICY, NONE, 0.0), None);
    }

    /// The full cluster-outage stress run: builds claimed while the API
    /// server was down for 30 s used up their attempts on refused
    /// connections within seconds and failed. Attempts that never reached
    /// the cluster are requeued without counting, however many, until the
    /// grace is over.
    #[test]
    fn unreachable_attempts_are_not_counted_until_the_grace_is_over() {
        let u = Outcome::Unreachable {
            message: "creating PipelineRun ns/if-1: connection refused".into(),
        };
        // The build allows a single attempt; its 7th try, 2 minutes in.
        let seventh = Unreached {
            tries: 7,
            lasted: Duration::from_secs(120),
        };
        match decide(&u, 1, 1, POLICY, seventh, 0.5) {
            Some(Finish::Requeue {
                delay,
                message,
                counted,
            }) => {
                assert!(!counted);
                // Capped well below `backoff_max`: a cluster that is back
                // is used soon.
                assert!(delay <= UNREACHABLE_BACKOFF_MAX, "{delay:?}");
                assert!(delay >= UNREACHABLE_BACKOFF_MAX / 2, "{delay:?}");
                assert!(message.contains("not counted"), "{message}");
                assert!(message.contains("connection refused"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let first = Unreached {
            tries: 1,
            lasted: Duration::from_millis(300),
        };
        assert!(matches!(
            decide(&u, 3, 3, POLICY, first, 0.0),
            Some(Finish::Requeue { delay, counted: false, .. }) if delay == Duration::from_secs(1)
        ));
        let over = Unreached {
            tries: 25,
            lasted: Duration::from_secs(601),
        };
        match decide(&u, 1, 3, POLICY, over, 0.5) {
            Some(Finish::Terminal {
                status: BuildStatus::Failed,
                message: Some(m),
            }) => {
                assert!(
                    m.starts_with("gave up: the build's cluster could not be reached for 10m 1s"),
                    "{m}"
                );
                assert!(m.contains("connection refused"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
