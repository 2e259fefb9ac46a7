//! Fetching the build's source: shallow clone of a branch or tag, a fetch of
//! just the commit for a full sha, a full clone for an abbreviated one.
//! Credentials reach git through an askpass helper reading its environment.

use std::path::{Path, PathBuf};

use super::StepError;
use super::process::{CommandSpec, PlainLines, Runner};
use super::redact::mask_userinfo;
use super::workspace::Workspace;
use crate::GitSource;

/// The transport a git URL uses, as `GIT_ALLOW_PROTOCOL` names it.
pub(crate) fn url_protocol(url: &str) -> &str {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme;
    }
    // scp-like `user@host:path` is ssh; anything else is a local path.
    match url.split_once(':') {
        Some((host, _)) if !host.contains('/') => "ssh",
        _ => "file",
    }
}

/// Checks the source's transport against this dispatcher's allow list
/// before any process runs. Its shape needs no check here: `GitUrl` and
/// `GitRef` refuse option-like, empty and whitespace-holding values when the
/// context is built.
pub(crate) fn validate(source: &GitSource, allowed: &[String]) -> Result<(), String> {
    let url = mask_userinfo(source.url.as_str());
    let protocol = url_protocol(source.url.as_str());
    if !allowed.iter().any(|p| p == protocol) {
        return Err(format!(
            "git URL {url:?} uses transport '{protocol}', which this dispatcher does not allow (allowed: {}; see IF_LOCAL_GIT_PROTOCOLS)",
            allowed.join(", ")
        ));
    }
    Ok(())
}

/// Splits `scheme://user:pass@host/...` into the URL without user info and
/// the (percent-decoded) username and password.
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), None);
    };
    let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
    let plain = format!("{scheme}://{}", &rest[at + 1..]);
    (
        plain,
        Some((percent_decode(user), percent_decode(password))),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_hex(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A full object name (sha1 or sha256) can be fetched on its own.
fn is_full_commit(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && is_hex(r)
}

/// What could be an abbreviated commit name.
fn may_be_short_commit(r: &str) -> bool {
    (7..40).contains(&r.len()) && is_hex(r)
}

fn ref_missing(tail: &str) -> bool {
    tail.contains("not found in upstream")
        || tail.contains("couldn't find remote ref")
        || tail.contains("did not match any")
        || tail.contains("unknown revision")
        || tail.contains("reference is not a tree")
        || tail.contains("unable to read tree")
        || tail.contains("not our ref")
}

/// Clones `source` into the workspace's `src/` and returns the checked-out commit.
pub(crate) async fn clone(
    runner: &mut Runner<'_>,
    git: &Path,
    protocols: &[String],
    ws: &Workspace,
    source: &GitSource,
) -> Result<String, StepError> {
    validate(source, protocols).map_err(StepError::Failed)?;
    let git = Git::new(git, protocols, ws, source)?;
    if is_full_commit(git.r) {
        git.fetch_commit(runner).await?;
    } else {
        git.clone_name(runner).await?;
    }
    git.head(runner).await
}

/// The git invocations of one clone: a sanitized environment, credentials
/// through askpass, the URL without user info and the workspace's `src/`.
struct Git<'a> {
    program: &'a Path,
    root: &'a Path,
    env: Vec<(&'static str, String)>,
    src: PathBuf,
    src_arg: String,
    /// The URL without user info (it goes through askpass).
    url: String,
    /// The URL as messages show it.
    shown: String,
    r: &'a str,
}

impl<'a> Git<'a> {
    fn new(
        program: &'a Path,
        protocols: &[String],
        ws: &'a Workspace,
        source: &'a GitSource,
    ) -> Result<Self, StepError> {
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT", "0".to_owned()),
            // The dispatcher's own git config and credential helpers stay out.
            ("GIT_CONFIG_NOSYSTEM", "1".to_owned()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".to_owned()),
            ("GIT_ALLOW_PROTOCOL", protocols.join(":")),
            ("GIT_SSH_COMMAND", "ssh -o BatchMode=yes".to_owned()),
        ];
        // Credentials written into the URL would show in the process list: they
        // go through askpass too, unless the build has its own credential.
        let (url, url_credential) = split_userinfo(source.url.as_str());
        let credential = match &source.credential {
            Some(cred) => Some((cred.username.clone(), cred.password.expose().to_owned())),
            None => url_credential,
        };
        if let Some((username, password)) = credential {
            ws.write_askpass().map_err(|e| {
                StepError::Transient(format!("cannot write the git askpass helper: {e}"))
            })?;
            env.push(("GIT_ASKPASS", ws.askpass().display().to_string()));
            env.push(("IF_GIT_USERNAME", username));
            env.push(("IF_GIT_PASSWORD", password));
        }
        let src = ws.src();
        Ok(Self {
            program,
            root: &ws.root,
            env,
            src_arg: src.display().to_string(),
            src,
            shown: mask_userinfo(&url),
            url,
            r: source.git_ref.as_str(),
        })
    }

    fn cmd(&self, args: &[&str]) -> CommandSpec {
        let mut spec = CommandSpec::new("clone", self.program, self.root)
            .args(["-c", "credential.helper="])
            .args(args.iter().copied());
        for (k, v) in &self.env {
            spec = spec.env(k, v.clone());
        }
        spec
    }

    /// `git -C src …`
    fn in_src(&self, args: &[&str]) -> CommandSpec {
        let mut all = vec!["-C", self.src_arg.as_str()];
        all.extend_from_slice(args);
        self.cmd(&all)
    }

    async fn run_ok(&self, runner: &mut Runner<'_>, spec: &CommandSpec) -> Result<(), StepError> {
        run_ok(runner, spec, &self.shown, self.r).await
    }

    /// A full commit name: fetch just that commit.
    async fn fetch_commit(&self, runner: &mut Runner<'_>) -> Result<(), StepError> {
        let (url, r) = (self.url.as_str(), self.r);
        self.run_ok(runner, &self.cmd(&["init", "-q", &self.src_arg]))
            .await?;
        self.run_ok(runner, &self.in_src(&["remote", "add", "origin", url]))
            .await?;
        // Most servers serve a single commit; fall back to everything.
        let shallow = self.in_src(&["fetch", "--depth", "1", "origin", r]);
        if run_status(runner, &shallow).await?.0 {
            let checkout = self.in_src(&["checkout", "-q", "--detach", "FETCH_HEAD"]);
            return self.run_ok(runner, &checkout).await;
        }
        let refspec = "+refs/heads/*:refs/remotes/origin/*";
        let everything = self.in_src(&["fetch", "--tags", "origin", refspec]);
        self.run_ok(runner, &everything).await?;
        self.run_ok(runner, &self.in_src(&["checkout", "-q", "--detach", r]))
            .await
    }

    /// A branch or tag (shallow), else an abbreviated commit.
    async fn clone_name(&self, runner: &mut Runner<'_>) -> Result<(), StepError> {
        let (url, r, src_arg) = (self.url.as_str(), self.r, self.src_arg.as_str());
        let shallow = [
            "clone",
            "--depth",
            "1",
            "--single-branch",
            "--branch",
            r,
            "--",
            url,
            src_arg,
        ];
        let (mut ok, mut tail) = run_status(runner, &self.cmd(&shallow)).await?;
        if !ok && tail.contains("does not support shallow") {
            // Dumb HTTP servers cannot serve a shallow clone: take it all.
            let _ = std::fs::remove_dir_all(&self.src);
            let full = [
                "clone",
                "--single-branch",
                "--branch",
                r,
                "--",
                url,
                src_arg,
            ];
            (ok, tail) = run_status(runner, &self.cmd(&full)).await?;
        }
        if ok {
            return Ok(());
        }
        if !(ref_missing(&tail) && may_be_short_commit(r)) {
            return Err(clone_error(&self.shown, r, &tail));
        }
        self.clone_abbreviated(runner).await
    }

    /// Not a branch or tag: try the ref as an abbreviated commit.
    async fn clone_abbreviated(&self, runner: &mut Runner<'_>) -> Result<(), StepError> {
        let _ = std::fs::remove_dir_all(&self.src);
        let all = [
            "clone",
            "--no-checkout",
            "--",
            self.url.as_str(),
            &self.src_arg,
        ];
        self.run_ok(runner, &self.cmd(&all)).await?;
        let commit = format!("{}^{{commit}}", self.r);
        let verify = self.in_src(&["rev-parse", "--verify", "--quiet", &commit]);
        let (found, _) = run_status(runner, &verify).await?;
        if !found {
            let tail = "did not match any branch, tag or commit name";
            return Err(clone_error(&self.shown, self.r, tail));
        }
        self.run_ok(
            runner,
            &self.in_src(&["checkout", "-q", "--detach", &commit]),
        )
        .await
    }

    /// The checked-out commit.
    async fn head(&self, runner: &mut Runner<'_>) -> Result<String, StepError> {
        let finished = runner
            .run(&self.in_src(&["rev-parse", "HEAD"]), &mut PlainLines)
            .await
            .map_err(StepError::from_run)?;
        let commit = finished.tail.last().cloned().unwrap_or_default();
        if !finished.status.success() || !is_hex(&commit) || commit.is_empty() {
            return Err(StepError::Failed(format!(
                "git could not resolve the checked-out commit of {}: {}",
                self.shown,
                finished.tail_text()
            )));
        }
        Ok(commit)
    }
}

fn clone_error(shown: &str, r: &str, tail: &str) -> StepError {
    if ref_missing(tail) {
        StepError::Failed(format!(
            "git ref '{r}' was not found in {shown} (no such branch, tag or commit): {tail}"
        ))
    } else {
        StepError::Failed(format!("git clone of {shown} at '{r}' failed: {tail}"))
    }
}

async fn run_status(
    runner: &mut Runner<'_>,
    spec: &CommandSpec,
) -> Result<(bool, String), StepError> {
    let finished = runner
        .run(spec, &mut PlainLines)
        .await
        .map_err(StepError::from_run)?;
    Ok((finished.status.success(), finished.tail_text()))
}

async fn run_ok(
    runner: &mut Runner<'_>,
    spec: &CommandSpec,
    shown: &str,
    r: &str,
) -> Result<(), StepError> {
    let (ok, tail) = run_status(runner, spec).await?;
    if ok {
        Ok(())
    } else {
        Err(clone_error(shown, r, &tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, r: &str) -> GitSource {
        GitSource {
            url: imagefactory_domain::GitUrl::parse(url).unwrap(),
            git_ref: imagefactory_domain::GitRef::parse(r).unwrap(),
            credential: None,
        }
    }

    #[test]
    fn names_the_transport() {
        assert_eq!(url_protocol("https://example.com/a.git"), "https");
        assert_eq!(url_protocol("git@github.com:o/r.git"), "ssh");
        assert_eq!(url_protocol("file:///srv/r.git"), "file");
        assert_eq!(url_protocol("/srv/r.git"), "file");
        assert_eq!(url_protocol("./r"), "file");
    }

    #[test]
    fn rejects_unsafe_sources_with_the_reason() {
        let web = ["https".to_owned()];
        assert!(validate(&source("https://h/r.git", "main"), &web).is_ok());
        let err = validate(&source("file:///etc", "main"), &web).unwrap_err();
        assert!(err.contains("transport 'file'"), "{err}");
        let err = validate(&source("git@h.example:o/r.git", "main"), &web).unwrap_err();
        assert!(err.contains("transport 'ssh'"), "{err}");
    }

    /// What the removed ad-hoc checks refused never becomes a `GitSource`:
    /// the types refuse it when the dispatcher builds the context.
    #[test]
    fn option_like_or_blank_sources_cannot_be_built() {
        use imagefactory_domain::{GitRef, GitUrl};
        for url in [
            "",
            "--upload-pack=x",
            "ssh://-oProxyCommand=x/r",
            "https://h/a b",
        ] {
            assert!(GitUrl::parse(url).is_err(), "{url:?}");
        }
        for r in ["", "--help", "-x", "a b", "a\tb"] {
            assert!(GitRef::parse(r).is_err(), "{r:?}");
        }
    }

    #[test]
    fn credentials_leave_the_url() {
        assert_eq!(
            split_userinfo("https://bob:p%40ss@git.example.com/a.git"),
            (
                "https://git.example.com/a.git".to_owned(),
                Some(("bob".to_owned(), "p@ss".to_owned()))
            )
        );
        assert_eq!(
            split_userinfo("https://git.example.com/a@b.git"),
            ("https://git.example.com/a@b.git".to_owned(), None)
        );
        assert_eq!(split_userinfo("git@github.com:o/r.git").1, None);
    }

    #[test]
    fn tells_commits_from_names() {
        assert!(is_full_commit(&"a".repeat(40)));
        assert!(!is_full_commit("main"));
        assert!(may_be_short_commit("abc1234"));
        assert!(!may_be_short_commit("release"));
    }
}
