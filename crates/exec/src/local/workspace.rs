//! The per-execution directory: `src/` (the clone), `tmp/` (TMPDIR of every
//! tool), `storage/` (podman/buildah images when isolated), `out/` (digest
//! and metadata files) and `secrets/` (0700: registry auth, git askpass
//! helper, packer variables), which is removed as soon as the execution ends.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use uuid::Uuid;

use crate::RegistryAuth;

pub(crate) struct Workspace {
    pub root: PathBuf,
    /// podman/buildah `--runroot` (locks, mount state). Outside the workspace
    /// because podman refuses run roots longer than 50 characters.
    runroot: PathBuf,
    /// Remove everything when dropped: an execution whose future is dropped
    /// midway (task aborted) leaves neither secrets nor files behind.
    remove_on_drop: bool,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = self.remove();
        }
    }
}

impl Workspace {
    /// Creates `<workdir>/<execution id>`, replacing leftovers of the same id.
    pub(crate) fn create(
        workdir: &Path,
        runroot_dir: &Path,
        execution_id: Uuid,
    ) -> io::Result<Self> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(workdir)?;
        let mut ws = Self::at(workdir, runroot_dir, execution_id);
        ws.remove()?;
        ws.remove_on_drop = true;
        DirBuilder::new().mode(0o700).create(&ws.root)?;
        for dir in [ws.tmp(), ws.out(), ws.secrets()] {
            DirBuilder::new().mode(0o700).create(dir)?;
        }
        Ok(ws)
    }

    pub(crate) fn at(workdir: &Path, runroot_dir: &Path, execution_id: Uuid) -> Self {
        Self {
            root: workdir.join(execution_id.to_string()),
            runroot: runroot_dir.join(execution_id.simple().to_string()),
            remove_on_drop: false,
        }
    }

    /// Leaves the workspace in place for inspection (secrets are removed).
    pub(crate) fn keep(mut self) -> io::Result<PathBuf> {
        self.remove_on_drop = false;
        self.remove_secrets()?;
        Ok(self.root.clone())
    }

    pub(crate) fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub(crate) fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    pub(crate) fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub(crate) fn storage_root(&self) -> PathBuf {
        self.root.join("storage/root")
    }
    pub(crate) fn storage_runroot(&self) -> PathBuf {
        self.runroot.clone()
    }
    /// Docker-style `config.json`; `DOCKER_CONFIG` points at its directory.
    pub(crate) fn auth_file(&self) -> PathBuf {
        self.secrets().join("config.json")
    }
    pub(crate) fn askpass(&self) -> PathBuf {
        self.secrets().join("git-askpass")
    }
    pub(crate) fn packer_vars(&self) -> PathBuf {
        self.secrets().join("variables.pkrvars.json")
    }

    /// Writes the registry auth file (0600). Without a credential it still
    /// holds an empty `auths`, so the dispatcher's own registry logins are
    /// never used for a tenant's push.
    pub(crate) fn write_registry_auth(&self, auth: Option<&RegistryAuth>) -> io::Result<()> {
        let mut auths = serde_json::Map::new();
        if let Some(auth) = auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                auth.username,
                auth.password.expose()
            ));
            auths.insert(auth.registry.clone(), serde_json::json!({ "auth": token }));
        }
        let body = serde_json::json!({ "auths": auths });
        write_private(&self.auth_file(), body.to_string().as_bytes(), 0o600)
    }

    /// A 0700 helper git calls for the username and password; it reads them
    /// from its environment, so they are in neither argv nor a file.
    pub(crate) fn write_askpass(&self) -> io::Result<()> {
        let script = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$IF_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$IF_GIT_PASSWORD\" ;;\nesac\n";
        write_private(&self.askpass(), script.as_bytes(), 0o700)
    }

    pub(crate) fn write_packer_vars(&self, body: &[u8]) -> io::Result<()> {
        write_private(&self.packer_vars(), body, 0o600)
    }

    /// Removes the secrets and the run root (done whatever the outcome).
    pub(crate) fn remove_secrets(&self) -> io::Result<()> {
        remove_tree(&self.runroot)?;
        remove_tree(&self.secrets())
    }

    pub(crate) fn remove(&self) -> io::Result<()> {
        remove_tree(&self.runroot)?;
        remove_tree(&self.root)
    }
}

fn write_private(path: &Path, body: &[u8], mode: u32) -> io::Result<()> {
    // Created with its final mode: never readable by others, not even briefly.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(body)?;
    file.sync_all()
}

/// Removes a directory tree; mounts a killed build left inside (overlay
/// storage) are detached first.
pub(crate) fn remove_tree(root: &Path) -> io::Result<()> {
    match fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            if unmount_below(root) == 0 {
                return Err(first);
            }
            fs::remove_dir_all(root)
        }
    }
}

/// Lazily unmounts every mount point below `root`, deepest first; returns how many.
fn unmount_below(root: &Path) -> usize {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return 0;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut count = 0;
    for point in points {
        let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: plain syscall on a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            count += 1;
        }
    }
    count
}

/// Joins a repository-relative path from the build's config onto `base`,
/// refusing anything that leaves `within` (absolute paths, `..`, symlinks
/// pointing out), so a build cannot read the dispatcher's files.
pub(crate) fn resolve_inside(
    within: &Path,
    base: &Path,
    relative: &str,
    what: &str,
) -> Result<PathBuf, String> {
    let rel = Path::new(relative);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!(
            "{what} {relative:?} must be a relative path inside the repository without '..'"
        ));
    }
    let joined = base.join(rel);
    let resolved = joined
        .canonicalize()
        .map_err(|_| format!("{what} {relative:?} does not exist in the repository"))?;
    let within = within
        .canonicalize()
        .map_err(|e| format!("repository checkout is unreadable: {e}"))?;
    if !resolved.starts_with(&within) {
        return Err(format!("{what} {relative:?} points outside the repository"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_private_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let ws = Workspace::create(&dir.path().join("w"), &dir.path().join("r"), id).unwrap();
        fs::create_dir_all(ws.storage_runroot()).unwrap();
        ws.write_registry_auth(Some(&RegistryAuth {
            credential_id: Uuid::new_v4(),
            version: 1,
            registry: "127.0.0.1:5000".into(),
            username: "alice".into(),
            password: imagefactory_domain::Secret::new("pw"),
        }))
        .unwrap();
        ws.write_askpass().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ws.auth_file()), 0o600);
        assert_eq!(mode(&ws.askpass()), 0o700);
        assert_eq!(mode(&ws.secrets()), 0o700);
        let auth: serde_json::Value =
            serde_json::from_slice(&fs::read(ws.auth_file()).unwrap()).unwrap();
        assert_eq!(auth["auths"]["127.0.0.1:5000"]["auth"], "YWxpY2U6cHc=");
        ws.remove_secrets().unwrap();
        assert!(!ws.secrets().exists());
        assert!(!ws.storage_runroot().exists());
        ws.remove().unwrap();
        assert!(!ws.root.exists());
    }

    #[test]
    fn paths_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        fs::create_dir_all(repo.join("app")).unwrap();
        fs::write(repo.join("app/Dockerfile"), "FROM scratch").unwrap();
        std::os::unix::fs::symlink("/etc", repo.join("escape")).unwrap();
        assert!(resolve_inside(&repo, &repo, "app/Dockerfile", "dockerfile").is_ok());
        let err = |r: &str| resolve_inside(&repo, &repo, r, "context").unwrap_err();
        assert!(err("../x").contains("without '..'"));
        assert!(err("/etc").contains("relative path"));
        assert!(err("escape").contains("outside the repository"));
        assert!(err("nope").contains("does not exist"));
    }
}
