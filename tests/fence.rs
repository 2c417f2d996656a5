//! Fences against other disruptors on the real control plane: while kordon has a node in
//! maintenance it carries `karpenter.sh/do-not-disrupt` and
//! `cluster-autoscaler.kubernetes.io/scale-down-disabled` set to "true", and afterwards
//! each is exactly as it was: a user's own value kept, an absent one removed. `maintain`,
//! `roll` and a NodeMaintenance fence; a drain alone does not.
mod support;

use std::collections::BTreeMap;

use kordon::api::node_maintenance::StatusPhase;
use serde_json::json;
use support::TestEnv;
use support::nm::{Controller, create, delete, wait_condition};

const DND: &str = "karpenter.sh/do-not-disrupt";
const SDD: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
const FENCED: &str = "kordon.dev/fenced";

/// The user's own value on one fence, set before kordon comes.
fn annotate(env: &TestEnv, node: &str, key: &str, value: &str) {
    let out = env
        .kubectl()
        .args(["annotate", "node", node, &format!("{key}={value}")])
        .output()
        .expect("kubectl annotate");
    assert!(out.status.success(), "{out:?}");
}

/// The fences and kordon's record on the node now.
async fn fences(env: &TestEnv, node: &str) -> BTreeMap<String, String> {
    env.get_node(node)
        .await
        .metadata
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| [DND, SDD, FENCED].contains(&k.as_str()))
        .collect()
}

fn of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A maintenance command that writes the node's fences, as kubectl sees them while
/// the work runs, to a file; returns the command and the file.
fn snapshot_command(env: &TestEnv, tag: &str) -> (String, std::path::PathBuf) {
    let file = std::env::temp_dir().join(format!("kordon-fence-{}-{tag}", env.id));
    let script = format!(
        "kubectl --kubeconfig {} get node \"$KORDON_NODE\" -o jsonpath='{{.metadata.annotations}}' > {}",
        support::kubeconfig().display(),
        file.display()
    );
    (script, file)
}

/// The fences the command saw during the work.
fn seen_during(file: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file).expect("the command ran");
    let _ = std::fs::remove_file(file);
    let all: BTreeMap<String, String> = serde_json::from_str(&text).expect("annotations");
    all.into_iter()
        .filter(|(k, _)| [DND, SDD, FENCED].contains(&k.as_str()))
        .map(|(k, v)| {
            let v = if k == FENCED { "…".into() } else { v };
            (k, v)
        })
        .collect()
}

#[tokio::test]
async fn maintain_fences_the_node_during_the_work_and_restores_the_users_values() {
    let env = TestEnv::two_nodes_with_web("fence-maintain").await;
    let node = env.node("node-2");
    annotate(&env, &node, SDD, "false");
    let (script, file) = snapshot_command(&env, "maintain");

    let run = env.run_kordon(&["maintain", &node, "--", "sh", "-c", &script]);
    run.assert_ok();
    assert_eq!(
        seen_during(&file),
        of(&[(DND, "true"), (SDD, "true"), (FENCED, "…")]),
        "fenced while the work runs"
    );
    assert_eq!(
        fences(&env, &node).await,
        of(&[(SDD, "false")]),
        "the user's value is back, the absent one removed, the record gone"
    );
}

#[tokio::test]
async fn a_failed_maintenance_stays_fenced_until_uncordon_puts_it_back() {
    let env = TestEnv::two_nodes_with_web("fence-failed").await;
    let node = env.node("node-2");
    annotate(&env, &node, DND, "true");
    let run = env.run_kordon(&["maintain", &node, "--", "false"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let during = fences(&env, &node).await;
    assert_eq!(
        (during.get(DND), during.get(SDD)),
        (Some(&"true".to_string()), Some(&"true".to_string())),
        "a node left cordoned stays fenced: {during:?}"
    );
    assert!(during.contains_key(FENCED));

    // Another process puts it back from the record on the node.
    env.run_kordon(&["uncordon", &node]).assert_ok();
    assert_eq!(fences(&env, &node).await, of(&[(DND, "true")]));
}

#[tokio::test]
async fn a_drain_alone_puts_up_no_fence() {
    let env = TestEnv::two_nodes_with_web("fence-drain").await;
    let node = env.node("node-2");
    env.run_kordon(&["drain", &node]).assert_ok();
    assert!(env.is_cordoned(&node).await);
    assert_eq!(fences(&env, &node).await, of(&[]));
}

#[tokio::test]
async fn a_roll_fences_each_node_while_it_is_out() {
    let env = TestEnv::two_nodes_with_web("fence-roll").await;
    let node = env.node("node-2");
    annotate(&env, &node, SDD, "false");
    let (script, file) = snapshot_command(&env, "roll");
    let run = env.run_kordon(&[
        "roll",
        &node,
        "--lock-namespace",
        env.ns(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    run.assert_ok();
    assert_eq!(
        seen_during(&file),
        of(&[(DND, "true"), (SDD, "true"), (FENCED, "…")])
    );
    assert_eq!(fences(&env, &node).await, of(&[(SDD, "false")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_maintenance_fences_while_held_and_withdrawing_restores() {
    let env = TestEnv::two_nodes_with_web("fence-nm").await;
    let node = env.node("node-1");
    annotate(&env, &node, DND, "false");
    let _controller = Controller::start(&env);

    let name = create(&env, "fence", &node, json!({ "step": { "hold": {} } })).await;
    let held = wait_condition(&name, "Blocked", "Held").await;
    assert_eq!(
        held.status.as_ref().and_then(|s| s.phase),
        Some(StatusPhase::Maintaining)
    );
    let during = fences(&env, &node).await;
    assert_eq!(
        (during.get(DND), during.get(SDD)),
        (Some(&"true".to_string()), Some(&"true".to_string())),
        "{during:?}"
    );
    delete(&name).await;
    assert_eq!(fences(&env, &node).await, of(&[(DND, "false")]));
}
