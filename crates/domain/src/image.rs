//! Image references: where a build pushes its result, `registry/repo[:tag][@digest]`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 512 characters")]
    TooLong,
    #[error(
        "must start with a registry host (e.g. registry.example.com/team/app:tag or 127.0.0.1:5000/app)"
    )]
    MissingRegistry,
    #[error("registry host {0:?} is not a valid host[:port]")]
    BadRegistry(String),
    #[error(
        "repository path component {0:?} must be lowercase letters and digits separated by '.', '_', '__' or '-'"
    )]
    BadPathComponent(String),
    #[error(
        "tag {0:?} must be 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'"
    )]
    BadTag(String),
    #[error("digest {0:?} must be sha256: followed by 64 lowercase hex characters")]
    BadDigest(String),
    #[error("a repository without a tag is expected here")]
    UnexpectedTag,
}

/// A validated image reference with an explicit registry host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, ImageRefError> {
        if input.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if input.len() > 512 {
            return Err(ImageRefError::TooLong);
        }
        let (name_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (input, None),
        };
        if let Some(d) = digest {
            let valid = d.strip_prefix("sha256:").is_some_and(|hex| {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !valid {
                return Err(ImageRefError::BadDigest(d.to_owned()));
            }
        }
        let (registry, path) = name_tag
            .split_once('/')
            .ok_or(ImageRefError::MissingRegistry)?;
        if !looks_like_registry(registry) {
            return Err(ImageRefError::MissingRegistry);
        }
        if !is_host_port(registry) {
            return Err(ImageRefError::BadRegistry(registry.to_owned()));
        }
        // A ':' after the last '/' starts the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(ImageRefError::BadPathComponent(String::new()));
        }
        for component in repository.split('/') {
            if !is_path_component(component) {
                return Err(ImageRefError::BadPathComponent(component.to_owned()));
            }
        }
        if let Some(t) = tag
            && !is_tag(t)
        {
            return Err(ImageRefError::BadTag(t.to_owned()));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// A repository without tag or digest (`registry/path`), e.g. a cache repo
    /// or kaniko's `registry_repo`.
    pub fn parse_repository(input: &str) -> Result<Self, ImageRefError> {
        let image = Self::parse(input)?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(ImageRefError::UnexpectedTag);
        }
        Ok(image)
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag; `latest` when none was given (and no digest pins the image).
    pub fn tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component is a registry if it has a '.' or ':'
/// or is `localhost`.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `host[:port]` where host is DNS-like (any case) or an IPv4 address.
pub fn is_host_port(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    // Digits only, no leading zero: `u16`'s parser also takes "+80" and "080".
    if let Some(p) = port
        && (p.is_empty()
            || p.starts_with('0')
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u16>().is_err())
    {
        return false;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let bytes = s.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_alnum(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_tag(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        let i = ImageRef::parse("registry.example.com/team/app:1.2").unwrap();
        assert_eq!(i.registry(), "registry.example.com");
        assert_eq!(i.repository(), "team/app");
        assert_eq!(i.tag(), Some("1.2"));
        let local = ImageRef::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(local.registry(), "127.0.0.1:5000");
        assert_eq!(local.tag(), Some("latest"));
        let digest = format!("ghcr.io/o/r@sha256:{}", "a".repeat(64));
        assert_eq!(ImageRef::parse(&digest).unwrap().to_string(), digest);
        assert_eq!(
            ImageRef::parse("localhost/app:x").unwrap().registry(),
            "localhost"
        );
    }

    #[test]
    fn rejections() {
        assert_eq!(ImageRef::parse(""), Err(ImageRefError::Empty));
        assert_eq!(
            ImageRef::parse("app:1"),
            Err(ImageRefError::MissingRegistry)
        );
        assert_eq!(
            ImageRef::parse("library/app"),
            Err(ImageRefError::MissingRegistry)
        );
        assert!(matches!(
            ImageRef::parse("r.io/App:1"),
            Err(ImageRefError::BadPathComponent(_))
        ));
        assert!(matches!(
            ImageRef::parse("r.io/app:-x"),
            Err(ImageRefError::BadTag(_))
        ));
        assert!(matches!(
            ImageRef::parse("r.io/app@sha256:zz"),
            Err(ImageRefError::BadDigest(_))
        ));
        assert!(matches!(
            ImageRef::parse("r.io:99999/app"),
            Err(ImageRefError::BadRegistry(_))
        ));
        assert!(matches!(
            ImageRef::parse("r.io/a//b"),
            Err(ImageRefError::BadPathComponent(_))
        ));
        assert_eq!(
            ImageRef::parse_repository("r.io/app:1"),
            Err(ImageRefError::UnexpectedTag)
        );
        assert!(ImageRef::parse_repository("r.io/app").is_ok());
    }

    proptest! {
        #[test]
        fn well_formed_references_round_trip(
            host in "[a-z][a-z0-9]{0,8}\\.[a-z]{2,4}",
            port in prop::option::of(1u16..),
            repo in "[a-z0-9]{1,8}((\\.|_|__|-)[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        ) {
            let registry = match port { Some(p) => format!("{host}:{p}"), None => host };
            let text = match &tag { Some(t) => format!("{registry}/{repo}:{t}"), None => format!("{registry}/{repo}") };
            let parsed = ImageRef::parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
            prop_assert_eq!(parsed.registry(), registry.as_str());
            prop_assert_eq!(parsed.repository(), repo.as_str());
        }

        #[test]
        fn uppercase_repositories_are_rejected(repo in "[a-z]{0,4}[A-Z][a-z]{0,4}") {
            let text = format!("r.io/{repo}:1");
            prop_assert!(ImageRef::parse(&text).is_err());
        }
    }
}
