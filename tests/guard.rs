//! Zero downtime, proven by a watcher in the test (not by kordon's output): the
//! availability guard, PodDisruptionBudgets without a storm of 429s, and --surge.
mod support;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;
use support::TestEnv;
use support::fixtures::{self, PodOptions};
use support::watcher::ReadyWatcher;

const SLOW_READY: PodOptions = PodOptions {
    ready_delay: Some("1500ms"),
    delete_delay: None,
    grace_period: None,
    empty_dir: false,
    spread: false,
    pin_to: None,
    cpu: None,
    annotations: &[],
};

/// All `replicas` pods of `web` on node-1, then an empty node-2 to move to.
async fn co_located(name: &str, replicas: i32) -> (TestEnv, String) {
    let mut env = TestEnv::new(name).await;
    let node_1 = env.add_node("node-1").await;
    env.create(&fixtures::deployment(
        env.ns(),
        "web",
        replicas,
        &SLOW_READY,
    ))
    .await;
    env.wait_ready("app=web", replicas as usize).await;
    env.add_node("node-2").await;
    (env, node_1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_located_replicas_without_a_pdb_never_drop_below_their_budget() {
    let (env, node_1) = co_located("colocated", 4).await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;

    let run = env.run_kordon(&["drain", &node_1]);
    run.assert_ok();

    // 4 replicas, maxUnavailable 25% -> 1: at least 3 Ready at every moment.
    assert!(
        watcher.min_ready() >= 3,
        "min Ready was {}:\n{}",
        watcher.min_ready(),
        run.stdout
    );
    assert!(run.stdout.contains("keeps at least 3"), "{}", run.stdout);
    let ready = env.wait_ready("app=web", 4).await;
    let on_2 = env.node("node-2");
    assert!(
        ready
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(on_2.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_only_behaves_like_kubectl_and_takes_them_all_down_at_once() {
    let (env, node_1) = co_located("pdbonly", 4).await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;
    let run = env.run_kordon(&["drain", &node_1, "--budget=pdb-only"]);
    run.assert_ok();
    assert!(
        watcher.min_ready() < 3,
        "without the guard availability should drop, min Ready was {}:\n{}",
        watcher.min_ready(),
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_limited_drain_keeps_the_budget_without_a_storm_of_429s() {
    let (env, node_1) = co_located("pdbpace", 4).await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb("web", "web", ("maxUnavailable", json!(1))))
        .await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;
    let run = env.run_kordon(&["drain", &node_1]);
    run.assert_ok();
    assert!(
        watcher.min_ready() >= 3,
        "min Ready was {}",
        watcher.min_ready()
    );
    let refused = support::evictions_refused(env.ns());
    // Three pods wait their turn; each is refused about once per disruption freed.
    assert!(
        refused <= 8,
        "{refused} evictions answered 429:\n{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surge_keeps_a_single_replica_ready_throughout() {
    let (env, node_1) = co_located("surge", 1).await;
    let before = env.pod_uids().await;
    let run = env.run_kordon(&["drain", &node_1]);
    assert_eq!(
        run.code,
        Some(3),
        "a lone replica is refused at once: {run:#?}"
    );
    assert!(run.stderr.contains("needs --surge"), "{}", run.stderr);
    assert_eq!(env.pod_uids().await, before);
    assert!(!env.is_cordoned(&node_1).await);

    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;
    let run = env.run_kordon(&["drain", &node_1, "--surge"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("rollout restarted (--surge)"),
        "{}",
        run.stdout
    );
    assert_eq!(watcher.min_ready(), 1, "the single replica never went dark");
    assert!(env.pods_on(&node_1).await.is_empty());
}
