//! Git sources: the repository URL and the ref (branch, tag or commit).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitUrlError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 2048 characters")]
    TooLong,
    #[error("must not contain whitespace or control characters")]
    BadCharacters,
    #[error(
        "must be an https://, http://, ssh://, git:// or file:// URL, or scp-like user@host:path"
    )]
    UnsupportedScheme,
    #[error("must name a host")]
    MissingHost,
    #[error("must name a repository path")]
    MissingPath,
    #[error("must not embed credentials; use the project's git credential instead")]
    EmbeddedPassword,
    #[error(
        "the user, host and port must not begin with '-' (git and ssh would read them as options)"
    )]
    LeadingDash,
    #[error(
        "the user may hold only letters, digits, '_', '.' and '-', and must not begin with '.'"
    )]
    BadUser,
    #[error(
        "the host must be a DNS name or IPv4 address: dot-separated labels of letters, digits and \
         inner '-', 63 characters at most each"
    )]
    BadHost,
    #[error("the port must be a number from 1 to 65535 without leading zeros")]
    BadPort,
    #[error(
        "the path must be '/'-separated segments of letters, digits and '.', '_', '~', '-' \
         (no empty, '.' or '..' segment, no trailing '/')"
    )]
    BadPath,
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]*`: the user of `ssh://user@host/…` or
/// `user@host:path`.
fn check_user(user: &str) -> Result<(), GitUrlError> {
    let mut bytes = user.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        Ok(())
    } else {
        Err(GitUrlError::BadUser)
    }
}

/// Dot-separated DNS labels (an IPv4 address is such a name too).
fn check_host(host: &str) -> Result<(), GitUrlError> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(GitUrlError::BadHost)
    }
}

fn check_port(port: &str) -> Result<(), GitUrlError> {
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if digits && !port.starts_with('0') && port.parse::<u16>().is_ok() {
        Ok(())
    } else {
        Err(GitUrlError::BadPort)
    }
}

/// `seg(/seg)*`, each segment of unreserved URL characters and not only
/// dots: nothing git or a shell could read as more than a path.
fn check_path(path: &str) -> Result<(), GitUrlError> {
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
            && seg.bytes().any(|b| b != b'.')
    };
    if path.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(GitUrlError::BadPath)
    }
}

/// A user, host or port that begins with '-' would reach `ssh` (or git's
/// transport helpers) as an option, e.g. `-oProxyCommand=...`.
fn option_like(user_host: &str) -> bool {
    user_host
        .split(['@', ':'])
        .any(|part| part.starts_with('-'))
}

/// A git repository URL a build can clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl(String);

impl GitUrl {
    /// A URL a client sent: the safety rules and the documented grammar.
    pub fn parse(input: &str) -> Result<Self, GitUrlError> {
        Self::checked(input, true)
    }

    /// A URL read back from storage: the safety rules only (no option-like
    /// part, no whitespace or control character, no password, a known
    /// scheme, a host and a path), so URLs stored before the grammar was
    /// enforced (2026-12-06) stay readable.
    pub fn stored(input: &str) -> Result<Self, GitUrlError> {
        Self::checked(input, false)
    }

    fn checked(input: &str, grammar: bool) -> Result<Self, GitUrlError> {
        if input.is_empty() {
            return Err(GitUrlError::Empty);
        }
        if input.len() > 2048 {
            return Err(GitUrlError::TooLong);
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(GitUrlError::BadCharacters);
        }
        if input.starts_with('-') {
            return Err(GitUrlError::LeadingDash);
        }
        if let Some((scheme, rest)) = input.split_once("://") {
            match scheme {
                "https" | "http" | "ssh" | "git" => {
                    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                    if option_like(authority) {
                        return Err(GitUrlError::LeadingDash);
                    }
                    let host_port = match authority.rsplit_once('@') {
                        Some((userinfo, host)) => {
                            // A password in the URL would be stored and shown in
                            // plain text; secrets go in the encrypted credential.
                            if userinfo.contains(':') {
                                return Err(GitUrlError::EmbeddedPassword);
                            }
                            if grammar {
                                check_user(userinfo)?;
                            }
                            host
                        }
                        None => authority,
                    };
                    if host_port.is_empty() || host_port.starts_with(':') {
                        return Err(GitUrlError::MissingHost);
                    }
                    if path.trim_matches('/').is_empty() {
                        return Err(GitUrlError::MissingPath);
                    }
                    if grammar {
                        let (host, port) = match host_port.split_once(':') {
                            Some((host, port)) => (host, Some(port)),
                            None => (host_port, None),
                        };
                        check_host(host)?;
                        port.map(check_port).transpose()?;
                        check_path(path)?;
                    }
                }
                "file" => {
                    if !rest.starts_with('/') || rest.trim_matches('/').is_empty() {
                        return Err(GitUrlError::MissingPath);
                    }
                    if grammar {
                        check_path(&rest[1..])?;
                    }
                }
                _ => return Err(GitUrlError::UnsupportedScheme),
            }
            return Ok(Self(input.to_owned()));
        }
        // scp-like: user@host:path (git@github.com:org/repo.git)
        match input.split_once(':') {
            Some((user_host, path)) if user_host.contains('@') => {
                if option_like(user_host) {
                    return Err(GitUrlError::LeadingDash);
                }
                let (user, host) = user_host.rsplit_once('@').unwrap_or(("", ""));
                if host.is_empty() {
                    return Err(GitUrlError::MissingHost);
                }
                if path.trim_matches('/').is_empty() {
                    return Err(GitUrlError::MissingPath);
                }
                if grammar {
                    check_user(user)?;
                    check_host(host)?;
                    check_path(path)?;
                }
                Ok(Self(input.to_owned()))
            }
            _ => Err(GitUrlError::UnsupportedScheme),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitRefError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most 255 characters")]
    TooLong,
    #[error("is not a valid git ref: {0}")]
    Invalid(&'static str),
}

/// A branch, tag or commit, following `git check-ref-format` rules (so it is
/// also safe to pass as a single command-line argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(input: &str) -> Result<Self, GitRefError> {
        use GitRefError::Invalid;
        if input.is_empty() {
            return Err(GitRefError::Empty);
        }
        if input.len() > 255 {
            return Err(GitRefError::TooLong);
        }
        if input
            .chars()
            .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
        {
            return Err(Invalid(
                "contains a space, control character or one of ~ ^ : ? * [ \\",
            ));
        }
        if input.starts_with('-') {
            return Err(Invalid("must not start with '-'"));
        }
        if input.starts_with('/') || input.ends_with('/') || input.contains("//") {
            return Err(Invalid("has an empty path component"));
        }
        if input.contains("..") {
            return Err(Invalid("must not contain '..'"));
        }
        if input.contains("@{") || input == "@" {
            return Err(Invalid("must not contain '@{' or be '@'"));
        }
        if input.ends_with('.') || input.ends_with(".lock") {
            return Err(Invalid("must not end with '.' or '.lock'"));
        }
        if input.split('/').any(|part| part.starts_with('.')) {
            return Err(Invalid("a component must not start with '.'"));
        }
        Ok(Self(input.to_owned()))
    }

    /// Whether the ref looks like a full commit id rather than a name.
    pub fn is_commit(&self) -> bool {
        self.0.len() == 40 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls() {
        for ok in [
            "https://github.com/org/repo.git",
            "http://127.0.0.1:3000/a/b",
            "ssh://git@host/org/repo",
            "git@github.com:org/repo.git",
            "file:///srv/git/repo",
        ] {
            assert!(GitUrl::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(GitUrl::parse(""), Err(GitUrlError::Empty));
        assert_eq!(
            GitUrl::parse("ftp://host/repo"),
            Err(GitUrlError::UnsupportedScheme)
        );
        assert_eq!(GitUrl::parse("not a url"), Err(GitUrlError::BadCharacters));
        assert_eq!(GitUrl::parse("repo"), Err(GitUrlError::UnsupportedScheme));
        assert_eq!(
            GitUrl::parse("https://github.com/"),
            Err(GitUrlError::MissingPath)
        );
        assert_eq!(
            GitUrl::parse("https://u:pw@github.com/o/r"),
            Err(GitUrlError::EmbeddedPassword)
        );
    }

    /// The grammar the OpenAPI document states (`git_url`'s pattern) is the
    /// one enforced: a fuzzer's `…/repo*` was once stored.
    #[test]
    fn urls_outside_the_documented_grammar_are_refused() {
        for (bad, why) in [
            ("https://host/org/repo*", GitUrlError::BadPath),
            ("https://host/org//repo", GitUrlError::BadPath),
            ("https://host/org/repo/", GitUrlError::BadPath),
            ("https://host/org/../repo", GitUrlError::BadPath),
            ("https://host/a%20b", GitUrlError::BadPath),
            ("file:///srv/git/$(id)", GitUrlError::BadPath),
            ("git@host:org/re;po", GitUrlError::BadPath),
            ("https://ho_st/repo", GitUrlError::BadHost),
            ("https://host./repo", GitUrlError::BadHost),
            ("https://[::1]/repo", GitUrlError::BadHost),
            ("https://host:0/repo", GitUrlError::BadPort),
            ("https://host:65536/repo", GitUrlError::BadPort),
            ("https://host:080/repo", GitUrlError::BadPort),
            ("https://host:+80/repo", GitUrlError::BadPort),
            ("ssh://gi$t@host/repo", GitUrlError::BadUser),
            (".git@host:repo", GitUrlError::BadUser),
        ] {
            assert_eq!(GitUrl::parse(bad), Err(why), "{bad}");
        }
        // Stored before the grammar: still readable, still safe.
        assert!(GitUrl::stored("https://host/org/repo*").is_ok());
        assert!(GitUrl::stored("https://host:080/org/repo/").is_ok());
        assert_eq!(
            GitUrl::stored("ssh://-oProxyCommand=x/repo"),
            Err(GitUrlError::LeadingDash)
        );
        for ok in [
            "https://host:65535/org/repo.git",
            "ssh://my-user.name@10.0.0.1:2222/srv/repo",
            "https://host/.config~/x_y-z",
        ] {
            assert!(GitUrl::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn option_like_user_host_or_port_is_refused() {
        for bad in [
            "ssh://-oProxyCommand=x/repo",
            "ssh://git@-oProxyCommand=x/repo",
            "ssh://-u@host/repo",
            "ssh://host:-p/repo",
            "https://-host/repo",
            "git://-host/repo",
            "-oProxyCommand=x:repo",
            "git@-x:repo",
            "-git@host:repo",
        ] {
            assert_eq!(GitUrl::parse(bad), Err(GitUrlError::LeadingDash), "{bad}");
        }
        // A '-' inside a name, or at the start of the path, is no option.
        for ok in [
            "ssh://git@my-host/repo",
            "git@my-host:-repo",
            "https://host/-repo",
            "ssh://host:22/repo",
        ] {
            assert!(GitUrl::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refs() {
        for ok in [
            "main",
            "feature/x-1",
            "v1.2.3",
            "refs/tags/v1",
            &"a".repeat(40),
        ] {
            assert!(GitRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a..b", "-rf", "a b", "x~1", "a:b", "end/", "/start", "x.lock", "a@{1}", ".hidden",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            GitRef::parse("0123456789abcdef0123456789abcdef01234567")
                .unwrap()
                .is_commit()
        );
        assert!(!GitRef::parse("main").unwrap().is_commit());
    }

    proptest! {
        #[test]
        fn branch_like_refs_are_accepted(s in "[a-z][a-z0-9_-]{0,20}(/[a-z][a-z0-9_-]{0,20}){0,3}") {
            let parsed = GitRef::parse(&s).unwrap();
            prop_assert_eq!(parsed.as_str(), s.as_str());
        }

        #[test]
        fn refs_with_forbidden_characters_are_rejected(
            a in "[a-z]{1,8}",
            bad in prop::sample::select(vec![" ", "~", "^", ":", "?", "*", "[", "\\", ".."]),
            b in "[a-z]{1,8}",
        ) {
            let input = format!("{a}{bad}{b}");
            prop_assert!(GitRef::parse(&input).is_err());
        }

        #[test]
        fn option_like_hosts_and_users_are_refused(
            user in "-[a-zA-Z0-9=_-]{0,12}",
            host in "[a-z]{1,10}(\\.[a-z]{2,5}){0,2}",
            scheme in prop::sample::select(vec!["ssh", "https", "http", "git"]),
            path in "[a-z0-9_-]{1,10}",
        ) {
            // Dash-led host, dash-led user, in URL and scp-like form.
            for url in [
                format!("{scheme}://{user}/{path}"),
                format!("{scheme}://git@{user}/{path}"),
                format!("{scheme}://{user}@{host}/{path}"),
                format!("{user}@{host}:{path}"),
                format!("git@{user}:{path}"),
                format!("{user}:{path}"),
            ] {
                prop_assert_eq!(GitUrl::parse(&url), Err(GitUrlError::LeadingDash), "{}", url);
            }
        }

        #[test]
        fn https_urls_with_a_path_are_accepted(host in "[a-z]{1,10}(\\.[a-z]{2,5}){1,2}", path in "[a-z0-9_-]{1,10}(/[a-z0-9_.-]{1,10}){0,2}") {
            // A segment of dots only ("." or "..") is refused by design.
            prop_assume!(path.split('/').all(|seg| seg.bytes().any(|b| b != b'.')));
            let url = format!("https://{host}/{path}");
            prop_assert!(GitUrl::parse(&url).is_ok());
        }
    }
}
