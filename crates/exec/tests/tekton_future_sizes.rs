//! The futures that live as long as a build (the executor's `start` and
//! `reattach`, the log follower) stay within the sizes measured when their
//! loops were split and moved to `backon`: thousands of builds in flight
//! each hold one, so a loop's state must not quietly grow them.

mod tekton_support;

use std::collections::HashMap;
use std::mem::size_of_val;

use imagefactory_domain::BuildMethod;
use imagefactory_domain::provider::ProviderOwner;
use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::logclient::LogClients;
use imagefactory_exec::tekton::logs::LogFollower;
use imagefactory_exec::tekton::monitor::RunState;
use imagefactory_exec::{ExecutionRef, Executor, ExecutorKind, ProviderConnection};
use tekton_support::*;
use uuid::Uuid;

/// Bytes (debug build), as measured on main before the split; after it
/// they were 4800, 4136 and 2328.
const START_MAX: usize = 5072;
const REATTACH_MAX: usize = 4816;
const LOG_FOLLOWER_MAX: usize = 2952;

#[tokio::test]
async fn per_build_futures_do_not_grow() {
    let executor = executor().await;
    let provider = ProviderConnection {
        provider_id: Uuid::new_v4(),
        name: "unused".into(),
        tekton_enabled: true,
        config_version: 1,
        config: Err("never connected: only the futures' sizes are measured".into()),
        owner: ProviderOwner::Tenant,
    };
    let tenant = Uuid::new_v4();
    let ctx = context(BuildMethod::Kaniko, provider, tenant);
    let (_tx, stop) = no_stop();

    let start = executor.start(ctx.clone(), MemorySink::new(), stop.clone());
    let start_size = size_of_val(&*start);
    drop(start);
    let reference = ExecutionRef {
        executor: ExecutorKind::Tekton,
        provider_id: None,
        namespace: Some("ns".into()),
        name: Some("run".into()),
        uid: None,
    };
    let reattach = executor.reattach(ctx, reference, MemorySink::new(), stop);
    let reattach_size = size_of_val(&*reattach);
    drop(reattach);

    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (_state, state_rx) = tokio::sync::watch::channel(RunState::Unknown);
    let follower = LogFollower {
        log_clients: LogClients::http1(client),
        version: TektonVersion::V1,
        namespace: "ns".into(),
        sink: MemorySink::new(),
        resume: HashMap::new(),
        run_state: None,
        finished_taskruns: Default::default(),
        reads: Default::default(),
        patience: std::time::Duration::from_secs(300),
    };
    let follow = follower.run(state_rx);
    let follow_size = size_of_val(&follow);
    drop(follow);

    println!("start {start_size} B, reattach {reattach_size} B, log follower {follow_size} B");
    assert!(start_size <= START_MAX, "start future: {start_size} B");
    assert!(
        reattach_size <= REATTACH_MAX,
        "reattach future: {reattach_size} B"
    );
    assert!(
        follow_size <= LOG_FOLLOWER_MAX,
        "log follower future: {follow_size} B"
    );
}
