//! A node that is down (the article's NotReady) on the real control plane: a node no
//! kubelet serves any more (KWOK lets go of it), so a deletion there never completes.
//! Refused by default with the flag named; with `--node-down`, the out-of-service taint
//! lets the control plane delete its pods and every workload's replacement, a
//! StatefulSet's included, becomes Ready elsewhere; `uncordon` lifts the taint.
mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::{TestEnv, eventually};

const TAINT: &str = "node.kubernetes.io/out-of-service";

/// KWOK stops playing the node's kubelet: it confirms no deletion of the node's pods
/// (testbed/stages.yaml.in), and the node's Ready condition goes Unknown with the
/// heartbeat it last had, as the node lifecycle controller would set it.
async fn take_down(env: &TestEnv, node: &str) {
    let gone =
        json!({ "metadata": { "annotations": { "kubelet-gone.stage.kwok.x-k8s.io": "true" } } });
    for pod in env.pods_on(node).await {
        let name = pod.metadata.name.unwrap_or_default();
        env.pods()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&gone))
            .await
            .expect("mark the pod's kubelet gone");
    }
    let nodes: Api<Node> = Api::all(env.client.clone());
    // KWOK reports nothing more for the node.
    let silent = json!({ "metadata": { "annotations": { "kwok.x-k8s.io/status": "custom" } } });
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&silent))
        .await
        .expect("silence the node");
    // Until it stays Unknown: KWOK takes a moment to see the annotation, and a heartbeat
    // in flight may still overwrite it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..2 {
        stays_unknown(&nodes, node).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn stays_unknown(nodes: &Api<Node>, node: &str) {
    eventually(
        "the node to be Unknown",
        Duration::from_secs(30),
        || async {
            let n = nodes.get_status(node).await.expect("node");
            let mut conditions = n.status.and_then(|s| s.conditions).unwrap_or_default();
            let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
                return false;
            };
            if ready.status == "Unknown" {
                return true;
            }
            ready.status = "Unknown".into();
            ready.reason = Some("NodeStatusUnknown".into());
            nodes
                .patch_status(
                    node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "conditions": conditions } })),
                )
                .await
                .expect("set Unknown");
            false
        },
    )
    .await;
}

/// KWOK goes on renewing the node's lease every 10 s, which a down node's kubelet would
/// not: the test's threshold is a second, taken 2 s after a renewal.
async fn after_a_renewal(env: &TestEnv, node: &str) {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    eventually(
        "the lease to be 2 s old",
        Duration::from_secs(30),
        || async {
            let renewed = leases
                .get(node)
                .await
                .ok()
                .and_then(|l| l.spec?.renew_time)
                .map(|t| t.0);
            renewed.is_some_and(|t| {
                let age = jiff::Timestamp::now().duration_since(t);
                age > jiff::SignedDuration::from_secs(2) && age < jiff::SignedDuration::from_secs(5)
            })
        },
    )
    .await;
}

fn tainted(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_is_refused_by_default_and_with_node_down_its_workloads_move() {
    let mut env = TestEnv::new("node-down").await;
    let down = env.add_node("node-1").await;
    let spread = PodOptions {
        spread: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 2, &spread))
        .await;
    let pinned = PodOptions {
        pin_to: Some(down.clone()),
        ..Default::default()
    };
    env.create(&fixtures::statefulset(env.ns(), "db", 1, &pinned))
        .await;
    env.wait_ready("app=web", 2).await;
    env.wait_ready("app=db", 1).await;
    // The StatefulSet may go anywhere once node-1 is gone: unpin it for its replacement.
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(env.client.clone(), env.ns());
    let other = env.add_node("node-2").await;
    take_down(&env, &down).await;

    // Really down: a pod deleted there stays terminating, no kubelet confirms it.
    let stuck = env
        .pods_on(&down)
        .await
        .into_iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-"))
        })
        .and_then(|p| p.metadata.name)
        .expect("a web pod on the down node");
    env.pods()
        .delete(&stuck, &kube::api::DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let terminating = env.pods().get_opt(&stuck).await.expect("get");
    assert!(
        terminating.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "{stuck} stays terminating on a down node"
    );
    let before = env.pod_uids().await;

    // Refused by default, with the flag named; nothing changes.
    let refused = env.run_kordon(&["drain", &down, "--ignore-daemonsets"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("--node-down"), "{}", refused.stderr);
    // Silent for less than --node-down-after: refused too.
    let early = env.run_kordon(&["drain", &down, "--node-down", "--node-down-after", "1h"]);
    assert_eq!(early.code, Some(1), "{early:#?}");
    assert!(
        early.stderr.contains("it must be silent to count as down"),
        "{}",
        early.stderr
    );
    assert!(!env.is_cordoned(&down).await);
    assert_eq!(env.pod_uids().await, before, "nothing was deleted");
    // A Ready node is not down.
    let ready = env.run_kordon(&["drain", &other, "--node-down"]);
    assert_eq!(ready.code, Some(1), "{ready:#?}");
    assert!(ready.stderr.contains("is Ready"), "{}", ready.stderr);

    // The StatefulSet's replacement must be free to land on node-2.
    let unpin = json!({ "spec": { "template": { "spec": { "nodeSelector": {
        "kubernetes.io/hostname": null,
    } } } } });
    sets.patch("db", &PatchParams::default(), &Patch::Merge(&unpin))
        .await
        .expect("unpin db");
    after_a_renewal(&env, &down).await;
    let moved = tokio::task::spawn_blocking({
        let mut cmd = env.kordon();
        cmd.args([
            "drain",
            &down,
            "--node-down",
            "--node-down-after",
            "1s",
            "--timeout",
            "3m",
        ]);
        move || cmd.output()
    })
    .await
    .expect("join")
    .expect("run kordon");
    let said = String::from_utf8_lossy(&moved.stderr).to_string()
        + &String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{said}");
    assert!(said.contains(TAINT), "says what it did: {said}");
    let node = env.get_node(&down).await;
    assert!(tainted(&node) && env.is_cordoned(&down).await);
    // Every workload is whole again, off the down node.
    for (app, count) in [("web", 2), ("db", 1)] {
        let pods = env.wait_ready(&format!("app={app}"), count).await;
        assert!(
            pods.iter()
                .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&other)),
            "{app} runs on {other}"
        );
    }
    // Back: uncordon lifts kordon's taint with its cordon.
    let back = env.run_kordon(&["uncordon", &down]);
    assert_eq!(back.code, Some(0), "{back:#?}");
    eventually(
        "the taint to be lifted",
        Duration::from_secs(10),
        || async { !tainted(&env.get_node(&down).await) },
    )
    .await;
    assert!(!env.is_cordoned(&down).await);
}
