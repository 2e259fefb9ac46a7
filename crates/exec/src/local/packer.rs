//! Packer's machine-readable output (`timestamp,target,type,data...`):
//! `ui` records become readable log lines, `artifact` records become
//! `packer.<builder>.<n>.<field>` result artifacts.

use std::collections::BTreeMap;

use super::process::LineObserver;
use crate::{Artifact, ArtifactKind};

/// Packer escapes commas inside a field and newlines inside a message.
fn unescape(field: &str) -> String {
    field
        .replace("%!(PACKER_COMMA)", ",")
        .replace("\\n", "\n")
        .replace("\\r", "")
}

/// One machine-readable record, or `None` for any other line.
fn parse(raw: &str) -> Option<(&str, &str, Vec<String>)> {
    let mut fields = raw.split(',');
    let timestamp = fields.next()?;
    if timestamp.is_empty() || !timestamp.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let target = fields.next()?;
    let kind = fields.next()?;
    Some((target, kind, fields.map(unescape).collect()))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ArtifactFields {
    builder_id: Option<String>,
    id: Option<String>,
    string: Option<String>,
    files: Vec<String>,
}

/// Decodes packer output as it streams and collects its artifacts.
#[derive(Debug, Default)]
pub(crate) struct PackerOutput {
    artifacts: BTreeMap<(String, u32), ArtifactFields>,
}

impl LineObserver for PackerOutput {
    fn observe(&mut self, raw: &str) -> Option<String> {
        let Some((target, kind, data)) = parse(raw) else {
            return Some(raw.to_owned());
        };
        match kind {
            "ui" => {
                let message = data.get(1).cloned().unwrap_or_default();
                Some(message.trim_start_matches('\n').to_owned())
            }
            "artifact" => {
                self.record_artifact(target, &data);
                None
            }
            // artifact-count, version, template info...: not for humans.
            _ => None,
        }
    }
}

impl PackerOutput {
    fn record_artifact(&mut self, builder: &str, data: &[String]) {
        let (Some(index), Some(field)) = (data.first(), data.get(1)) else {
            return;
        };
        let Ok(index) = index.parse::<u32>() else {
            return;
        };
        let entry = self
            .artifacts
            .entry((builder.to_owned(), index))
            .or_default();
        let value = data.get(2).cloned();
        match field.as_str() {
            "builder-id" => entry.builder_id = value,
            "id" => entry.id = value,
            "string" => entry.string = value,
            // `file,<n>,<path>`
            "file" => {
                if let Some(path) = data.get(3) {
                    entry.files.push(path.clone());
                }
            }
            _ => {}
        }
    }

    /// `packer.<builder>.<n>.id`, `.builder_id`, `.string` and `.files`
    /// (a JSON array of paths) for every artifact packer reported.
    pub(crate) fn artifacts(&self) -> Vec<Artifact> {
        let mut out = Vec::new();
        for ((builder, index), fields) in &self.artifacts {
            let prefix = format!("packer.{builder}.{index}");
            let mut push = |field: &str, value: String| {
                out.push(Artifact {
                    name: format!("{prefix}.{field}"),
                    value,
                    kind: ArtifactKind::Result,
                });
            };
            if let Some(v) = &fields.builder_id {
                push("builder_id", v.clone());
            }
            if let Some(v) = &fields.id {
                push("id", v.clone());
            }
            if let Some(v) = &fields.string {
                push("string", v.clone());
            }
            if !fields.files.is_empty() {
                push(
                    "files",
                    serde_json::to_string(&fields.files).unwrap_or_default(),
                );
            }
        }
        out
    }
}

/// HCL templates that declare `required_plugins` need `packer init` first.
pub(crate) fn needs_init(template_name: &str, template_text: &str) -> bool {
    !template_name.ends_with(".json") && template_text.contains("required_plugins")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
1795636091,,ui,say,==> out: Running local shell script: /tmp/packer-shell218366022
1795636091,,ui,message,    null: provisioning hello
1795636091,,ui,say,\\n==> Builds finished. The artifacts of successful builds are:
1795636091,out,artifact-count,1
1795636091,out,artifact,0,builder-id,packer.file
1795636091,out,artifact,0,id,File
1795636091,out,artifact,0,string,Stored file: out%!(PACKER_COMMA)1.txt
1795636091,out,artifact,0,files-count,1
1795636091,out,artifact,0,file,0,out%!(PACKER_COMMA)1.txt
1795636091,out,artifact,0,end
1795636091,null,artifact,0,builder-id,fnoeding.null
1795636091,null,artifact,0,id,Null
plain text from a plugin";

    #[test]
    fn decodes_ui_lines_and_collects_artifacts() {
        let mut out = PackerOutput::default();
        let logged: Vec<String> = OUTPUT.lines().filter_map(|l| out.observe(l)).collect();
        assert_eq!(
            logged,
            [
                "==> out: Running local shell script: /tmp/packer-shell218366022",
                "    null: provisioning hello",
                "==> Builds finished. The artifacts of successful builds are:",
                "plain text from a plugin",
            ]
        );
        let artifacts: Vec<(String, String)> = out
            .artifacts()
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect();
        assert_eq!(
            artifacts,
            [
                ("packer.null.0.builder_id".into(), "fnoeding.null".into()),
                ("packer.null.0.id".into(), "Null".into()),
                ("packer.out.0.builder_id".into(), "packer.file".into()),
                ("packer.out.0.id".into(), "File".into()),
                (
                    "packer.out.0.string".into(),
                    "Stored file: out,1.txt".into()
                ),
                ("packer.out.0.files".into(), r#"["out,1.txt"]"#.into()),
            ]
        );
    }

    #[test]
    fn init_only_for_hcl_with_required_plugins() {
        let hcl = "packer { required_plugins { docker = { version = \">= 1\" } } }";
        assert!(needs_init("build.pkr.hcl", hcl));
        assert!(!needs_init("build.pkr.hcl", "source \"null\" \"x\" {}"));
        assert!(!needs_init("build.json", hcl));
    }
}
