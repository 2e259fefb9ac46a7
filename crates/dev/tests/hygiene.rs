//! Workspace hygiene held by tests (issue 15): the repository names no path
//! outside itself, and no function in `crates/*/src` is longer than 100
//! lines (hot paths a reader can hold in the head).

use std::path::{Path, PathBuf};

/// The workspace root (this crate is `crates/dev`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/dev sits two levels below the workspace root")
        .to_path_buf()
}

/// Every file under `dir` whose name ends in one of `exts`, skipping build
/// output and hidden folders.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                files(&path, exts, out);
            }
        } else if exts.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}

const MAX_FUNCTION_LINES: usize = 100;

/// The start line's indentation and name when `line` opens a function.
fn function_start(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start().len();
    let mut words = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "async ",
        "const ",
        "unsafe ",
    ] {
        words = words.strip_prefix(prefix).unwrap_or(words);
    }
    let rest = words.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some((indent, &rest[..end]))
}

/// Functions longer than the limit in one rustfmt-formatted source: a body
/// ends at the first line that is the closing brace at the opening
/// indentation (a declaration without a body ends at `;` first).
fn long_functions(source: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, name)) = function_start(line) else {
            continue;
        };
        let close = format!("{}}}", " ".repeat(indent));
        for (j, next) in lines.iter().enumerate().skip(i) {
            if j > i && function_start(next).is_some_and(|(n, _)| n <= indent) {
                break; // a bodiless declaration (trait method)
            }
            if *next == close {
                let length = j - i + 1;
                if length > MAX_FUNCTION_LINES {
                    found.push((i + 1, name.to_owned(), length));
                }
                break;
            }
        }
    }
    found
}

#[test]
fn the_length_scan_finds_a_long_function_and_ignores_short_ones() {
    let long = format!(
        "pub async fn long() {{\n{}}}\n\nfn short() {{\n    1;\n}}\n",
        "    step();\n".repeat(MAX_FUNCTION_LINES)
    );
    assert_eq!(long_functions(&long), [(1, "long".to_owned(), 102)]);
    let nested = "impl A {\n    fn a(&self) {\n        x();\n    }\n}\n";
    assert!(long_functions(nested).is_empty());
}

#[test]
fn no_function_in_crate_sources_is_longer_than_100_lines() {
    let mut sources = Vec::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            files(&src, &[".rs"], &mut sources);
        }
    }
    assert!(
        sources.len() > 50,
        "scan found too few sources: {}",
        sources.len()
    );
    let mut too_long = Vec::new();
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, name, length) in long_functions(&text) {
            too_long.push(format!("{}:{line} {name} ({length} lines)", path.display()));
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines:\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_repository_names_no_path_outside_itself() {
    // Built from pieces so this file does not match itself.
    let outside = [["..", "/shared"].concat(), ["/wo", "rk/"].concat()];
    let mut texts = Vec::new();
    files(
        &root(),
        &[
            ".rs", ".md", ".toml", ".yaml", ".yml", ".sh", ".sql", ".json", ".html",
        ],
        &mut texts,
    );
    texts.push(root().join(".ci/run"));
    assert!(
        texts.len() > 100,
        "scan found too few files: {}",
        texts.len()
    );
    let mut found = Vec::new();
    for path in texts {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|p| line.contains(p.as_str())) {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "paths outside the repository:\n{}",
        found.join("\n")
    );
}
