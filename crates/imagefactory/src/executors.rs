//! The executors a dispatcher hands builds to, built from settings: the local
//! executor always, Tekton when IF_BUILD_TEKTON_ENABLED.

use std::sync::Arc;

use anyhow::Context;
use imagefactory_dispatch::Executors;
use imagefactory_exec::local::LocalExecutor;
use imagefactory_exec::tekton::TektonExecutor;

use crate::settings::ExecutorSettings;

pub async fn build(settings: &ExecutorSettings) -> anyhow::Result<Executors> {
    let local = LocalExecutor::new(settings.local.settings());
    let tekton = if settings.dispatcher.tekton_enabled {
        let executor = TektonExecutor::new(settings.tekton.settings())
            .await
            .context("setting up the Tekton executor (IF_BUILD_TEKTON_*)")?;
        Some(Arc::new(executor) as Arc<dyn imagefactory_exec::Executor>)
    } else {
        tracing::info!(
            when_disabled = ?settings.dispatcher.tekton_disabled,
            "Tekton disabled (IF_BUILD_TEKTON_ENABLED=false): Kubernetes builds run on the local executor (allowed tenants), or fail under IF_BUILD_TEKTON_DISABLED=fail"
        );
        None
    };
    Ok(Executors {
        tekton,
        local: Some(Arc::new(local)),
    })
}
