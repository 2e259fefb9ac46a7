//! Builds: methods, where they run, and the status state machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray, VariantNames};

// The text enums below (and `ProviderType`, `ProviderStatus`, `Role`) get
// `Display`, `FromStr`, `AsRef<str>` and their variant lists from strum, with
// `serialize_all` spelling them as serde does; `as_str` and `ALL` are the
// names the rest of the workspace uses for the strum impls.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of: {}", expected.join(", "))]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl UnknownVariant {
    /// `value` is no spelling of `T`. strum's `parse_err_fn` for the text
    /// enums: `kind` is the type's own name (it names the field in
    /// validation messages), `expected` its spellings in declaration order.
    pub fn of<T: VariantNames>(value: &str) -> Self {
        let path = std::any::type_name::<T>();
        Self {
            kind: path.rsplit("::").next().unwrap_or(path),
            value: value.to_owned(),
            expected: T::VARIANTS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum BuildMethod {
    Docker,
    Buildx,
    Kaniko,
    Packer,
}

impl BuildMethod {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum InfrastructureType {
    Kubernetes,
    Local,
}

impl InfrastructureType {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The type of provider a build of this infrastructure runs on.
    pub fn provider_type(self) -> crate::ProviderType {
        match self {
            InfrastructureType::Kubernetes => crate::ProviderType::Kubernetes,
            InfrastructureType::Local => crate::ProviderType::Local,
        }
    }
}

/// Which executor ran (or runs) an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum ExecutorKind {
    Tekton,
    Local,
    /// The in-memory executor used by dispatcher tests and benchmarks.
    Test,
}

impl ExecutorKind {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum BuildStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl BuildStatus {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Terminal states end an attempt: nothing moves a build out of them
    /// except a manual retry ([`Transition::Retry`]), which starts a new attempt.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// Whether `self → next` is a move of the state machine, i.e. of some
    /// [`Transition`]: `queued → running → succeeded | failed | cancelled |
    /// timed_out`; a queued build may also end directly (cancelled at once, or
    /// failed before it ever ran, e.g. misconfiguration found at claim time);
    /// a running build goes back to queued when its attempt hit a transient
    /// infrastructure error; a failed, cancelled or timed-out build is queued
    /// again by a manual retry.
    pub fn can_transition_to(self, next: BuildStatus) -> bool {
        Transition::ALL
            .iter()
            .any(|t| t.to() == next && t.from().contains(&self))
    }

    /// Retry starts a new attempt of a build that ended without success.
    pub fn can_retry(self) -> bool {
        Transition::Retry.from().contains(&self)
    }
}

/// Every way a build's status changes, with the states it may start from.
/// The store writes a status only through one of these: the `from` set is
/// bound into the statement's guard and `to` is the value written, so this
/// table is the single source of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A dispatcher starts an attempt: queued → running.
    Claim,
    /// Claim-time failure (no executor can run it): queued → failed.
    Reject,
    /// Cancel before it started (API, or the dispatcher's sweep of cancel
    /// requests): queued → cancelled.
    CancelQueued,
    /// An attempt ended with this terminal status: running → it.
    Finish(BuildStatus),
    /// Transient failure, to be claimed again after a backoff: running → queued.
    Requeue,
    /// Manual retry: failed | cancelled | timed_out → queued.
    Retry,
}

impl Transition {
    pub const ALL: &'static [Transition] = &[
        Transition::Claim,
        Transition::Reject,
        Transition::CancelQueued,
        Transition::Finish(BuildStatus::Succeeded),
        Transition::Finish(BuildStatus::Failed),
        Transition::Finish(BuildStatus::Cancelled),
        Transition::Finish(BuildStatus::TimedOut),
        Transition::Requeue,
        Transition::Retry,
    ];

    /// The states this transition may start from (empty for a `Finish` to a
    /// non-terminal status: that is no transition at all).
    pub fn from(self) -> &'static [BuildStatus] {
        use BuildStatus::*;
        match self {
            Self::Claim | Self::Reject | Self::CancelQueued => &[Queued],
            Self::Finish(to) if to.is_terminal() => &[Running],
            Self::Finish(_) => &[],
            Self::Requeue => &[Running],
            Self::Retry => &[Failed, Cancelled, TimedOut],
        }
    }

    /// The status it writes.
    pub fn to(self) -> BuildStatus {
        match self {
            Self::Claim => BuildStatus::Running,
            Self::Reject => BuildStatus::Failed,
            Self::CancelQueued => BuildStatus::Cancelled,
            Self::Finish(to) => to,
            Self::Requeue | Self::Retry => BuildStatus::Queued,
        }
    }

    /// Whether a build in `status` may take this transition.
    pub fn allows(self, status: BuildStatus) -> bool {
        self.from().contains(&status)
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

    /// strum's and serde's spellings agree, and parsing takes them back.
    fn spells_one_way<T>(all: &[T], as_str: fn(&T) -> &'static str)
    where
        T: std::str::FromStr<Err = UnknownVariant> + Serialize + std::fmt::Display,
        T: AsRef<str> + PartialEq + std::fmt::Debug,
    {
        for v in all {
            assert_eq!(serde_json::to_value(v).unwrap(), as_str(v));
            assert_eq!(v.to_string(), as_str(v));
            assert_eq!(v.as_ref(), as_str(v));
            assert_eq!(as_str(v).parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn every_text_enum_spells_one_way() {
        spells_one_way(BuildMethod::ALL, |v| v.as_str());
        spells_one_way(InfrastructureType::ALL, |v| v.as_str());
        spells_one_way(ExecutorKind::ALL, |v| v.as_str());
        spells_one_way(BuildStatus::ALL, |v| v.as_str());
        spells_one_way(crate::ProviderType::ALL, |v| v.as_str());
        spells_one_way(crate::ProviderStatus::ALL, |v| v.as_str());
        spells_one_way(crate::Role::ALL, |v| v.as_str());
        assert_eq!(BuildStatus::TimedOut.as_str(), "timed_out");
        assert_eq!(BuildStatus::ALL.len(), 6);
    }

    #[test]
    fn unknown_text_names_the_type_and_the_choices() {
        let err = "Docker".parse::<BuildMethod>().unwrap_err();
        assert_eq!(err.kind, "BuildMethod");
        assert_eq!(err.value, "Docker");
        let err = "owner".parse::<crate::Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown Role \"owner\"; expected one of: viewer, developer, admin"
        );
        let err = "".parse::<crate::ProviderType>().unwrap_err();
        assert_eq!(
            (err.kind, err.expected),
            ("ProviderType", &["kubernetes", "local"][..])
        );
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
    fn terminal_states_are_final_except_for_a_retry() {
        for from in BuildStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in BuildStatus::ALL {
                // The one way out of a terminal state is a manual retry.
                let by_retry = *to == BuildStatus::Queued && from.can_retry();
                assert_eq!(from.can_transition_to(*to), by_retry, "{from} -> {to}");
            }
            assert!(from.can_retry() || *from == BuildStatus::Succeeded);
        }
    }

    #[test]
    fn the_machine_is_exactly_the_documented_moves() {
        use BuildStatus::*;
        let mut moves: Vec<(BuildStatus, BuildStatus)> = BuildStatus::ALL
            .iter()
            .flat_map(|f| BuildStatus::ALL.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.can_transition_to(*t))
            .collect();
        moves.sort_by_key(|(f, t)| (f.as_str(), t.as_str()));
        let mut want = vec![
            (Queued, Running),
            (Queued, Failed),
            (Queued, Cancelled),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
            (Running, Queued),
            (Failed, Queued),
            (Cancelled, Queued),
            (TimedOut, Queued),
        ];
        want.sort_by_key(|(f, t)| (f.as_str(), t.as_str()));
        assert_eq!(moves, want);
        // No transition writes the state it starts from, and a finish to a
        // non-terminal status is none at all.
        for t in Transition::ALL {
            assert!(!t.from().is_empty() && !t.allows(t.to()), "{t:?}");
        }
        assert!(Transition::Finish(Queued).from().is_empty());
        assert!(Transition::Finish(Running).from().is_empty());
    }

    #[test]
    fn queued_can_be_cancelled_at_once_but_not_succeed() {
        assert!(BuildStatus::Queued.can_transition_to(BuildStatus::Cancelled));
        assert!(!BuildStatus::Queued.can_transition_to(BuildStatus::Succeeded));
        assert!(!BuildStatus::Succeeded.can_retry());
    }
}
