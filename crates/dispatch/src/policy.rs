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
}

/// `None` means the execution was handed over: release the lease, record nothing.
pub fn decide(
    outcome: &Outcome,
    attempt: i32,
    build_max_attempts: i32,
    policy: RetryPolicy,
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
                })
            } else {
                terminal(
                    BuildStatus::Failed,
                    Some(&format!("gave up after {attempt} attempts: {message}")),
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
        match decide(&t, 1, 5, POLICY, 0.5) {
            Some(Finish::Requeue { delay, message }) => {
                assert_eq!(delay, Duration::from_millis(1500));
                assert!(message.contains("cluster unreachable"));
            }
            other => panic!("{other:?}"),
        }
        // the build allows 5, the dispatcher caps at 3
        match decide(&t, 3, 5, POLICY, 0.5) {
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
            decide(&t, 1, 1, POLICY, 0.5),
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
            decide(&f, 1, 3, POLICY, 0.0),
            Some(Finish::Terminal {
                status: BuildStatus::Failed,
                message: Some("missing Task".into())
            })
        );
        assert!(matches!(
            decide(&Outcome::Succeeded, 1, 3, POLICY, 0.0),
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
                0.0
            ),
            Some(Finish::Terminal {
                status: BuildStatus::TimedOut,
                ..
            })
        ));
        assert_eq!(decide(&Outcome::HandedOver, 1, 3, POLICY, 0.0), None);
    }
}
