//! Builds: methods, where they run, and the status state machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Generates `as_str`, `FromStr`, `Display` and an `ALL` list for a plain enum
/// whose database and API spelling is fixed.
macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::build::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::build::UnknownVariant {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {}", expected.join(", "))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BuildMethod {
    Docker,
    Buildx,
    Kaniko,
    Packer,
}
string_enum!(BuildMethod { Docker => "docker", Buildx => "buildx", Kaniko => "kaniko", Packer => "packer" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum InfrastructureType {
    Kubernetes,
    Local,
}
string_enum!(InfrastructureType { Kubernetes => "kubernetes", Local => "local" });

/// Which executor ran (or runs) an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Tekton,
    Local,
    /// The in-memory executor used by dispatcher tests and benchmarks.
    Test,
}
string_enum!(ExecutorKind { Tekton => "tekton", Local => "local", Test => "test" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}
string_enum!(BuildStatus {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
});

impl BuildStatus {
    /// Terminal states are final: nothing moves a build out of them except a
    /// retry, which is a new attempt rather than a transition.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// Whether `self → next` is a legal transition of the state machine
    /// `queued → running → succeeded | failed | cancelled | timed_out`.
    /// A queued build may also end directly (cancelled at once, or failed
    /// before it ever ran, e.g. misconfiguration found at claim time), and a
    /// running build may go back to queued when its attempt hit a transient
    /// infrastructure error and is requeued.
    pub fn can_transition_to(self, next: BuildStatus) -> bool {
        use BuildStatus::*;
        matches!(
            (self, next),
            (Queued, Running | Cancelled | Failed | TimedOut)
                | (Running, Queued | Succeeded | Failed | Cancelled | TimedOut)
        )
    }

    /// Retry starts a new attempt of a build that ended without success.
    pub fn can_retry(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled | Self::TimedOut)
    }
}

/// Per-method build settings. Which fields matter depends on the method;
/// validation lives with the method rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Path of the Dockerfile inside the context (docker, buildx, kaniko).
    pub dockerfile: Option<String>,
    /// Build context directory relative to the repository root.
    pub context: Option<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `os/arch[/variant]` platforms (buildx).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Target stage of a multi-stage Dockerfile.
    pub target: Option<String>,
    #[serde(default)]
    pub cache_enabled: bool,
    /// Where layer cache is kept (e.g. a registry repository), if any.
    pub cache_repo: Option<String>,
    /// Image labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Packer template path inside the repository (packer).
    pub packer_template: Option<String>,
    #[serde(default)]
    pub packer_vars: BTreeMap<String, String>,
    /// Free-form extra settings, e.g. `registry_repo` for kaniko.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_text() {
        for s in BuildStatus::ALL {
            assert_eq!(s.as_str().parse::<BuildStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn unknown_text_names_the_choices() {
        let err = "podman".parse::<BuildMethod>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown BuildMethod \"podman\"; expected one of: docker, buildx, kaniko, packer"
        );
    }

    #[test]
    fn terminal_states_are_final() {
        for from in BuildStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in BuildStatus::ALL {
                assert!(!from.can_transition_to(*to), "{from} -> {to}");
            }
            assert!(from.can_retry() || *from == BuildStatus::Succeeded);
        }
    }

    #[test]
    fn queued_can_be_cancelled_at_once_but_not_succeed() {
        assert!(BuildStatus::Queued.can_transition_to(BuildStatus::Cancelled));
        assert!(!BuildStatus::Queued.can_transition_to(BuildStatus::Succeeded));
        assert!(!BuildStatus::Succeeded.can_retry());
    }
}
