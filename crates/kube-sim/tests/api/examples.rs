//! Every Tekton example and catalog Task from shared/tekton is accepted by the
//! API (created through kube-rs, kinds resolved by discovery). Whether runs
//! succeed is the Tekton simulation's business.

use crate::*;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;
use std::path::PathBuf;

fn shared_tekton() -> Option<PathBuf> {
    // In CI shared/ sits beside the clone; on the dev machine at /work/shared.
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tekton");
    [beside, PathBuf::from("/work/shared/tekton")]
        .into_iter()
        .find(|p| p.join("examples").is_dir())
}

#[tokio::test]
async fn every_example_and_catalog_task_is_accepted() {
    let Some(root) = shared_tekton() else {
        panic!("shared/tekton not found beside the repository or at /work/shared/tekton");
    };
    let (_sim, client) = start().await;
    let mut files: Vec<PathBuf> = ["examples", "catalog"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    let mut created = 0;
    for (i, file) in files.iter().enumerate() {
        let ns = format!("example-{i}");
        namespace(&client, &ns).await;
        let text = std::fs::read_to_string(file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.into_iter().filter(|d| d.is_object()) {
            let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (
                    String::new(),
                    doc["apiVersion"].as_str().unwrap().to_string(),
                ),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
            let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{}: {gvk:?} not served: {e}", file.display()));
            let api: Api<DynamicObject> = match caps.scope {
                kube::discovery::Scope::Namespaced => {
                    Api::namespaced_with(client.clone(), &ns, &ar)
                }
                kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
            };
            let obj: DynamicObject = serde_json::from_value(doc).unwrap();
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("{}: creating {gvk:?} failed: {e}", file.display()));
            created += 1;
        }
    }
    assert!(created >= 50, "created {created} objects");
}
