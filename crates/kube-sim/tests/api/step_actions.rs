//! StepActions are served as `tekton.dev/v1beta1` (storage) and `v1alpha1`,
//! as Tekton's CRD declares them; admission checks them, `ref:` steps and
//! steps completed by a `stepTemplate` the way Tekton's webhook does.

use crate::*;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

const DENIED: &str = "admission webhook \"validation.webhook.pipeline.tekton.dev\" denied the request: validation failed: ";

#[tokio::test]
async fn step_actions_are_served_in_both_versions_and_validated() {
    let (_sim, client) = start().await;
    namespace(&client, "sa").await;
    let alpha: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "sa",
        &resource("tekton.dev", "v1alpha1", "StepAction", "stepactions"),
    );
    let beta: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "sa",
        &resource("tekton.dev", "v1beta1", "StepAction", "stepactions"),
    );
    let action = json!({
        "apiVersion": "tekton.dev/v1alpha1", "kind": "StepAction",
        "metadata": {"name": "hello"},
        "spec": {"image": "alpine", "script": "echo hi"}
    });
    let made = alpha
        .create(&PostParams::default(), &obj(action))
        .await
        .unwrap();
    assert_eq!(made.types.unwrap().api_version, "tekton.dev/v1alpha1");
    let read = beta.get("hello").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "tekton.dev/v1beta1");
    assert_eq!(read.data["spec"]["image"], "alpine");
    assert_eq!(
        alpha.get("hello").await.unwrap().data["spec"]["script"],
        "echo hi"
    );

    let bad = json!({
        "apiVersion": "tekton.dev/v1beta1", "kind": "StepAction",
        "metadata": {"name": "bad"},
        "spec": {"script": "echo", "command": ["echo"]}
    });
    let e = api_error(beta.create(&PostParams::default(), &obj(bad)).await);
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        format!(
            "{DENIED}missing field(s): spec.image\nexpected exactly one, got both: spec.command, spec.script"
        )
    );
}

#[tokio::test]
async fn step_template_and_ref_steps_pass_admission_as_in_tekton() {
    let (_sim, client) = start().await;
    namespace(&client, "sa").await;
    let tasks: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "sa",
        &resource("tekton.dev", "v1", "Task", "tasks"),
    );
    let task = |name: &str, spec: Value| {
        obj(
            json!({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": name}, "spec": spec}),
        )
    };
    // The image comes from the stepTemplate: accepted.
    let templated = task(
        "templated",
        json!({"stepTemplate": {"image": "alpine"}, "steps": [{"name": "a", "script": "echo"}]}),
    );
    tasks
        .create(&PostParams::default(), &templated)
        .await
        .unwrap();
    // No image anywhere: denied, as before.
    let e = api_error(
        tasks
            .create(
                &PostParams::default(),
                &task("bare", json!({"steps": [{"name": "a", "script": "echo"}]})),
            )
            .await,
    );
    assert_eq!(
        e.message,
        format!("{DENIED}missing field(s): spec.steps[0].image")
    );
    // A ref step needs no image but may not set one (or a script) itself;
    // an image from the stepTemplate is no conflict.
    let with_ref = task(
        "with-ref",
        json!({"stepTemplate": {"image": "alpine"}, "steps": [{"name": "a", "ref": {"name": "hello"}}]}),
    );
    tasks
        .create(&PostParams::default(), &with_ref)
        .await
        .unwrap();
    let conflicting = task(
        "conflicting",
        json!({"steps": [{"name": "a", "ref": {"name": "hello"}, "image": "alpine", "script": "echo"}]}),
    );
    let e = api_error(tasks.create(&PostParams::default(), &conflicting).await);
    assert_eq!(
        e.message,
        format!(
            "{DENIED}image cannot be used with Ref: spec.steps[0].image\nscript cannot be used with Ref: spec.steps[0].script"
        )
    );
}
