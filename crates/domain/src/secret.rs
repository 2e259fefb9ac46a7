use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A secret value (token, password, private key, kubeconfig). It never prints:
/// `Debug` and `Display` show `[redacted]`, so it cannot leak through a log line
/// or an error message by accident. Read it with [`Secret::expose`].
///
/// Held by `secrecy::SecretString`, so the memory is zeroized when the value
/// is dropped; equality compares in constant time (`subtle`).
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The plain value, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn compares_by_value_and_clones_independently() {
        let s = Secret::new("hunter2");
        let copy = s.clone();
        drop(s);
        assert_eq!(copy.expose(), "hunter2");
        assert_eq!(copy, Secret::new(String::from("hunter2")));
        assert_ne!(copy, Secret::new("hunter3"));
        assert_ne!(copy, Secret::new("hunter"));
        assert!(Secret::default().is_empty());
        assert!(!copy.is_empty());
    }
}
