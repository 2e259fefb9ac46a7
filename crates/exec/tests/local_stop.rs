//! Stopping local builds: cancel, timeout and shutdown end every process of
//! the build's process group; a lost dispatcher's build is not resumed; the
//! concurrency limit holds executions back.
//!
//! The long step is an honest one: a packer `shell-local` provisioner that
//! records its shell's pid and sleeps, run by the real packer.

#[path = "support/local.rs"]
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagefactory_domain::{BuildMethod, MethodConfig};
use imagefactory_exec::local::{ContainerCli, LocalExecutor, LocalSettings, SHUTDOWN_MESSAGE};
use imagefactory_exec::{
    ExecutionContext, ExecutionRef, Executor, ExecutorKind, Outcome, StopReason,
};
use support::*;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SLOW_TEMPLATE: &str = r#"{
  "variables": { "pidfile": "" },
  "builders": [ { "type": "null", "communicator": "none" } ],
  "provisioners": [ { "type": "shell-local", "inline": [
    "echo $$ > {{user `pidfile`}}.tmp && mv {{user `pidfile`}}.tmp {{user `pidfile`}}",
    "echo sleeping",
    "sleep 60"
  ] } ]
}
"#;

struct Slow {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    workdir: PathBuf,
    pids: PathBuf,
}

fn slow_repo() -> Slow {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), &[("slow.json", SLOW_TEMPLATE)]);
    let pids = tmp.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    Slow {
        workdir: tmp.path().join("work"),
        repo,
        pids,
        _tmp: tmp,
    }
}

fn slow_context(slow: &Slow, name: &str) -> ExecutionContext {
    let config = MethodConfig {
        packer_template: Some("slow.json".into()),
        packer_vars: [(
            "pidfile".to_owned(),
            slow.pids.join(name).display().to_string(),
        )]
        .into(),
        ..MethodConfig::default()
    };
    context(
        BuildMethod::Packer,
        &slow.repo,
        "main",
        "r.example/unused",
        config,
        None,
    )
}

struct Running {
    handle: JoinHandle<Outcome>,
    stop: watch::Sender<Option<StopReason>>,
    sink: Arc<MemorySink>,
    execution_id: uuid::Uuid,
}

fn start(executor: &Arc<LocalExecutor>, ctx: ExecutionContext) -> Running {
    let (stop, rx) = watch::channel(None);
    let sink = Arc::new(MemorySink::default());
    let execution_id = ctx.execution_id;
    let executor = executor.clone();
    let s = sink.clone();
    let handle = tokio::spawn(async move { executor.start(ctx, s, rx).await });
    Running {
        handle,
        stop,
        sink,
        execution_id,
    }
}

/// The pid the slow step wrote, once it runs; `None` if the execution ended first.
async fn step_pid(pidfile: &Path, running: &Running) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile) {
            return Some(text.trim().parse().unwrap());
        }
        if running.handle.is_finished() {
            return None;
        }
        assert!(
            Instant::now() < deadline,
            "the slow step never started; logs:\n{}",
            running.sink.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The process group of the running step, checked to hold the step's tools.
fn step_group(pid: i32) -> i32 {
    let (_, pgid) = proc_stat(pid).expect("the step's shell runs");
    // SAFETY: getpgrp has no preconditions.
    assert_ne!(
        pgid,
        unsafe { getpgrp() },
        "the build must run in its own group"
    );
    let members = live_group_members(pgid);
    assert!(members.contains(&pid), "{members:?}");
    // packer itself, its plugin processes, the shell and its sleep.
    assert!(members.len() >= 3, "{members:?}");
    pgid
}

unsafe extern "C" {
    fn getpgrp() -> i32;
}

fn settings_for(slow: &Slow) -> LocalSettings {
    settings(&slow.workdir, ContainerCli::Podman)
}

/// Awaits the execution's end (at most a minute).
async fn finish(running: &mut Running) -> Outcome {
    tokio::time::timeout(Duration::from_secs(60), &mut running.handle)
        .await
        .expect("the execution ends")
        .expect("the execution does not panic")
}

fn assert_all_gone(pgid: Option<i32>, running: &Running, workdir: &Path) {
    if let Some(pgid) = pgid {
        assert_eq!(
            live_group_members(pgid),
            Vec::<i32>::new(),
            "processes of group {pgid} remain"
        );
    }
    assert_eq!(
        live_execution_processes(running.execution_id),
        Vec::<i32>::new()
    );
    assert_workdir_empty(workdir);
}

#[tokio::test]
async fn cancel_terminates_the_whole_process_group() {
    if !have_tools("cancel", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let executor = Arc::new(LocalExecutor::new(settings_for(&slow)));
    let mut running = start(&executor, slow_context(&slow, "cancel"));
    let pid = step_pid(&slow.pids.join("cancel"), &running)
        .await
        .expect("step ran");
    let pgid = step_group(pid);
    // The step writes its pid before it echoes, so the line may still be on
    // its way through packer's pipe: wait for it (logs stream while running).
    wait_for_log(&running, "sleeping").await;

    running.stop.send(Some(StopReason::Cancel)).unwrap();
    let outcome = finish(&mut running).await;

    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    assert_all_gone(Some(pgid), &running, &slow.workdir);
}

/// Waits until a line containing `text` reached the sink while the build runs.
async fn wait_for_log(running: &Running, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !running.sink.log_text().contains(text) {
        assert!(
            !running.handle.is_finished(),
            "the build ended before logging {text:?}; logs:\n{}",
            running.sink.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "{text:?} was never logged while the build ran; logs:\n{}",
            running.sink.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_builds_own_timeout_terminates_it() {
    if !have_tools("timeout", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let executor = Arc::new(LocalExecutor::new(settings_for(&slow)));
    let mut ctx = slow_context(&slow, "timeout");
    ctx.timeout = Duration::from_secs(8);
    let mut running = start(&executor, ctx);
    // On a loaded machine the deadline may pass before the step starts.
    let pgid = step_pid(&slow.pids.join("timeout"), &running)
        .await
        .map(step_group);

    let outcome = finish(&mut running).await;

    assert!(
        matches!(outcome, Outcome::TimedOut { ref message } if message.contains("timeout of 8s")),
        "{outcome:?}"
    );
    assert_all_gone(pgid, &running, &slow.workdir);
}

#[tokio::test]
async fn the_dispatchers_timeout_signal_ends_it_timed_out() {
    if !have_tools("timeout signal", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let executor = Arc::new(LocalExecutor::new(settings_for(&slow)));
    let mut running = start(&executor, slow_context(&slow, "signal"));
    let pgid = step_group(
        step_pid(&slow.pids.join("signal"), &running)
            .await
            .expect("step ran"),
    );

    running.stop.send(Some(StopReason::Timeout)).unwrap();
    let outcome = finish(&mut running).await;

    assert!(matches!(outcome, Outcome::TimedOut { .. }), "{outcome:?}");
    assert_all_gone(Some(pgid), &running, &slow.workdir);
}

#[tokio::test]
async fn shutdown_ends_the_build_as_transient() {
    if !have_tools("handover", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let executor = Arc::new(LocalExecutor::new(settings_for(&slow)));
    let mut running = start(&executor, slow_context(&slow, "handover"));
    let pgid = step_group(
        step_pid(&slow.pids.join("handover"), &running)
            .await
            .expect("step ran"),
    );

    running.stop.send(Some(StopReason::Handover)).unwrap();
    let outcome = finish(&mut running).await;

    assert_eq!(
        outcome,
        Outcome::Transient {
            message: SHUTDOWN_MESSAGE.into()
        }
    );
    assert_all_gone(Some(pgid), &running, &slow.workdir);
}

#[tokio::test]
async fn reattach_cannot_resume_and_ends_what_the_lost_dispatcher_left() {
    let tmp = tempfile::tempdir().unwrap();
    let workdir = tmp.path().join("work");
    let executor = LocalExecutor::new(settings(&workdir, ContainerCli::Podman));
    let ctx = context(
        BuildMethod::Docker,
        tmp.path(),
        "main",
        "r.example/a:v1",
        MethodConfig::default(),
        None,
    );
    // What a crashed dispatcher leaves: a workspace and a process group
    // still running the build.
    std::fs::create_dir_all(workdir.join(ctx.execution_id.to_string()).join("src")).unwrap();
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "sleep 60 & sleep 60; wait"])
        .env("IF_EXECUTION_ID", ctx.execution_id.to_string())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = orphan.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_group_members(pgid).len() < 3 {
        assert!(Instant::now() < deadline, "orphan group did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reference = ExecutionRef {
        executor: ExecutorKind::Local,
        provider_id: None,
        namespace: None,
        name: Some("host-a:/var/lib/if/x".into()),
        uid: Some(ctx.execution_id.to_string()),
    };
    let (_tx, stop) = watch::channel(None);

    let outcome = executor
        .reattach(ctx, reference, Arc::new(MemorySink::default()), stop)
        .await;

    let Outcome::Transient { message } = outcome else {
        panic!("expected Transient, got {outcome:?}");
    };
    assert!(
        message
            .contains("the dispatcher that ran this local build was lost (host-a:/var/lib/if/x)"),
        "{message}"
    );
    assert!(message.contains("cannot be resumed"), "{message}");
    let status = orphan.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(live_group_members(pgid), Vec::<i32>::new());
    assert_workdir_empty(&workdir);
}

#[tokio::test]
async fn max_concurrent_holds_further_builds_until_a_slot_frees() {
    if !have_tools("max concurrent", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let mut settings = settings_for(&slow);
    settings.max_concurrent = 1;
    let executor = Arc::new(LocalExecutor::new(settings));
    let mut first = start(&executor, slow_context(&slow, "first"));
    step_pid(&slow.pids.join("first"), &first)
        .await
        .expect("first runs");

    let mut second = start(&executor, slow_context(&slow, "second"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second
        .sink
        .progress
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.contains("waiting for a free local build slot"))
    {
        assert!(Instant::now() < deadline, "second never reported waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        second.sink.lines.lock().unwrap().is_empty(),
        "second must not start while first runs"
    );
    assert!(second.sink.references.lock().unwrap().is_empty());

    first.stop.send(Some(StopReason::Cancel)).unwrap();
    assert!(matches!(
        finish(&mut first).await,
        Outcome::Cancelled { .. }
    ));
    // The freed slot lets the second run.
    step_pid(&slow.pids.join("second"), &second)
        .await
        .expect("second runs");
    second.stop.send(Some(StopReason::Cancel)).unwrap();
    assert!(matches!(
        finish(&mut second).await,
        Outcome::Cancelled { .. }
    ));
    assert_workdir_empty(&slow.workdir);
}

#[tokio::test]
async fn cancel_while_waiting_for_a_slot_never_starts_the_build() {
    if !have_tools("cancel waiting", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let mut settings = settings_for(&slow);
    settings.max_concurrent = 1;
    let executor = Arc::new(LocalExecutor::new(settings));
    let mut first = start(&executor, slow_context(&slow, "busy"));
    step_pid(&slow.pids.join("busy"), &first)
        .await
        .expect("first runs");
    let mut waiting = start(&executor, slow_context(&slow, "never"));
    waiting.stop.send(Some(StopReason::Cancel)).unwrap();
    assert!(matches!(
        finish(&mut waiting).await,
        Outcome::Cancelled { .. }
    ));
    assert!(waiting.sink.lines.lock().unwrap().is_empty());
    first.stop.send(Some(StopReason::Cancel)).unwrap();
    finish(&mut first).await;
    assert_workdir_empty(&slow.workdir);
}

/// A base image's root file system: a static busybox as `/bin/sh` and `sleep`.
fn busybox_rootfs_tar(dir: &Path) -> Vec<u8> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let status = std::process::Command::new("tar")
        .args([
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(tar).unwrap()
}

#[tokio::test]
async fn cancel_during_a_run_step_of_a_container_build_ends_every_process() {
    if !have_tools("cancel RUN step", &["git", "buildah", "busybox", "tar"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs_tar(tmp.path());
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("rootfs.tar"), rootfs).unwrap();
    let repo = git_repo(
        tmp.path(),
        &[(
            "Dockerfile",
            "FROM scratch\nADD rootfs.tar /\nRUN echo step-started && sleep 60\n",
        )],
    );
    let workdir = tmp.path().join("work");
    let mut settings = settings(&workdir, ContainerCli::Buildah);
    // RUN steps cannot use an OCI runtime inside this sandbox.
    settings.isolation = Some("chroot".into());
    let executor = Arc::new(LocalExecutor::new(settings.clone()));
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "main",
        "127.0.0.1:1/team/app:v1",
        MethodConfig::default(),
        None,
    );
    let mut running = start(&executor, ctx);

    wait_for_log(&running, "step-started").await;
    // The step's `sleep` shows up in buildah's process group.
    let deadline = Instant::now() + Duration::from_secs(120);
    let pgid = loop {
        let sleeping = live_execution_processes(running.execution_id)
            .into_iter()
            .filter_map(|pid| proc_stat(pid).map(|(_, pgid)| pgid))
            .find(|pgid| {
                live_group_members(*pgid).iter().any(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
                })
            });
        if let Some(pgid) = sleeping {
            break pgid;
        }
        assert!(
            Instant::now() < deadline,
            "the RUN step's sleep never ran in the build's group"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    running.stop.send(Some(StopReason::Cancel)).unwrap();
    let outcome = finish(&mut running).await;

    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    assert_all_gone(Some(pgid), &running, &workdir);
    assert_runroot_gone(&settings, running.execution_id);
}

#[tokio::test]
async fn an_aborted_execution_leaves_no_process_or_file_behind() {
    if !have_tools("abort", &["git", "packer"]) {
        return;
    }
    let slow = slow_repo();
    let executor = Arc::new(LocalExecutor::new(settings_for(&slow)));
    let running = start(&executor, slow_context(&slow, "abort"));
    let pgid = step_group(
        step_pid(&slow.pids.join("abort"), &running)
            .await
            .expect("step ran"),
    );

    // The dispatcher's task is aborted: the executor's future is dropped.
    running.handle.abort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live_group_members(pgid).is_empty()
        || std::fs::read_dir(&slow.workdir).unwrap().next().is_some()
    {
        assert!(
            Instant::now() < deadline,
            "processes or files remain after abort"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_all_gone(Some(pgid), &running, &slow.workdir);
}
