//! Container paths → host directories. A step runs as a host process, so the
//! paths Tekton guarantees inside its container (`/workspace/…`, `/tekton/…`,
//! each workspace's and volume's mount path) are rewritten, as text, in the
//! step's script, command, args, env values and working directory.

use std::path::{Path, PathBuf};

/// Container path prefixes and the host directories standing for them.
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    /// `(container path without trailing '/', host dir)`, longest first.
    entries: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// Map `container` (an absolute path) to `host`; a later mapping of the
    /// same path replaces the earlier one (a step's own mount wins).
    pub fn add(&mut self, container: &str, host: &Path) {
        let container = container.trim_end_matches('/');
        let container = if container.is_empty() { "/" } else { container };
        self.entries.retain(|(c, _)| c != container);
        self.entries
            .push((container.to_string(), host.to_path_buf()));
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.0.len()));
    }

    /// The host path of an absolute container path under one of the mounts.
    pub fn host_path(&self, container: &str) -> Option<PathBuf> {
        self.entries.iter().find_map(|(c, h)| {
            let rest = container.strip_prefix(c.as_str())?;
            if rest.is_empty() {
                Some(h.clone())
            } else {
                rest.strip_prefix('/').map(|r| h.join(r))
            }
        })
    }

    /// `text` with every mapped container path replaced by its host path. A
    /// prefix counts only at the start of a path: after the start of the text or
    /// a character that cannot be part of a path (space, quote, `=`, `:`, `(`…),
    /// and followed by `/`, the end, or such a character. So `/workspace/src`
    /// and `"$(x)/workspace"` change, `/data/workspace` and `/workspaces` do not.
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < text.len() {
            let at_start = i == 0 || !is_path_char(bytes[i - 1]);
            let found = (bytes[i] == b'/' && at_start)
                .then(|| self.mount_at(text, i))
                .flatten();
            if let Some((c, h)) = found {
                out.push_str(&h.display().to_string());
                i += c.len();
                continue;
            }
            let ch = text[i..].chars().next().expect("inside the text");
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }
}

impl Mounts {
    /// The mount whose container path starts at byte `i` of `text` as a whole
    /// path component.
    fn mount_at(&self, text: &str, i: usize) -> Option<&(String, PathBuf)> {
        self.entries.iter().find(|(c, _)| {
            text[i..].starts_with(c.as_str())
                && text
                    .as_bytes()
                    .get(i + c.len())
                    .is_none_or(|b| *b == b'/' || !is_path_char(*b))
        })
    }
}

fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~' | b'+' | b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Mounts {
        let mut m = Mounts::default();
        m.add("/workspace", Path::new("/h/pod/workspace"));
        m.add("/workspace/source", Path::new("/h/claims/c1"));
        m.add("/tekton", Path::new("/h/pod/tekton"));
        m
    }

    #[test]
    fn rewrites_known_prefixes_at_path_starts_only() {
        let m = mounts();
        assert_eq!(
            m.rewrite("cd /workspace/source/app && ls /workspace/out"),
            "cd /h/claims/c1/app && ls /h/pod/workspace/out"
        );
        assert_eq!(
            m.rewrite("X=/tekton/results/commit \"/workspace\" '/tekton'"),
            "X=/h/pod/tekton/results/commit \"/h/pod/workspace\" '/h/pod/tekton'"
        );
        assert_eq!(
            m.rewrite("/data/workspace /workspaces https://x/workspace é/tekton"),
            "/data/workspace /workspaces https://x/workspace é/h/pod/tekton"
        );
        assert_eq!(
            m.rewrite("/workspace/sourcery"),
            "/h/pod/workspace/sourcery"
        );
    }

    /// Any mount path is a prefix like `/workspace`: a Secret volume at
    /// `/etc/signing`, a workspace at `/etc/login`, nested mounts longest first;
    /// only whole path components (`/etc/signingX`, `/etc/signing.d` and the
    /// host's own `/etc` stay).
    #[test]
    fn rewrites_any_mount_path_as_whole_components() {
        let mut m = mounts();
        m.add("/etc/signing", Path::new("/h/pod/volumes/vol-keys"));
        m.add("/etc/login/", Path::new("/h/pod/volumes/ws-login"));
        m.add("/etc/signing/nested", Path::new("/h/pod/volumes/vol-other"));
        assert_eq!(
            m.rewrite("test -s /etc/signing/key.pem && grep -q robot \"/etc/login/user\""),
            "test -s /h/pod/volumes/vol-keys/key.pem && grep -q robot \"/h/pod/volumes/ws-login/user\""
        );
        assert_eq!(
            m.rewrite("cat /etc/signing/nested/a KEY=/etc/signing"),
            "cat /h/pod/volumes/vol-other/a KEY=/h/pod/volumes/vol-keys"
        );
        assert_eq!(
            m.rewrite("/etc/signingX /etc/signing.d /etc/passwd /var/etc/signing"),
            "/etc/signingX /etc/signing.d /etc/passwd /var/etc/signing"
        );
        assert_eq!(
            m.host_path("/etc/login"),
            Some(PathBuf::from("/h/pod/volumes/ws-login"))
        );
        assert_eq!(m.host_path("/etc/signingX/key.pem"), None);
    }

    #[test]
    fn host_path_takes_the_longest_mount() {
        let m = mounts();
        assert_eq!(
            m.host_path("/workspace/source/a"),
            Some(PathBuf::from("/h/claims/c1/a"))
        );
        assert_eq!(
            m.host_path("/workspace/other"),
            Some(PathBuf::from("/h/pod/workspace/other"))
        );
        assert_eq!(m.host_path("/workspacex"), None);
        assert_eq!(m.host_path("/etc/passwd"), None);
    }
}
