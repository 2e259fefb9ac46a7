//! How a Kubernetes provider gets Image Factory's Tekton Tasks, and which
//! builder images they run: the `tasks`, `tasks_namespace`, `repair_drift`
//! and `builder_images` keys of a provider's config (README "Operator guide").
//!
//! Pure types; the executor applies and checks the Tasks
//! (`exec/tekton/bundle.rs`), the provider config parser fills these in.

use std::fmt;

use crate::image::ImageRef;

/// Where the Tasks a build references come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TaskMode {
    /// Image Factory keeps its current Task bundle in every namespace it
    /// builds in (server-side apply, once per provider, namespace and bundle
    /// version). The default.
    #[default]
    Managed,
    /// The Tasks live in one namespace the operator prepared (`imagefactory
    /// tekton install --namespace`); builds reference them with Tekton's
    /// cluster resolver.
    Shared { namespace: String },
    /// The operator brings their own Tasks into each build namespace; Image
    /// Factory only checks they are there (preflight).
    Unmanaged,
}

impl TaskMode {
    /// The `tasks` key's value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Shared { .. } => "shared",
            Self::Unmanaged => "unmanaged",
        }
    }
}

impl fmt::Display for TaskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accepted values of the `tasks` key.
pub const TASK_MODES: &[&str] = &["managed", "shared", "unmanaged"];

/// The shipped Tasks, each with the config key of its builder image override
/// (`builder_images.<key>`) and the Task param that carries it.
pub const BUILDER_IMAGE_KEYS: &[(&str, &str)] = &[
    ("git_clone", "git-clone"),
    ("docker_build", "docker-build"),
    ("buildx", "buildx"),
    ("kaniko", "kaniko"),
    ("packer", "packer"),
];

/// The Task param every shipped Task takes for its step image(s); its
/// default (in `tekton/tasks/*.yaml`) is the pinned image.
pub const BUILDER_IMAGE_PARAM: &str = "BUILDER_IMAGE";

/// Per-Task builder image overrides (air-gapped mirrors). `None` keeps the
/// Task's pinned default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuilderImages {
    pub git_clone: Option<ImageRef>,
    pub docker_build: Option<ImageRef>,
    pub buildx: Option<ImageRef>,
    pub kaniko: Option<ImageRef>,
    pub packer: Option<ImageRef>,
}

impl BuilderImages {
    /// The override for the Task named `task` (`git-clone`, `docker-build`…).
    pub fn for_task(&self, task: &str) -> Option<&ImageRef> {
        match task {
            "git-clone" => self.git_clone.as_ref(),
            "docker-build" => self.docker_build.as_ref(),
            "buildx" => self.buildx.as_ref(),
            "kaniko" => self.kaniko.as_ref(),
            "packer" => self.packer.as_ref(),
            _ => None,
        }
    }

    /// Set the override for config key `key` (`git_clone`…); false for an
    /// unknown key.
    pub fn set(&mut self, key: &str, image: ImageRef) -> bool {
        let slot = match key {
            "git_clone" => &mut self.git_clone,
            "docker_build" => &mut self.docker_build,
            "buildx" => &mut self.buildx,
            "kaniko" => &mut self.kaniko,
            "packer" => &mut self.packer,
            _ => return false,
        };
        *slot = Some(image);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_sets_the_image_its_task_reads() {
        for (key, task) in BUILDER_IMAGE_KEYS {
            let mut images = BuilderImages::default();
            let image = ImageRef::parse("mirror.example/tools/x:1").unwrap();
            assert!(images.set(key, image.clone()), "{key}");
            assert_eq!(images.for_task(task), Some(&image), "{key} -> {task}");
            for (_, other) in BUILDER_IMAGE_KEYS.iter().filter(|(k, _)| k != key) {
                assert_eq!(images.for_task(other), None, "{key} leaked to {other}");
            }
        }
        assert!(
            !BuilderImages::default()
                .set("kubectl", ImageRef::parse("mirror.example/a:b").unwrap())
        );
    }

    #[test]
    fn modes_name_their_key_value() {
        let modes = [
            TaskMode::Managed,
            TaskMode::Shared {
                namespace: "tekton-tasks".into(),
            },
            TaskMode::Unmanaged,
        ];
        let names: Vec<_> = modes.iter().map(TaskMode::as_str).collect();
        assert_eq!(names, TASK_MODES);
        assert_eq!(TaskMode::default(), TaskMode::Managed);
    }
}
