//! The testbed itself, tested: the behaviour of the real control plane that kordon's
//! claims rest on (scheduling onto fake nodes, PDB-guarded evictions, replacement by the
//! ReplicaSet controller, pod lifecycle that takes real time).
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{EvictParams, PostParams};
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::{TestEnv, eventually};

/// Two nodes, a Deployment of 4 with a PDB of maxUnavailable 1, all Ready.
async fn four_replicas_with_pdb(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    env.add_node("node-1").await;
    env.add_node("node-2").await;
    let opts = PodOptions {
        spread: true,
        ..Default::default()
    };
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(
            &PostParams::default(),
            &fixtures::deployment(env.ns(), "web", 4, &opts),
        )
        .await
        .expect("create deployment");
    Api::<PodDisruptionBudget>::namespaced(env.client.clone(), env.ns())
        .create(
            &PostParams::default(),
            &fixtures::pdb("web", "web", ("maxUnavailable", json!(1))),
        )
        .await
        .expect("create pdb");
    env.wait_ready("app=web", 4).await;
    wait_disruptions_allowed(&env, "web", 1).await;
    env
}

async fn wait_disruptions_allowed(env: &TestEnv, pdb: &str, allowed: i32) {
    let api: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), env.ns());
    eventually(
        &format!("PDB {pdb} allowing {allowed}"),
        Duration::from_secs(30),
        || async {
            let pdb = api.get(pdb).await.expect("get pdb");
            pdb.status.map(|s| s.disruptions_allowed) == Some(allowed)
        },
    )
    .await;
}

fn is_429(result: &Result<kube::core::Status, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 429)
}

#[tokio::test]
async fn deployment_with_pdb_is_scheduled_onto_fake_nodes_and_becomes_ready() {
    let env = four_replicas_with_pdb("sched").await;
    let on_1 = env.pods_on(&env.node("node-1")).await.len();
    let on_2 = env.pods_on(&env.node("node-2")).await.len();
    assert_eq!(
        (on_1, on_2),
        (2, 2),
        "the spread puts two pods on each node"
    );
}

#[tokio::test]
async fn allowed_eviction_is_replaced_elsewhere_and_a_concurrent_one_gets_429() {
    let env = four_replicas_with_pdb("evict").await;
    let node_2 = env.node("node-2");
    env.kubectl()
        .args(["cordon", &node_2])
        .output()
        .expect("kubectl cordon");
    let victims = env.pods_on(&node_2).await;
    assert_eq!(victims.len(), 2);
    let names: Vec<String> = victims
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();

    let pods = env.pods();
    let params = EvictParams::default();
    let (first, second) = tokio::join!(
        pods.evict(&names[0], &params),
        pods.evict(&names[1], &params)
    );
    let outcomes = [&first, &second];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one eviction fits the budget: {first:?} / {second:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|r| is_429(r)).count(),
        1,
        "the other is answered 429 while the budget is spent"
    );

    // The ReplicaSet replaces the evicted pod on the node that is still schedulable.
    env.wait_ready("app=web", 4).await;
    assert_eq!(env.pods_on(&env.node("node-1")).await.len(), 3);
    assert_eq!(env.pods_on(&node_2).await.len(), 1);
}

#[tokio::test]
async fn deleted_pod_disappears_after_its_delay_capped_by_grace_period() {
    let mut env = TestEnv::new("delete").await;
    let node = env.add_node("node-1").await;
    let pods = env.pods();
    let slow = PodOptions {
        delete_delay: Some("3s"),
        grace_period: Some(30),
        ..Default::default()
    };
    let capped = PodOptions {
        delete_delay: Some("60s"),
        ..Default::default()
    };
    for (name, opts) in [("slow", &slow), ("capped", &capped)] {
        pods.create(
            &PostParams::default(),
            &fixtures::bare_pod(name, &node, opts),
        )
        .await
        .expect("create pod");
    }
    env.wait_ready("app in (slow,capped)", 2).await;

    let started = Instant::now();
    let (slow_gone, capped_gone) = tokio::join!(
        support::delete_and_wait(&pods, "slow", 30),
        support::delete_and_wait(&pods, "capped", 2)
    );
    assert!(
        slow_gone >= Duration::from_millis(2900) && slow_gone < Duration::from_secs(25),
        "a pod with a 3s delete delay and 30s grace lingers about 3s, gone after {slow_gone:?}"
    );
    assert!(
        capped_gone < Duration::from_secs(30),
        "a 2s grace period caps a 60s delay; gone after {capped_gone:?} (started {:?} ago)",
        started.elapsed()
    );
}

#[tokio::test]
async fn pod_becomes_ready_only_after_its_ready_delay() {
    let mut env = TestEnv::new("ready").await;
    let node = env.add_node("node-1").await;
    let opts = PodOptions {
        ready_delay: Some("2s"),
        ..Default::default()
    };
    let started = Instant::now();
    env.pods()
        .create(
            &PostParams::default(),
            &fixtures::bare_pod("late", &node, &opts),
        )
        .await
        .expect("create pod");
    env.wait_ready("app=late", 1).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
}
