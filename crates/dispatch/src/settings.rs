//! Dispatcher settings: one typed struct, filled from `IF_*` environment
//! variables or flags (clap), or built directly in tests.

use std::time::Duration;

use crate::select::{TektonPolicy, WhenTektonDisabled};

/// How a dispatcher runs; shown in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatcherMode {
    /// Inside `imagefactory serve`.
    Embedded,
    /// `imagefactory dispatcher`.
    Standalone,
}

impl DispatcherMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Standalone => "standalone",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DispatcherSettings {
    /// Claim cycle when no notification arrives (fallback for missed NOTIFYs).
    #[arg(long = "dispatcher-poll-interval", env = "IF_DISPATCHER_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// At most this many executions followed by this dispatcher at once.
    #[arg(
        long = "dispatcher-max-in-flight",
        env = "IF_DISPATCHER_MAX_IN_FLIGHT",
        default_value_t = 64
    )]
    pub max_in_flight: usize,
    /// Builds claimed per claim transaction.
    #[arg(
        long = "dispatcher-claim-batch",
        env = "IF_DISPATCHER_CLAIM_BATCH",
        default_value_t = 32
    )]
    pub claim_batch: usize,
    /// How long a claim stays ours without renewal; a dead dispatcher's builds
    /// are taken over after this.
    #[arg(long = "dispatcher-lease", env = "IF_DISPATCHER_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Lease renewal and heartbeat-row period; keep it well below `lease`.
    #[arg(long = "dispatcher-heartbeat-interval", env = "IF_DISPATCHER_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Cap on attempts per build for transient errors (the build's own
    /// `max_attempts` applies too; the lower wins).
    #[arg(
        long = "dispatcher-max-attempts",
        env = "IF_DISPATCHER_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, with jitter.
    #[arg(long = "dispatcher-backoff-base", env = "IF_DISPATCHER_BACKOFF_BASE", default_value = "5s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    #[arg(long = "dispatcher-backoff-max", env = "IF_DISPATCHER_BACKOFF_MAX", default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// How long attempts that could not reach their cluster (nothing of
    /// them created on it) are retried without counting toward
    /// `max_attempts`, from the first of them in a row; then the build
    /// fails saying the cluster could not be reached.
    #[arg(long = "dispatcher-unreachable-grace", env = "IF_DISPATCHER_UNREACHABLE_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub unreachable_grace: Duration,
    /// On shutdown, how long in-flight executions get to hand over before
    /// their leases are released regardless.
    #[arg(long = "dispatcher-shutdown-grace", env = "IF_DISPATCHER_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After a cancel or timeout, how long the executor gets to confirm before
    /// the dispatcher records the end itself.
    #[arg(long = "dispatcher-stop-grace", env = "IF_DISPATCHER_STOP_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub stop_grace: Duration,
    /// Run Kubernetes builds through Tekton. When false (or false on a
    /// build's provider), `tekton_disabled` says what they do instead.
    #[arg(long = "build-tekton-enabled", env = "IF_BUILD_TEKTON_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub tekton_enabled: bool,
    /// What a Kubernetes build does when Tekton is disabled: `local` runs it
    /// on the local executor (tenants with allow_local_builds; others fail
    /// saying so), `fail` fails it (builds never run on dispatcher hosts).
    #[arg(
        long = "build-tekton-disabled",
        env = "IF_BUILD_TEKTON_DISABLED",
        value_enum,
        default_value = "local"
    )]
    pub tekton_disabled: WhenTektonDisabled,
    /// A global cluster is configured (`IF_BUILD_TEKTON_KUBECONFIG` or
    /// `IF_BUILD_TEKTON_IN_CLUSTER`), so a Kubernetes build without a
    /// provider runs there. Set by the binary from the Tekton settings.
    #[arg(skip)]
    pub global_cluster: bool,
}

impl DispatcherSettings {
    /// The Tekton part of these settings, as executor selection needs it.
    pub fn tekton_policy(&self) -> TektonPolicy {
        TektonPolicy {
            enabled: self.tekton_enabled,
            when_disabled: self.tekton_disabled,
            global_cluster: self.global_cluster,
        }
    }
}

impl Default for DispatcherSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            max_in_flight: 64,
            claim_batch: 32,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            max_attempts: 3,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            unreachable_grace: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            stop_grace: Duration::from_secs(30),
            tekton_enabled: true,
            tekton_disabled: WhenTektonDisabled::Local,
            global_cluster: false,
        }
    }
}

/// `250ms`, `2s`, `5m`, `1h30m` (humantime's units and spellings), or a bare
/// number of seconds (what the settings took before units, still accepted).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let invalid = |why: String| format!("invalid duration {text:?}: {why}");
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return t
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| invalid("expected e.g. 250ms, 2s, 5m, 1h".into()));
    }
    humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
            invalid(format!("unknown unit {unit:?} (use e.g. ms, s, m or h)"))
        }
        e => invalid(format!("{e}; expected e.g. 250ms, 2s, 5m, 1h")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_take_humantime_spellings_and_bare_seconds() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration(" 0.25 ").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("2 min").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("").unwrap_err().contains("invalid duration"));
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn out_of_range_durations_are_errors_not_panics() {
        // The hand-written parser handed 1e20 s to `Duration::from_secs_f64`,
        // which panics; now it is a clear error.
        let err = parse_duration("99999999999999999999").unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
        let err = parse_duration("99999999999999999999s").unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(
            parse_duration("5 fortnights")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("fast")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: DispatcherSettings,
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from([
            "x",
            "--dispatcher-poll-interval",
            "100ms",
            "--dispatcher-max-in-flight",
            "7",
            "--build-tekton-enabled",
            "false",
        ]);
        assert_eq!(cli.settings.poll_interval, Duration::from_millis(100));
        assert_eq!(cli.settings.max_in_flight, 7);
        assert!(!cli.settings.tekton_enabled);
        assert_eq!(cli.settings.lease, DispatcherSettings::default().lease);
        assert_eq!(cli.settings.tekton_disabled, WhenTektonDisabled::Local);
    }

    #[test]
    fn what_kubernetes_builds_do_without_tekton_is_local_or_fail() {
        let cli = Cli::parse_from(["x", "--build-tekton-disabled", "fail"]);
        assert_eq!(cli.settings.tekton_disabled, WhenTektonDisabled::Fail);
        let Err(e) = Cli::try_parse_from(["x", "--build-tekton-disabled", "maybe"]) else {
            panic!("an unknown value is refused");
        };
        let e = e.to_string();
        assert!(
            e.contains("--build-tekton-disabled") && e.contains("local, fail"),
            "{e}"
        );
    }
}
