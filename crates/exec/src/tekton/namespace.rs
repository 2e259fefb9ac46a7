//! The namespace a tenant's builds run in: `image-factory-<first 8 chars of
//! tenant id>`, or the one a tenant's provider names (`namespace`). Either
//! way it is labelled with the tenant and never used for another.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use uuid::Uuid;

use super::error::{TektonError, describe_kube_error, is_already_exists, status_code};

pub fn namespace_name(tenant_id: Uuid) -> String {
    format!("image-factory-{}", &tenant_id.simple().to_string()[..8])
}

pub fn namespace_object(tenant_id: Uuid) -> Namespace {
    named_namespace_object(&namespace_name(tenant_id), tenant_id)
}

/// Namespace `name`, labelled as the tenant's.
pub fn named_namespace_object(name: &str, tenant_id: Uuid) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [
                    ("tenant-id".to_string(), tenant_id.to_string()),
                    ("app".to_string(), "image-factory".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Create the tenant namespace unless it exists. Another dispatcher creating it
/// at the same moment (409) is fine.
pub async fn ensure_namespace(
    client: &kube::Client,
    tenant_id: Uuid,
) -> Result<String, TektonError> {
    ensure_named_namespace(client, &namespace_name(tenant_id), tenant_id).await
}

/// Create namespace `name` for the tenant unless it exists; one labelled
/// for another tenant is refused.
pub async fn ensure_named_namespace(
    client: &kube::Client,
    name: &str,
    tenant_id: Uuid,
) -> Result<String, TektonError> {
    let name = name.to_owned();
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(&name).await {
        Ok(Some(existing)) => return check_owner(existing, &name, tenant_id),
        Ok(None) => {}
        // Tenant-scoped credentials may not read namespaces; try creating.
        Err(e) if status_code(&e) == Some(403) => {}
        Err(e) => return Err(TektonError::kube(format!("reading namespace {name}"), e)),
    }
    match api
        .create(
            &PostParams::default(),
            &named_namespace_object(&name, tenant_id),
        )
        .await
    {
        Ok(_) => Ok(name),
        // Created meanwhile: by another dispatcher, or for another tenant.
        Err(e) if is_already_exists(&e) => match api.get_opt(&name).await {
            Ok(Some(existing)) => check_owner(existing, &name, tenant_id),
            _ => Ok(name),
        },
        Err(e) if status_code(&e) == Some(403) => Err(TektonError::Build(format!(
            "the provider's credentials may not use namespace {name}: {}; create the namespace and grant the provider's identity access to it",
            describe_kube_error(&e)
        ))),
        Err(e) => Err(TektonError::kube(format!("creating namespace {name}"), e)),
    }
}

/// Namespaces are walls between tenants: one labelled for another tenant
/// (two tenant ids sharing their first 8 characters) is never used.
fn check_owner(existing: Namespace, name: &str, tenant_id: Uuid) -> Result<String, TektonError> {
    let owner = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("tenant-id"));
    match owner {
        Some(owner) if *owner != tenant_id.to_string() => Err(TektonError::Build(format!(
            "namespace {name} belongs to another tenant (label tenant-id={owner}); builds of tenant {tenant_id} cannot use it"
        ))),
        _ => Ok(name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_uses_the_first_8_hex_chars_of_the_tenant() {
        let tenant = Uuid::parse_str("0123abcd-ef01-2345-6789-abcdefabcdef").unwrap();
        assert_eq!(namespace_name(tenant), "image-factory-0123abcd");
        let ns = namespace_object(tenant);
        let labels = ns.metadata.labels.unwrap();
        assert_eq!(labels["tenant-id"], tenant.to_string());
        assert_eq!(labels["app"], "image-factory");
    }

    #[test]
    fn another_tenants_namespace_is_refused() {
        let tenant = Uuid::parse_str("0123abcd-ef01-2345-6789-abcdefabcdef").unwrap();
        let other = Uuid::parse_str("0123abcd-0000-0000-0000-000000000000").unwrap();
        assert_eq!(namespace_name(tenant), namespace_name(other));
        let err =
            check_owner(namespace_object(other), &namespace_name(tenant), tenant).unwrap_err();
        assert!(
            err.to_string().contains("belongs to another tenant"),
            "{err}"
        );
        check_owner(namespace_object(tenant), &namespace_name(tenant), tenant).unwrap();
        // A namespace an operator created by hand (no label) is used.
        check_owner(Namespace::default(), &namespace_name(tenant), tenant).unwrap();
    }
}
