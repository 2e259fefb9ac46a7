//! Where the server and token come from: `--url`/`--token`, then
//! `IF_URL`/`IF_TOKEN` (clap reads both), then the config file written by
//! `imagefactory login` (`<config dir>/imagefactory/config.json`, mode 0600;
//! `--config`/`IF_CONFIG` names another).
//!
//! The stored token is only sent to the stored server: with another URL
//! from a flag or the environment, a token must come from there too.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// The config file's content.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogin {
    pub url: String,
    pub token: String,
}

impl fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredLogin")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The server and token a command uses.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub token: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `<config dir>/imagefactory/config.json`.
pub fn default_path() -> CliResult<PathBuf> {
    dirs::config_dir()
        .map(|d| d.join("imagefactory").join("config.json"))
        .ok_or_else(|| {
            CliError::Usage(
                "no user config directory (HOME or XDG_CONFIG_HOME unset); pass --config".into(),
            )
        })
}

/// A URL without its trailing slash, so `http://h/` and `http://h` match.
pub fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// Pure: pick URL and token from flags/env (`given_*`) and the stored login.
pub fn resolve(
    given_url: Option<&str>,
    given_token: Option<&str>,
    stored: Option<&StoredLogin>,
) -> CliResult<Target> {
    let stored_url = stored.map(|s| normalize_url(&s.url));
    let url = match given_url {
        Some(u) => normalize_url(u),
        None => stored_url.clone().ok_or_else(|| {
            CliError::Usage(
                "no server URL: pass --url, set IF_URL or run `imagefactory login`".into(),
            )
        })?,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::Usage(format!(
            "server URL {url:?} must start with http:// or https://"
        )));
    }
    let token = match given_token {
        Some(t) => t.to_owned(),
        None => match stored {
            Some(s) if stored_url.as_deref() == Some(url.as_str()) => s.token.clone(),
            Some(_) => {
                return Err(CliError::Usage(format!(
                    "no token for {url}: the stored login is for another server; \
                     pass --token, set IF_TOKEN or run `imagefactory login --url {url}`"
                )));
            }
            None => {
                return Err(CliError::Usage(
                    "no token: pass --token, set IF_TOKEN or run `imagefactory login`".into(),
                ));
            }
        },
    };
    if token.trim().is_empty() {
        return Err(CliError::Usage("the token is empty".into()));
    }
    Ok(Target { url, token })
}

/// The stored login, or `None` when there is no file.
pub fn load(path: &Path) -> CliResult<Option<StoredLogin>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CliError::Usage(format!(
                "config file {} is not valid: {e}; run `imagefactory login` again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Unavailable(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the login readable by its owner only (0600, directory 0700),
/// replacing the file atomically so no reader sees half of it.
pub fn save(path: &Path, login: &StoredLogin) -> CliResult<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |what: &str, e: std::io::Error| {
        CliError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail("create the directory of", e))?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("write", e))?;
    let text = serde_json::to_vec_pretty(login).expect("a login serializes");
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(url: &str) -> StoredLogin {
        StoredLogin {
            url: url.into(),
            token: "stored-token".into(),
        }
    }

    #[test]
    fn flags_win_over_the_stored_login() {
        let s = stored("http://a:8080");
        let t = resolve(Some("http://b/"), Some("flag"), Some(&s)).unwrap();
        assert_eq!((t.url.as_str(), t.token.as_str()), ("http://b", "flag"));
        let t = resolve(None, None, Some(&s)).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_str()),
            ("http://a:8080", "stored-token")
        );
        // Same server given again: its stored token is used.
        let t = resolve(Some("http://a:8080/"), None, Some(&s)).unwrap();
        assert_eq!(t.token, "stored-token");
    }

    #[test]
    fn the_stored_token_never_goes_to_another_server() {
        let err = resolve(Some("http://evil"), None, Some(&stored("http://a"))).unwrap_err();
        assert!(
            matches!(err, CliError::Usage(ref m) if m.contains("another server")),
            "{err:?}"
        );
    }

    #[test]
    fn missing_or_bad_settings_say_what_to_do() {
        let err = resolve(None, Some("t"), None).unwrap_err().message();
        assert!(
            err.contains("--url") && err.contains("IF_URL") && err.contains("login"),
            "{err}"
        );
        let err = resolve(Some("http://a"), None, None).unwrap_err().message();
        assert!(err.contains("IF_TOKEN"), "{err}");
        let err = resolve(Some("a:80"), Some("t"), None)
            .unwrap_err()
            .message();
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn saved_logins_are_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        let login = stored("http://a");
        save(&path, &login).unwrap();
        save(&path, &login).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), Some(login.clone()));
        assert!(!format!("{login:?}").contains("stored-token"));
        assert_eq!(load(&dir.path().join("none.json")).unwrap(), None);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path), Err(CliError::Usage(_))));
    }
}
