//! Names of tenants, projects, credentials and providers: short, lowercase,
//! DNS-label-like, so they can appear in Kubernetes object names and URLs.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error(
        "must contain only lowercase letters, digits and '-', and start and end with a letter or digit"
    )]
    BadCharacters,
}

/// A validated resource name (`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, ≤ 63 chars).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceName(String);

impl ResourceName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(input: &str) -> Result<Self, NameError> {
        if input.is_empty() {
            return Err(NameError::Empty);
        }
        if input.len() > Self::MAX_LEN {
            return Err(NameError::TooLong { max: Self::MAX_LEN });
        }
        if !is_dns_label(input) {
            return Err(NameError::BadCharacters);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 1123 label: lowercase alphanumerics and '-', alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A free-text display name: 1..=200 characters, no control characters.
pub fn check_display_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().count() > 200 {
        return Err("must be at most 200 characters".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_rejects_examples() {
        assert!(ResourceName::parse("team-a").is_ok());
        assert!(ResourceName::parse("a1").is_ok());
        assert_eq!(ResourceName::parse(""), Err(NameError::Empty));
        assert_eq!(ResourceName::parse("Team"), Err(NameError::BadCharacters));
        assert_eq!(ResourceName::parse("-a"), Err(NameError::BadCharacters));
        assert_eq!(ResourceName::parse("a_b"), Err(NameError::BadCharacters));
        assert!(matches!(
            ResourceName::parse(&"a".repeat(64)),
            Err(NameError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let parsed = ResourceName::parse(&s).unwrap();
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }

        #[test]
        fn names_with_other_characters_are_rejected(s in "[a-z]{0,5}[A-Z_ ./@][a-z]{0,5}") {
            prop_assert!(ResourceName::parse(&s).is_err());
        }
    }
}
