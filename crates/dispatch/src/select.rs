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

/// What a Kubernetes build does when Tekton is disabled, globally or on its
/// provider (`IF_BUILD_TEKTON_DISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WhenTektonDisabled {
    /// Run it on the local executor (a dispatcher's host), for tenants the
    /// platform admin allowed local builds; others fail saying so.
    #[default]
    Local,
    /// Fail it: builds never run on dispatcher hosts.
    Fail,
}

/// This installation's Tekton settings, as selection needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TektonPolicy {
    /// `IF_BUILD_TEKTON_ENABLED`.
    pub enabled: bool,
    /// `IF_BUILD_TEKTON_DISABLED`.
    pub when_disabled: WhenTektonDisabled,
    /// A global cluster is configured (`IF_BUILD_TEKTON_KUBECONFIG` or
    /// `IF_BUILD_TEKTON_IN_CLUSTER`) for builds without a provider.
    pub global_cluster: bool,
}

impl Default for TektonPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            when_disabled: WhenTektonDisabled::Local,
            global_cluster: false,
        }
    }
}

/// Why Tekton is off for a Kubernetes build, if it is: globally, or on its
/// provider (`provider_tekton_enabled`: `None` without a provider).
pub fn tekton_off_reason(
    enabled_globally: bool,
    provider_tekton_enabled: Option<bool>,
) -> Option<&'static str> {
    if !enabled_globally {
        Some("Tekton is disabled on this installation (IF_BUILD_TEKTON_ENABLED=false)")
    } else if provider_tekton_enabled == Some(false) {
        Some("Tekton is disabled on its infrastructure provider (tekton_enabled=false)")
    } else {
        None
    }
}

/// Kubernetes + Tekton enabled globally and on the provider → Tekton (with
/// no provider: the global cluster, if one is configured); Tekton disabled →
/// local, or a failure under `WhenTektonDisabled::Fail`; local → local;
/// anything else is a misconfiguration, reported as the message the build
/// fails with.
pub fn select_slot(
    infrastructure: InfrastructureType,
    provider: Option<&ProviderFacts>,
    policy: &TektonPolicy,
) -> Result<Slot, String> {
    match infrastructure {
        InfrastructureType::Local => Ok(Slot::Local),
        InfrastructureType::Kubernetes => {
            if let Some(p) = provider {
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
            }
            let off = tekton_off_reason(policy.enabled, provider.map(|p| p.tekton_enabled));
            if let Some(reason) = off {
                return match policy.when_disabled {
                    WhenTektonDisabled::Local => Ok(Slot::Local),
                    WhenTektonDisabled::Fail => Err(format!(
                        "cannot run a kubernetes build: {reason}, and this installation fails \
                         such builds instead of running them on a dispatcher's host \
                         (IF_BUILD_TEKTON_DISABLED=fail)"
                    )),
                };
            }
            if provider.is_none() && !policy.global_cluster {
                return Err(
                    "cannot run a kubernetes build: it names no infrastructure provider, \
                     no active global kubernetes provider exists and no global cluster \
                     (IF_BUILD_TEKTON_KUBECONFIG or IF_BUILD_TEKTON_IN_CLUSTER) is configured"
                        .to_owned(),
                );
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

    fn policy(enabled: bool, when_disabled: WhenTektonDisabled, global: bool) -> TektonPolicy {
        TektonPolicy {
            enabled,
            when_disabled,
            global_cluster: global,
        }
    }

    const ON: TektonPolicy = TektonPolicy {
        enabled: true,
        when_disabled: WhenTektonDisabled::Local,
        global_cluster: false,
    };

    #[test]
    fn kubernetes_with_tekton_everywhere_goes_to_tekton() {
        let p = k8s(true, true);
        assert_eq!(
            select_slot(InfrastructureType::Kubernetes, Some(&p), &ON),
            Ok(Slot::Tekton)
        );
    }

    #[test]
    fn local_goes_local_whatever_tekton_says() {
        for enabled in [false, true] {
            let policy = policy(enabled, WhenTektonDisabled::Fail, false);
            assert_eq!(
                select_slot(InfrastructureType::Local, None, &policy),
                Ok(Slot::Local)
            );
        }
    }

    #[test]
    fn kubernetes_with_tekton_off_runs_locally_by_default() {
        let on = k8s(true, true);
        let off = k8s(false, true);
        let global_off = policy(false, WhenTektonDisabled::Local, false);
        for p in [Some(&on), Some(&off), None] {
            assert_eq!(
                select_slot(InfrastructureType::Kubernetes, p, &global_off),
                Ok(Slot::Local),
                "{p:?}"
            );
        }
        assert_eq!(
            select_slot(InfrastructureType::Kubernetes, Some(&off), &ON),
            Ok(Slot::Local)
        );
    }

    #[test]
    fn kubernetes_with_tekton_off_fails_saying_so_when_told_to() {
        let p = k8s(true, true);
        let fail = policy(false, WhenTektonDisabled::Fail, false);
        let global = select_slot(InfrastructureType::Kubernetes, Some(&p), &fail).unwrap_err();
        assert!(global.contains("IF_BUILD_TEKTON_ENABLED=false"), "{global}");
        assert!(global.contains("IF_BUILD_TEKTON_DISABLED=fail"), "{global}");
        let off = k8s(false, true);
        let fail_on = policy(true, WhenTektonDisabled::Fail, false);
        let provider =
            select_slot(InfrastructureType::Kubernetes, Some(&off), &fail_on).unwrap_err();
        assert!(provider.contains("tekton_enabled=false"), "{provider}");
        assert!(
            provider.contains("IF_BUILD_TEKTON_DISABLED=fail"),
            "{provider}"
        );
    }

    #[test]
    fn kubernetes_without_a_provider_uses_the_global_cluster_only_when_configured() {
        let none = select_slot(InfrastructureType::Kubernetes, None, &ON).unwrap_err();
        assert!(
            none.contains("no active global kubernetes provider")
                && none.contains("IF_BUILD_TEKTON_KUBECONFIG"),
            "{none}"
        );
        let global = policy(true, WhenTektonDisabled::Local, true);
        assert_eq!(
            select_slot(InfrastructureType::Kubernetes, None, &global),
            Ok(Slot::Tekton)
        );
    }

    #[test]
    fn kubernetes_on_an_unusable_provider_fails_whatever_the_policy() {
        let global_off = policy(false, WhenTektonDisabled::Local, true);
        for policy in [ON, global_off] {
            assert!(
                select_slot(
                    InfrastructureType::Kubernetes,
                    Some(&k8s(true, false)),
                    &policy
                )
                .unwrap_err()
                .contains("disabled")
            );
            let local = ProviderFacts {
                provider_type: "local".into(),
                tekton_enabled: true,
                active: true,
            };
            assert!(select_slot(InfrastructureType::Kubernetes, Some(&local), &policy).is_err());
        }
    }
}
