//! Implicit budgets hold against every evictor, not only the kordon that keeps them:
//! while a drain runs they are real PodDisruptionBudgets, which another kordon and
//! `kubectl drain` meet at the Eviction API. A watcher in the test counts Ready pods.
mod support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::watcher::ReadyWatcher;
use support::{Run, TestEnv, eventually};

const SLOW_READY: PodOptions = PodOptions {
    ready_delay: Some("1500ms"),
    ..fixtures::SPREAD
};

const KORDONS: &str = "app.kubernetes.io/managed-by=kordon";

async fn kordon_budgets(env: &TestEnv) -> Vec<String> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(support::client().await, env.ns());
    api.list(&ListParams::default().labels(KORDONS))
        .await
        .expect("list budgets")
        .items
        .into_iter()
        .filter_map(|b| b.metadata.name)
        .collect()
}

/// Waits until kordon has left no budget and no lease in the namespace.
async fn nothing_left(env: &TestEnv) {
    let leases: Api<Lease> = Api::namespaced(support::client().await, env.ns());
    eventually(
        "kordon's budgets and leases to be gone",
        Duration::from_secs(60),
        || async {
            let left = leases
                .list(&ListParams::default().labels(KORDONS))
                .await
                .expect("list leases")
                .items;
            left.is_empty() && kordon_budgets(env).await.is_empty()
        },
    )
    .await;
}

/// Its holder stopped renewing it more than its duration ago.
fn expired(lease: &Lease) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let expires = renewed.0 + jiff::SignedDuration::from_secs(i64::from(seconds));
    expires < jiff::Timestamp::now()
}

/// Waits until a drain has made web's implicit budget real.
async fn shared_budget_exists(env: &TestEnv) {
    eventually(
        "kordon's shared budget for web",
        Duration::from_secs(30),
        || async { kordon_budgets(env).await == ["kordon-deployment-web"] },
    )
    .await;
}

fn finish(child: std::process::Child) -> Run {
    Run::from(child.wait_with_output().expect("kordon"))
}

fn spawn(mut command: std::process::Command, args: &[&str]) -> std::process::Child {
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// `replicas` pods of web, all on node-1 (`ready_delay` long each).
async fn on_node_1(name: &str, replicas: i32, ready_delay: &'static str) -> (TestEnv, String) {
    let mut env = TestEnv::new(name).await;
    let n1 = env.add_node("node-1").await;
    let co_located = PodOptions {
        ready_delay: Some(ready_delay),
        spread: false,
        ..SLOW_READY
    };
    env.create(&fixtures::deployment(
        env.ns(),
        "web",
        replicas,
        &co_located,
    ))
    .await;
    env.wait_ready("app=web", replicas as usize).await;
    (env, n1)
}

/// web: 4 replicas, two on node-1 and two on node-2, and an empty node-3 to move to.
async fn split_over_two_nodes(name: &str) -> (TestEnv, String, String) {
    let mut env = TestEnv::new(name).await;
    let n1 = env.add_node("node-1").await;
    let n2 = env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 4, &SLOW_READY))
        .await;
    env.wait_ready("app=web", 4).await;
    assert_eq!(env.pods_on(&n1).await.len(), 2);
    env.add_node("node-3").await;
    (env, n1, n2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kordon_drains_at_once_keep_one_implicit_budget_between_them() {
    let (env, n1, n2) = split_over_two_nodes("twodrains").await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;

    let a = spawn(env.kordon(), &["drain", &n1, "--timeout", "120s"]);
    let b = spawn(env.kordon(), &["drain", &n2, "--timeout", "120s"]);
    let (a, b) = (finish(a), finish(b));
    a.assert_ok();
    b.assert_ok();

    // 4 replicas, maxUnavailable 25% -> 1, across both drains.
    assert!(
        watcher.min_ready() >= 3,
        "min Ready was {}:\n{}\n{}",
        watcher.min_ready(),
        a.stdout,
        b.stdout
    );
    nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_meets_kordons_implicit_budget() {
    // web: 3 replicas on node-1 (kordon's), 1 on node-2 (kubectl's).
    let (mut env, n1) = on_node_1("withkubectl", 3, "1500ms").await;
    let n2 = env.add_node("node-2").await;
    // The fourth replica goes to node-2 while node-1 is cordoned.
    let kubectl = |args: &[&str]| {
        let status = env.kubectl().args(args).status().expect("kubectl");
        assert!(status.success(), "kubectl {args:?}");
    };
    kubectl(&["cordon", &n1]);
    kubectl(&[
        "scale",
        "deployment",
        "web",
        "-n",
        env.ns(),
        "--replicas",
        "4",
    ]);
    env.wait_ready("app=web", 4).await;
    kubectl(&["uncordon", &n1]);
    assert_eq!(env.pods_on(&n2).await.len(), 1);
    env.add_node("node-3").await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;

    let ours = spawn(env.kordon(), &["drain", &n1, "--timeout", "120s"]);
    shared_budget_exists(&env).await;
    let theirs = spawn(
        env.kubectl(),
        &["drain", &n2, "--ignore-daemonsets", "--timeout=120s"],
    );
    let (ours, theirs) = (finish(ours), finish(theirs));
    ours.assert_ok();
    assert_eq!(theirs.code, Some(0), "{theirs:#?}");

    assert!(
        watcher.min_ready() >= 3,
        "min Ready was {}:\n{}\n{}",
        watcher.min_ready(),
        ours.stdout,
        theirs.stderr
    );
    nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_drain_leaves_no_budget_once_the_next_one_runs() {
    // Replacements that take 10 s to be Ready keep the drain mid-run.
    let (mut env, n1) = on_node_1("killed", 4, "10s").await;
    env.add_node("node-2").await;

    let mut first = spawn(
        env.kordon(),
        &[
            "drain",
            &n1,
            "--timeout",
            "120s",
            "--shared-budget-lease",
            "2s",
        ],
    );
    shared_budget_exists(&env).await;
    first.kill().expect("kill -9");
    let _ = first.wait();
    assert_eq!(kordon_budgets(&env).await, ["kordon-deployment-web"]);

    // The next drain in the namespace clears what the killed one left once its lease
    // has expired, then keeps (and releases) its own.
    let leases: Api<Lease> = Api::namespaced(support::client().await, env.ns());
    eventually(
        "the killed drain's lease to expire",
        Duration::from_secs(30),
        || async {
            let listed = leases.list(&ListParams::default().labels(KORDONS)).await;
            listed.expect("list leases").items.iter().all(expired)
        },
    )
    .await;
    env.run_kordon(&["drain", &n1, "--timeout", "120s"])
        .assert_ok();
    nothing_left(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_budget_created_mid_drain_takes_over_from_kordons() {
    let (mut env, n1) = on_node_1("userpdb", 4, "1500ms").await;
    env.add_node("node-2").await;
    let watcher = ReadyWatcher::start(env.pods(), "app=web").await;

    let drain = spawn(env.kordon(), &["drain", &n1, "--timeout", "120s"]);
    shared_budget_exists(&env).await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb("web", "web", ("maxUnavailable", json!(1))))
        .await;
    let drain = finish(drain);
    drain.assert_ok();

    assert!(
        watcher.min_ready() >= 3,
        "min Ready was {}",
        watcher.min_ready()
    );
    nothing_left(&env).await;
    let api: Api<PodDisruptionBudget> = Api::namespaced(support::client().await, env.ns());
    let theirs = api.get_opt("web").await.expect("get");
    let theirs = theirs.expect("the user's budget stays");
    // Marked, so that the disruption controller counted its pods again after the
    // handover (without it, its status can say too few healthy pods for hours).
    assert!(
        theirs
            .annotations()
            .contains_key("kordon.dev/budget-handover"),
        "the user's budget is marked at the handover: {:?}",
        theirs.annotations()
    );
}
