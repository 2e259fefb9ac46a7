//! Executor selection: which executor runs a build, or why none can.

use imagefactory_domain::InfrastructureType;

/// The executor slot a build needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Tekton,
    Local,
}

/// What selection needs to know about the provider a build would run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFacts {
    pub provider_type: String,
    pub tekton_enabled: bool,
    pub active: bool,
}

/// Kubernetes + Tekton enabled globally and on the provider → Tekton; local →
/// local; anything else is a misconfiguration, reported as the message the
/// build fails with.
pub fn select_slot(
    infrastructure: InfrastructureType,
    provider: Option<&ProviderFacts>,
    tekton_enabled_globally: bool,
) -> Result<Slot, String> {
    match infrastructure {
        InfrastructureType::Local => Ok(Slot::Local),
        InfrastructureType::Kubernetes => {
            if !tekton_enabled_globally {
                return Err("cannot run a kubernetes build: Tekton is disabled on this \
                            installation (IF_BUILD_TEKTON_ENABLED=false)"
                    .to_owned());
            }
            let Some(p) = provider else {
                return Err(
                    "cannot run a kubernetes build: it names no infrastructure provider \
                            and no active global kubernetes provider exists"
                        .to_owned(),
                );
            };
            if p.provider_type != "kubernetes" {
                return Err(format!(
                    "cannot run a kubernetes build on a provider of type {:?}",
                    p.provider_type
                ));
            }
            if !p.active {
                return Err(
                    "cannot run a kubernetes build: its infrastructure provider is disabled"
                        .to_owned(),
                );
            }
            if !p.tekton_enabled {
                return Err("cannot run a kubernetes build: Tekton is disabled on its \
                            infrastructure provider (tekton_enabled=false)"
                    .to_owned());
            }
            Ok(Slot::Tekton)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(tekton: bool, active: bool) -> ProviderFacts {
        ProviderFacts {
            provider_type: "kubernetes".into(),
            tekton_enabled: tekton,
            active,
        }
    }

    #[test]
    fn kubernetes_with_tekton_everywhere_goes_to_tekton() {
        let p = k8s(true, true);
        assert_eq!(
            select_slot(InfrastructureType::Kubernetes, Some(&p), true),
            Ok(Slot::Tekton)
        );
    }

    #[test]
    fn local_goes_local_whatever_tekton_says() {
        assert_eq!(
            select_slot(InfrastructureType::Local, None, false),
            Ok(Slot::Local)
        );
        assert_eq!(
            select_slot(InfrastructureType::Local, None, true),
            Ok(Slot::Local)
        );
    }

    #[test]
    fn kubernetes_with_tekton_off_fails_saying_so() {
        let p = k8s(true, true);
        let global = select_slot(InfrastructureType::Kubernetes, Some(&p), false).unwrap_err();
        assert!(global.contains("IF_BUILD_TEKTON_ENABLED=false"), "{global}");
        let off = k8s(false, true);
        let provider = select_slot(InfrastructureType::Kubernetes, Some(&off), true).unwrap_err();
        assert!(provider.contains("tekton_enabled=false"), "{provider}");
    }

    #[test]
    fn kubernetes_without_usable_provider_fails() {
        assert!(
            select_slot(InfrastructureType::Kubernetes, None, true)
                .unwrap_err()
                .contains("no active global kubernetes provider")
        );
        assert!(
            select_slot(
                InfrastructureType::Kubernetes,
                Some(&k8s(true, false)),
                true
            )
            .unwrap_err()
            .contains("disabled")
        );
        let local = ProviderFacts {
            provider_type: "local".into(),
            tekton_enabled: true,
            active: true,
        };
        assert!(select_slot(InfrastructureType::Kubernetes, Some(&local), true).is_err());
    }
}
