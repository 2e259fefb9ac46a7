//! README "Provider config keys" documents exactly the keys the parser
//! accepts: a key added to one and not the other fails here.

use std::collections::BTreeSet;

use imagefactory_domain::provider::{KUBERNETES_KEYS, LOCAL_KEYS};
use imagefactory_domain::task_bundle::BUILDER_IMAGE_KEYS;

/// The table rows of the README's "Provider config keys" section, as
/// (key, whole row).
fn documented_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md at the workspace root");
    let section = readme
        .split("\n## Provider config keys\n")
        .nth(1)
        .expect("README has a \"Provider config keys\" section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let key = row
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap()
                .to_owned();
            (key, row.to_owned())
        })
        .collect()
}

#[test]
fn the_readme_table_lists_exactly_the_accepted_keys() {
    let rows = documented_rows();
    let documented: BTreeSet<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(rows.len(), documented.len(), "a key is listed twice");
    let accepted: BTreeSet<&str> = KUBERNETES_KEYS.iter().copied().collect();
    assert_eq!(documented, accepted);
    assert!(
        LOCAL_KEYS.is_empty(),
        "the README says local providers take no keys"
    );
}

#[test]
fn nested_keys_are_documented_in_their_row() {
    let rows = documented_rows();
    let row = |key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .map(|(_, row)| row.clone())
            .unwrap()
    };
    let images = row("builder_images");
    for (key, _) in BUILDER_IMAGE_KEYS {
        assert!(images.contains(&format!("`{key}`")), "builder_images.{key}");
    }
    let retention = row("retention");
    for key in ["keep_last", "ttl_seconds"] {
        assert!(retention.contains(&format!("`{key}`")), "retention.{key}");
    }
}
