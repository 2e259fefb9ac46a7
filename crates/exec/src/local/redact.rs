//! Keeping secrets out of log lines and messages.

/// Replaces the user-info part of every `scheme://user:pass@host` in `text`
/// with `***`, so a URL carrying credentials can be shown.
pub(crate) fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Removes known secret values (and URL credentials) from text before it is
/// logged or put into a message.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = mask_userinfo(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials_in_urls_only() {
        assert_eq!(
            mask_userinfo("cloning https://bob:hunter2@git.example.com/a.git now"),
            "cloning https://***@git.example.com/a.git now"
        );
        assert_eq!(
            mask_userinfo("https://git.example.com/a.git and ssh://git@host:22/x"),
            "https://git.example.com/a.git and ssh://***@host:22/x"
        );
        assert_eq!(mask_userinfo("no url here"), "no url here");
    }

    #[test]
    fn redacts_secret_values() {
        let r = Redactor::new(["pw".to_owned(), "pw-long".to_owned(), String::new()]);
        assert_eq!(r.apply("a pw-long b pw c"), "a [redacted] b [redacted] c");
        assert_eq!(r.apply("nothing"), "nothing");
    }
}
