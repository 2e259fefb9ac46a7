//! The local executor: builds run as processes on the dispatcher's own
//! machine, in a workspace per execution: `git clone`, then the method's
//! tool (podman/buildah/docker, kaniko or packer), output streamed into the
//! sink, the pushed digest read back from the tool.
//!
//! Module map: `settings` (configuration), `workspace` (directories, auth
//! files, cleanup), `git` (fetching the source), `commands` (tool argv per
//! method, pure), `packer` (machine-readable output), `process` (process
//! groups, streaming, termination), `logs` (batched log delivery), `redact`.

mod commands;
mod git;
mod logs;
mod packer;
mod process;
mod redact;
mod settings;
mod workspace;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use imagefactory_domain::{BuildMethod, ExecutorKind, MethodConfig};
use tokio::sync::Semaphore;

pub use settings::{ContainerCli, LocalSettings, UnknownContainerCli};

use commands::{BuildPaths, ContainerPlan, DigestSource, PlanInput};
use logs::LogWriter;
use process::{CommandSpec, Finished, PlainLines, RunError, Runner, StopWatch};
use redact::{Redactor, mask_userinfo};
use workspace::{Workspace, resolve_inside};

use crate::{
    Artifact, ArtifactKind, ExecutionContext, ExecutionRef, ExecutionSink, Executor, Outcome,
    StopReason, StopSignal,
};

/// Message of an execution ended by this dispatcher's shutdown.
pub const SHUTDOWN_MESSAGE: &str = "dispatcher shut down while the build ran";

/// Runs builds on this machine; at most `max_concurrent` at once.
pub struct LocalExecutor {
    settings: Arc<LocalSettings>,
    slots: Arc<Semaphore>,
}

impl LocalExecutor {
    pub fn new(settings: LocalSettings) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Self {
            settings: Arc::new(settings),
            slots,
        }
    }

    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }
}

/// Why the steps of an execution stopped early.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The build itself failed; the message names the cause.
    Failed(String),
    /// Trouble on this machine, not in the build (disk, sink).
    Transient(String),
    Stopped(StopReason),
}

impl StepError {
    pub(crate) fn from_run(err: RunError) -> Self {
        match err {
            RunError::Stopped(reason) => Self::Stopped(reason),
            RunError::Spawn(tool, e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::Failed(format!("{tool} is not installed on this dispatcher ({e})"))
            }
            RunError::Spawn(tool, e) => Self::Failed(format!("could not run {tool}: {e}")),
        }
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Local
    }

    async fn start(
        &self,
        ctx: ExecutionContext,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
    ) -> Outcome {
        let mut stop = StopWatch::new(stop, ctx.timeout);
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _ = sink
                    .progress(&format!(
                        "waiting for a free local build slot ({} in use)",
                        self.settings.max_concurrent
                    ))
                    .await;
                tokio::select! {
                    permit = self.slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return Outcome::Transient { message: "local executor is shutting down".into() },
                    },
                    reason = stop.wait() => return stopped_outcome(reason, &ctx),
                }
            }
        };
        let outcome = self.execute(&ctx, sink, &mut stop).await;
        drop(permit);
        outcome
    }

    async fn reattach(
        &self,
        ctx: ExecutionContext,
        reference: ExecutionRef,
        _sink: Arc<dyn ExecutionSink>,
        _stop: StopSignal,
    ) -> Outcome {
        // Processes a crashed dispatcher on this machine left behind would run
        // on unsupervised next to the retry: end them, and their workspace.
        let groups = process::groups_of_execution(&ctx.execution_id.to_string());
        for pgid in &groups {
            process::kill_group(*pgid, libc::SIGKILL);
        }
        for pgid in &groups {
            for _ in 0..100 {
                if !process::group_alive(*pgid) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        let ws = Workspace::at(
            &self.settings.workdir,
            &self.settings.runroot_dir,
            ctx.execution_id,
        );
        if let Err(err) = tokio::task::spawn_blocking(move || ws.remove())
            .await
            .unwrap_or(Ok(()))
        {
            tracing::warn!(execution.id = %ctx.execution_id, error = %err, "removing a lost local workspace failed");
        }
        let place = reference.name.as_deref().unwrap_or("another dispatcher");
        let ended = if groups.is_empty() {
            String::new()
        } else {
            format!(
                " (its {} leftover process group(s) here were ended)",
                groups.len()
            )
        };
        Outcome::Transient {
            message: format!(
                "the dispatcher that ran this local build was lost ({place}); a local build cannot be resumed{ended}"
            ),
        }
    }
}

fn stopped_outcome(reason: StopReason, ctx: &ExecutionContext) -> Outcome {
    match reason {
        StopReason::Cancel => Outcome::Cancelled {
            message: "build cancelled; its local processes were terminated".into(),
        },
        StopReason::Timeout => Outcome::TimedOut {
            message: format!(
                "build exceeded its timeout of {}s; its local processes were terminated",
                ctx.timeout.as_secs()
            ),
        },
        StopReason::Handover => Outcome::Transient {
            message: SHUTDOWN_MESSAGE.into(),
        },
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // when the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Resolves a tool up front, so a missing one fails before any work.
fn require_tool(program: &Path, what: &str, setting: &str) -> Result<PathBuf, StepError> {
    process::find_program(program).ok_or_else(|| {
        StepError::Failed(format!(
            "{what} is not installed on this dispatcher ('{}' was not found; set {setting})",
            program.display()
        ))
    })
}

fn exit_text(finished: &Finished) -> String {
    match finished.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".into(),
    }
}

impl LocalExecutor {
    async fn execute(
        &self,
        ctx: &ExecutionContext,
        sink: Arc<dyn ExecutionSink>,
        stop: &mut StopWatch,
    ) -> Outcome {
        let settings = &self.settings;
        let ws = match Workspace::create(&settings.workdir, &settings.runroot_dir, ctx.execution_id)
        {
            Ok(ws) => ws,
            Err(e) => {
                return Outcome::Transient {
                    message: format!(
                        "cannot create the build workspace under {}: {e}",
                        settings.workdir.display()
                    ),
                };
            }
        };
        let reference = ExecutionRef {
            executor: ExecutorKind::Local,
            provider_id: None,
            namespace: None,
            name: Some(format!("{}:{}", hostname(), ws.root.display())),
            uid: Some(ctx.execution_id.to_string()),
        };
        let result = match sink.reference(&reference).await {
            Err(e) => Err(StepError::Transient(e.to_string())),
            Ok(()) => {
                let mut secrets = Vec::new();
                if let Some(auth) = &ctx.registry {
                    secrets.push(auth.password.expose().to_owned());
                }
                if let Some(cred) = &ctx.source.credential {
                    secrets.push(cred.password.expose().to_owned());
                }
                let redactor = Redactor::new(secrets);
                let logs = LogWriter::spawn(
                    sink.clone(),
                    settings.log_batch_lines,
                    settings.log_flush_interval,
                );
                let mut base_env = process::inherited_env(&settings.pass_env);
                base_env.push(("TMPDIR".into(), ws.tmp().display().to_string()));
                base_env.push((
                    process::EXECUTION_MARKER_ENV.into(),
                    ctx.execution_id.to_string(),
                ));
                let mut runner = Runner {
                    logs: &logs,
                    redactor: &redactor,
                    stop,
                    grace_period: settings.grace_period,
                    base_env: &base_env,
                };
                let steps = self.run_steps(ctx, &ws, &*sink, &mut runner).await;
                logs.finish().await;
                match steps {
                    Ok(artifacts) => record(&*sink, &artifacts).await,
                    Err(e) => Err(e),
                }
            }
        };

        let keep = settings.keep_failed && matches!(result, Err(StepError::Failed(_)));
        if keep {
            match ws.keep() {
                Ok(root) => {
                    let _ = sink
                        .progress(&format!(
                            "workspace kept for inspection at {}",
                            root.display()
                        ))
                        .await;
                }
                Err(e) => {
                    tracing::error!(execution.id = %ctx.execution_id, error = %e, "removing a local build's secrets failed");
                }
            }
        } else {
            let root = ws.root.clone();
            // Dropping the workspace removes it (a large tree: off the runtime).
            let removed = tokio::task::spawn_blocking(move || ws.remove()).await;
            if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
                tracing::error!(execution.id = %ctx.execution_id, workspace = %root.display(), error = %e, "removing a local build workspace failed");
            }
        }

        match result {
            Ok(()) => Outcome::Succeeded,
            Err(StepError::Failed(message)) => Outcome::Failed { message },
            Err(StepError::Transient(message)) => Outcome::Transient { message },
            Err(StepError::Stopped(reason)) => stopped_outcome(reason, ctx),
        }
    }

    async fn run_steps(
        &self,
        ctx: &ExecutionContext,
        ws: &Workspace,
        sink: &dyn ExecutionSink,
        runner: &mut Runner<'_>,
    ) -> Result<Vec<Artifact>, StepError> {
        let settings = &self.settings;
        let git = require_tool(&settings.git_bin, "git", "IF_LOCAL_GIT_BIN")?;
        let tool = match ctx.method {
            BuildMethod::Docker | BuildMethod::Buildx => require_tool(
                &settings.container_cli_program(),
                &format!("the container CLI {}", settings.container_cli),
                "IF_LOCAL_CONTAINER_CLI / IF_LOCAL_CONTAINER_CLI_BIN",
            )?,
            BuildMethod::Kaniko => {
                let missing = || {
                    StepError::Failed(
                        "kaniko is not installed on this dispatcher (set IF_LOCAL_KANIKO_BIN to the kaniko executor)".into(),
                    )
                };
                let bin = settings.kaniko_bin.as_deref().ok_or_else(missing)?;
                process::find_program(bin).ok_or_else(missing)?
            }
            BuildMethod::Packer => {
                require_tool(&settings.packer_bin, "packer", "IF_LOCAL_PACKER_BIN")?
            }
        };

        let _ = sink
            .progress(&format!(
                "cloning {} at {}",
                mask_userinfo(ctx.source.url.as_str()),
                ctx.source.git_ref
            ))
            .await;
        let commit = git::clone(runner, &git, &settings.git_protocols, ws, &ctx.source).await?;
        let mut artifacts = vec![Artifact {
            name: "clone.commit".into(),
            value: commit,
            kind: ArtifactKind::Result,
        }];
        let produced = match ctx.method {
            BuildMethod::Packer => self.packer(ctx, ws, sink, runner, &tool).await?,
            method => self.container(ctx, ws, sink, runner, &tool, method).await?,
        };
        artifacts.extend(produced);
        Ok(artifacts)
    }

    async fn container(
        &self,
        ctx: &ExecutionContext,
        ws: &Workspace,
        sink: &dyn ExecutionSink,
        runner: &mut Runner<'_>,
        tool: &Path,
        method: BuildMethod,
    ) -> Result<Vec<Artifact>, StepError> {
        let paths = self.build_paths(ctx, ws)?;
        let local_name = format!("localhost/imagefactory-{}:build", ctx.execution_id);
        let plan = self.container_plan(ctx, tool, method, &local_name, &paths)?;
        let image = ctx.image.to_string();
        let last = run_plan(runner, sink, &plan, &image).await?;
        let digest = read_digest(&plan.digest, last.as_ref()).ok_or_else(|| {
            StepError::Failed(format!(
                "the push of {} finished but the tool reported no image digest",
                ctx.image
            ))
        })?;
        if paths.storage.is_none() {
            self.remove_local_image(runner, tool, method, &local_name, &image, &paths.cwd)
                .await;
        }
        Ok(vec![
            Artifact {
                name: "IMAGE_URL".into(),
                value: image,
                kind: ArtifactKind::ImageUrl,
            },
            Artifact {
                name: "IMAGE_DIGEST".into(),
                value: digest,
                kind: ArtifactKind::ImageDigest,
            },
        ])
    }

    /// Where a container build reads and writes: context and dockerfile
    /// inside the clone, the auth file written, storage per execution when
    /// isolated.
    fn build_paths(&self, ctx: &ExecutionContext, ws: &Workspace) -> Result<BuildPaths, StepError> {
        let settings = &self.settings;
        let cfg = &ctx.config;
        let src = ws.src();
        let context = cfg.context.as_deref().unwrap_or(".");
        let context =
            resolve_inside(&src, &src, context, "build context").map_err(StepError::Failed)?;
        let dockerfile = cfg.dockerfile.as_deref().unwrap_or("Dockerfile");
        let dockerfile =
            resolve_inside(&src, &context, dockerfile, "dockerfile").map_err(StepError::Failed)?;
        ws.write_registry_auth(ctx.registry.as_ref()).map_err(|e| {
            StepError::Transient(format!("cannot write the registry auth file: {e}"))
        })?;
        let daemonless = settings.container_cli != ContainerCli::Docker;
        let paths = BuildPaths {
            cwd: src,
            context,
            dockerfile,
            auth_dir: ws.secrets(),
            auth_file: ws.auth_file(),
            digest_file: ws.out().join("digest"),
            metadata_file: ws.out().join("metadata.json"),
            storage: (daemonless && settings.isolated_storage)
                .then(|| (ws.storage_root(), ws.storage_runroot())),
        };
        if let Some((_, runroot)) = &paths.storage
            && runroot.as_os_str().len() > 50
        {
            return Err(StepError::Failed(format!(
                "the podman/buildah run root {} is longer than 50 characters; set IF_LOCAL_RUNROOT_DIR to a shorter directory",
                runroot.display()
            )));
        }
        Ok(paths)
    }

    /// The commands of a container build, for kaniko or the container CLI.
    fn container_plan(
        &self,
        ctx: &ExecutionContext,
        tool: &Path,
        method: BuildMethod,
        local_name: &str,
        paths: &BuildPaths,
    ) -> Result<ContainerPlan, StepError> {
        let settings = &self.settings;
        let insecure = settings.is_insecure_registry(ctx.image.registry());
        let image = ctx.image.to_string();
        if method == BuildMethod::Kaniko {
            return Ok(commands::kaniko_plan(
                tool,
                &ctx.config,
                &image,
                insecure,
                paths,
            ));
        }
        commands::container_plan(&PlanInput {
            cli: settings.container_cli,
            program: tool,
            method,
            config: &ctx.config,
            image: &image,
            local_name,
            insecure,
            storage_driver: settings.storage_driver.as_deref(),
            isolation: settings.isolation.as_deref(),
            paths,
        })
        .map_err(StepError::Failed)
    }

    /// With shared storage the built image would pile up on this machine;
    /// remove it (best effort: the push already succeeded).
    async fn remove_local_image(
        &self,
        runner: &mut Runner<'_>,
        tool: &Path,
        method: BuildMethod,
        local_name: &str,
        image: &str,
        cwd: &Path,
    ) {
        let spec = match (self.settings.container_cli, method) {
            (_, BuildMethod::Kaniko) => return,
            (ContainerCli::Docker, BuildMethod::Buildx) => return,
            (ContainerCli::Docker, _) => CommandSpec::new("push", tool, cwd).args(["rmi", image]),
            (_, BuildMethod::Buildx) => {
                CommandSpec::new("push", tool, cwd).args(["manifest", "rm", local_name])
            }
            _ => CommandSpec::new("push", tool, cwd).args(["rmi", local_name]),
        };
        let _ = runner.run(&spec, &mut PlainLines).await;
    }

    async fn packer(
        &self,
        ctx: &ExecutionContext,
        ws: &Workspace,
        sink: &dyn ExecutionSink,
        runner: &mut Runner<'_>,
        tool: &Path,
    ) -> Result<Vec<Artifact>, StepError> {
        let cfg = &ctx.config;
        let src = ws.src();
        let template = cfg.packer_template.as_deref().unwrap_or(".");
        let template =
            resolve_inside(&src, &src, template, "packer template").map_err(StepError::Failed)?;
        let target = PackerTarget::of(&template, &src);
        let on_error = packer_on_error(cfg)?;
        let base = |spec: CommandSpec| {
            spec.env("CHECKPOINT_DISABLE", "1")
                .env("PACKER_NO_COLOR", "1")
                .env(
                    "PACKER_CACHE_DIR",
                    ws.root.join("packer_cache").display().to_string(),
                )
        };
        if packer::needs_init(&target.arg, &target.text) {
            let _ = sink.progress("installing packer plugins").await;
            let init =
                CommandSpec::new("packer", tool, &target.cwd).args(["init", target.arg.as_str()]);
            let finished = runner
                .run(&base(init), &mut PlainLines)
                .await
                .map_err(StepError::from_run)?;
            ensure_success(&finished, "packer init failed")?;
        }
        let mut build = base(CommandSpec::new("packer", tool, &target.cwd).args([
            "build".to_owned(),
            "-machine-readable".to_owned(),
            format!("-on-error={on_error}"),
        ]));
        if !cfg.packer_vars.is_empty() {
            // In a 0600 file rather than `-var k=v`: variables often hold secrets.
            let body = serde_json::to_vec(&cfg.packer_vars).unwrap_or_default();
            ws.write_packer_vars(&body)
                .map_err(|e| StepError::Transient(format!("cannot write packer variables: {e}")))?;
            build = build.arg(format!("-var-file={}", ws.packer_vars().display()));
        }
        let build = build.arg(target.arg);
        let _ = sink.progress("running packer build").await;
        let mut output = packer::PackerOutput::default();
        let finished = runner
            .run(&build, &mut output)
            .await
            .map_err(StepError::from_run)?;
        ensure_success(&finished, "packer build failed")?;
        Ok(output.artifacts())
    }
}

/// Run a container plan's steps in order; the last step's result (the
/// push output may hold the digest).
async fn run_plan(
    runner: &mut Runner<'_>,
    sink: &dyn ExecutionSink,
    plan: &ContainerPlan,
    image: &str,
) -> Result<Option<Finished>, StepError> {
    let mut last = None;
    for step in &plan.steps {
        let push = step.source == "push";
        let note = if push {
            format!("pushing {image}")
        } else {
            format!("building with {}", step.tool())
        };
        let _ = sink.progress(&note).await;
        let finished = runner
            .run(step, &mut PlainLines)
            .await
            .map_err(StepError::from_run)?;
        let what = if push {
            format!("push of {image} failed")
        } else {
            format!("{} build failed", step.tool())
        };
        ensure_success(&finished, &what)?;
        last = Some(finished);
    }
    Ok(last)
}

/// The pushed image's digest, from where the plan says the tool leaves it.
fn read_digest(source: &DigestSource, last: Option<&Finished>) -> Option<String> {
    match source {
        DigestSource::File(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| commands::parse_digest(&t)),
        DigestSource::BuildxMetadata(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| commands::digest_from_buildx_metadata(&t)),
        DigestSource::PushOutput => last.and_then(|f| commands::digest_from_push_output(&f.tail)),
    }
}

/// `Failed("<what> (<exit>): <output tail>")` unless the tool succeeded.
fn ensure_success(finished: &Finished, what: &str) -> Result<(), StepError> {
    if finished.status.success() {
        return Ok(());
    }
    Err(StepError::Failed(format!(
        "{what} ({}): {}",
        exit_text(finished),
        finished.tail_text()
    )))
}

/// What packer is run on: a template directory (its `*.pkr.hcl` files) or
/// one template file, from the directory holding it.
struct PackerTarget {
    cwd: PathBuf,
    /// The argument naming the template: `.` or the file's name.
    arg: String,
    /// The template text (for `packer init`'s plugin check).
    text: String,
}

impl PackerTarget {
    fn of(template: &Path, src: &Path) -> Self {
        if template.is_dir() {
            let text = std::fs::read_dir(template)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".pkr.hcl"))
                        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            return Self {
                cwd: template.to_path_buf(),
                arg: ".".to_owned(),
                text,
            };
        }
        let arg = template
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cwd = template
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| src.to_path_buf());
        Self {
            cwd,
            arg,
            text: std::fs::read_to_string(template).unwrap_or_default(),
        }
    }
}

/// `metadata.on_error`: what packer does with a failed build's machine.
fn packer_on_error(cfg: &MethodConfig) -> Result<&str, StepError> {
    match cfg.metadata.get("on_error").and_then(|v| v.as_str()) {
        None => Ok("abort"),
        Some(v @ ("abort" | "cleanup" | "run-cleanup-provisioner")) => Ok(v),
        Some(other) => Err(StepError::Failed(format!(
            "metadata.on_error {other:?} is not one of abort, cleanup, run-cleanup-provisioner"
        ))),
    }
}

async fn record(sink: &dyn ExecutionSink, artifacts: &[Artifact]) -> Result<(), StepError> {
    for artifact in artifacts {
        sink.artifact(artifact)
            .await
            .map_err(|e| StepError::Transient(e.to_string()))?;
    }
    Ok(())
}
