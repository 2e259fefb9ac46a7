//! `imagefactory-dev --real-steps` as a process: the demo build clones the
//! local sample repository over HTTP, buildah builds it and pushes it to the
//! local docker-registry, and the digest the build recorded is the one the
//! registry serves; without the tools it names what to install.

use std::path::{Path, PathBuf};
use std::time::Duration;

use imagefactory_dev::real::missing_tools;
use imagefactory_test_support::{Proc, ReservedDb};

const ADMIN_TOKEN: &str = "dev-test-admin-token-not-for-output";
const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Guards against hangs only (a cold machine under load); nothing asserts speed.
const PATIENCE: Duration = Duration::from_secs(300);

fn spawn(args: &[&str], database_url: &str, extra: &[(&str, String)]) -> Proc {
    let mut env = vec![
        ("IF_DATABASE_URL", database_url.to_owned()),
        ("IF_ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("IF_SECRET_KEY", SECRET_KEY.into()),
        ("IF_DISPATCHER_SHUTDOWN_GRACE", "2s".into()),
        ("IF_LOG", "info".into()),
    ];
    env.extend(extra.iter().cloned());
    Proc::spawn(env!("CARGO_BIN_EXE_imagefactory-dev"), args, &env)
}

/// The last word of the first line starting (after indentation) with `prefix`.
fn value_after(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no {prefix:?} line\n{stdout}"))
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test]
async fn real_steps_build_and_push_an_image_whose_digest_the_registry_serves() {
    let missing = missing_tools(std::env::var_os("PATH").as_deref());
    if !missing.is_empty() {
        eprintln!("SKIPPED: {missing:?} not installed (run .ci/install-local-tools.sh)");
        return;
    }
    let db = ReservedDb::new("if_dev_real");
    let mut proc = spawn(&["--real-steps", "--exit", "--port", "0"], &db.url, &[]);
    let status = proc.wait_for_exit(PATIENCE).await;
    let out = proc.output();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{out}");
    let stdout = proc.stdout();

    let build_line = stdout
        .lines()
        .find(|l| l.starts_with("Build ") && l.contains(" after "))
        .unwrap_or_else(|| panic!("no build result line\n{out}"));
    assert!(
        build_line.contains(": succeeded after"),
        "{build_line}\n{out}"
    );

    // The digest the API recorded, and the one the registry answered.
    let recorded = value_after(&stdout, "IMAGE_DIGEST ");
    let served = value_after(&stdout, "registry serves ");
    assert!(is_digest(&recorded), "{recorded}\n{out}");
    assert_eq!(recorded, served, "{out}");
    assert_eq!(value_after(&stdout, "build recorded "), recorded, "{out}");

    // Pushed to the local registry, not to the simulated demo's name.
    let real_line = stdout
        .lines()
        .find(|l| l.starts_with("Real steps: "))
        .unwrap_or_else(|| panic!("no real-steps line\n{out}"));
    let registry = real_line
        .split_once("docker-registry at http://")
        .and_then(|(_, rest)| rest.split(',').next())
        .unwrap_or_else(|| panic!("no registry address: {real_line}"))
        .to_owned();
    assert_eq!(
        value_after(&stdout, "IMAGE_URL "),
        format!("{registry}/demo/hello:1.0"),
        "{out}"
    );
    // The steps ran: git fetched the sample's commit, buildah built and pushed.
    let logs: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  | "))
        .collect();
    for expected in ["COPY hello.txt /hello.txt", "Writing manifest"] {
        assert!(
            logs.iter().any(|l| l.contains(expected)),
            "no {expected:?} in the log: {logs:#?}\n{out}"
        );
    }
    assert!(
        !logs.iter().any(|l| l.contains("registry.example.com")),
        "simulated lines in a real build: {logs:#?}"
    );

    // Cleaned up on exit: the registry no longer answers, the files are gone.
    let dir = real_line
        .split_once("files under ")
        .and_then(|(_, rest)| rest.split(" (removed").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no directory: {real_line}"));
    assert!(dir.is_absolute(), "{real_line}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(&registry).is_err(),
        "the registry on {registry} still answers"
    );
    for secret in [ADMIN_TOKEN, SECRET_KEY] {
        assert!(!out.contains(secret), "a secret was printed\n{out}");
    }
}

/// A directory with links to `tools` only, as a PATH without the others.
fn path_with(dir: &Path, tools: &[&str]) -> String {
    let host_path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        let found = std::env::split_paths(&host_path)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
            .unwrap_or_else(|| PathBuf::from("/bin/true"));
        std::os::unix::fs::symlink(found, dir.join(tool)).unwrap();
    }
    dir.display().to_string()
}

#[tokio::test]
async fn without_the_tools_it_names_what_to_install_and_starts_nothing() {
    let db = ReservedDb::new("if_dev_notools");
    let cases: [(&[&str], &str, &str); 2] = [
        (
            &["git", "docker-registry"],
            "not found: buildah.",
            "apt-get install buildah)",
        ),
        (
            &[],
            "not found: git, buildah, docker-registry.",
            "apt-get install git buildah docker-registry)",
        ),
    ];
    for (present, named, install) in cases {
        let bin = tempfile::tempdir().unwrap();
        let path = path_with(bin.path(), present);
        let mut proc = spawn(
            &["--real-steps", "--exit", "--port", "0"],
            &db.url,
            &[("PATH", path)],
        );
        let status = proc.wait_for_exit(PATIENCE).await;
        let out = proc.output();
        let status = status.unwrap_or_else(|| panic!("still running\n{out}"));
        assert!(!status.success(), "{out}");
        let stderr = proc.stderr();
        assert!(stderr.contains(named), "{present:?}: {out}");
        assert!(stderr.contains(install), "{present:?}: {out}");
        assert!(stderr.contains("--real-steps"), "{out}");
        // Nothing started: no kube-sim, database or API.
        assert!(proc.stdout().is_empty(), "{out}");
    }
}
