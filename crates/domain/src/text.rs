//! The value types' text forms read back from owned strings (a stored row's
//! columns): `TryFrom<String>`, failing with an error that names the type,
//! the value and why, so a bad stored value is reported, never defaulted.

use serde::Serializer;

use crate::build::{BuildMethod, BuildStatus, ExecutorKind, InfrastructureType};
use crate::git::{GitRef, GitUrl};
use crate::image::ImageRef;
use crate::provider::{ProviderStatus, ProviderType};
use crate::role::Role;

/// A text that is no value of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}: {reason}")]
pub struct InvalidValue {
    /// The type's name, e.g. `ImageRef` or `BuildStatus`.
    pub kind: &'static str,
    pub value: String,
    pub reason: String,
}

/// `TryFrom<String>` through a parse of `&str`; `kind` is the type's name.
macro_rules! parsed_from_string {
    ($($ty:ident => $parse:expr),* $(,)?) => {$(
        impl TryFrom<String> for $ty {
            type Error = InvalidValue;

            fn try_from(value: String) -> Result<Self, InvalidValue> {
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                parse(&value).map_err(|reason| InvalidValue {
                    kind: stringify!($ty),
                    value,
                    reason,
                })
            }
        }
    )*};
}

/// The text enums: the reason lists the spellings (the value is named once,
/// by [`InvalidValue`]).
fn variant<T: std::str::FromStr<Err = crate::build::UnknownVariant>>(
    text: &str,
) -> Result<T, String> {
    text.parse().map_err(|e: crate::build::UnknownVariant| {
        format!("expected one of: {}", e.expected.join(", "))
    })
}

parsed_from_string! {
    ImageRef => |s| ImageRef::parse(s).map_err(|e| e.to_string()),
    // Text from storage or another trusted side: the safety rules only.
    GitUrl => |s| GitUrl::stored(s).map_err(|e| e.to_string()),
    GitRef => |s| GitRef::parse(s).map_err(|e| e.to_string()),
    BuildMethod => variant,
    BuildStatus => variant,
    InfrastructureType => variant,
    ExecutorKind => variant,
    ProviderType => variant,
    ProviderStatus => variant,
    Role => variant,
}

/// The string-backed values serialize as their text, so a response carrying
/// them has the same wire format as one carrying the string.
macro_rules! serialize_as_text {
    ($($ty:ident),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(ImageRef, GitUrl, GitRef);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_text_parses_and_bad_text_is_named() {
        let image = ImageRef::try_from("r.example/app:1".to_owned()).unwrap();
        assert_eq!(image.to_string(), "r.example/app:1");
        assert_eq!(
            BuildStatus::try_from("timed_out".to_owned()).unwrap(),
            BuildStatus::TimedOut
        );
        assert_eq!(Role::try_from("viewer".to_owned()).unwrap(), Role::Viewer);
        let err = ImageRef::try_from("app".to_owned()).unwrap_err();
        assert_eq!((err.kind, err.value.as_str()), ("ImageRef", "app"));
        assert!(
            err.to_string()
                .starts_with("\"app\" is not a valid ImageRef: must start")
        );
        let err = BuildStatus::try_from("done".to_owned()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"done\" is not a valid BuildStatus: expected one of: \
             queued, running, succeeded, failed, cancelled, timed_out"
        );
        let err = GitRef::try_from("-rf".to_owned()).unwrap_err();
        assert_eq!((err.kind, err.value.as_str()), ("GitRef", "-rf"));
        let err = GitUrl::try_from("ftp://h/r".to_owned()).unwrap_err();
        assert_eq!(err.kind, "GitUrl");
        assert!(ExecutorKind::try_from("Tekton".to_owned()).is_err());
        assert!(ProviderType::try_from("cloud".to_owned()).is_err());
        assert!(ProviderStatus::try_from("".to_owned()).is_err());
        assert!(BuildMethod::try_from("podman".to_owned()).is_err());
        assert!(InfrastructureType::try_from("vm".to_owned()).is_err());
    }

    #[test]
    fn values_serialize_as_their_text() {
        let image = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(serde_json::to_value(&image).unwrap(), "127.0.0.1:5000/app");
        let url = GitUrl::parse("git@h.example:o/r.git").unwrap();
        assert_eq!(serde_json::to_value(&url).unwrap(), "git@h.example:o/r.git");
        let r = GitRef::parse("feature/x").unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), "feature/x");
    }
}
