//! The executors a dispatcher hands builds to, built from settings: the local
//! executor always, Tekton when IF_BUILD_TEKTON_ENABLED.

use std::sync::Arc;

use imagefactory_dispatch::Executors;
use imagefactory_exec::local::LocalExecutor;

use crate::settings::ExecutorSettings;

pub async fn build(settings: &ExecutorSettings) -> anyhow::Result<Executors> {
    let local = LocalExecutor::new(settings.local.settings());
    Ok(Executors {
        tekton: None,
        local: Some(Arc::new(local)),
    })
}
