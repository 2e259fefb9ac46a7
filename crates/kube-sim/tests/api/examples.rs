//! Every example and catalog Task of the Tekton test data (the repository's
//! own fixtures, or the set `KUBE_SIM_TEKTON_DIR` names) is accepted by the API
//! (created through kube-rs, kinds resolved by discovery). Whether runs
//! succeed is the Tekton simulation's business (`tests/tekton_examples.rs`).

use crate::tekton_dirs::{tekton_dir, yaml_files};
use crate::*;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;
use std::path::Path;

#[tokio::test]
async fn every_example_and_catalog_task_is_accepted() {
    let root = tekton_dir();
    let (_sim, client) = start().await;
    let examples = yaml_files(&root, "examples");
    let catalog = yaml_files(&root, "catalog");
    assert!(
        examples.len() >= 10 && catalog.len() >= 3,
        "{}: {} examples, {} catalog files",
        root.display(),
        examples.len(),
        catalog.len()
    );
    for (i, file) in examples.iter().chain(&catalog).enumerate() {
        let ns = format!("example-{i}");
        namespace(&client, &ns).await;
        let created = create_all(&client, &ns, file).await;
        assert!(created > 0, "{}: no objects", file.display());
    }
}

/// Create every document of `file` in `ns` (cluster-scoped kinds cluster-wide).
async fn create_all(client: &kube::Client, ns: &str, file: &Path) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut created = 0;
    for doc in docs.into_iter().filter(|d| d.is_object()) {
        let api_version = doc["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{}: {gvk:?} not served: {e}", file.display()));
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let obj: DynamicObject = serde_json::from_value(doc).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{}: creating {gvk:?} failed: {e}", file.display()));
        created += 1;
    }
    created
}
