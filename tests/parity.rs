//! Parity with `kubectl drain`: on the same node, kordon's verdicts agree with what the
//! kubectl on this machine reports with `--dry-run=client`, for every kind of pod.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use serde_json::Value;
use support::fixtures::{self, PodOptions};
use support::{TestEnv, eventually};

/// One node holding every kind of pod the drain filters know.
async fn node_with_every_kind_of_pod() -> (TestEnv, String) {
    let mut env = TestEnv::new("parity").await;
    let node = env.add_node("node-1").await;
    env.create::<DaemonSet>(&fixtures::daemonset(env.ns(), "agent"))
        .await;
    env.create(&fixtures::deployment(
        env.ns(),
        "web",
        2,
        &PodOptions::default(),
    ))
    .await;
    let cache = PodOptions {
        empty_dir: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "cache", 2, &cache))
        .await;
    env.create(&fixtures::bare_pod("lonely", &node, &PodOptions::default()))
        .await;
    env.create::<Job>(&fixtures::job(env.ns(), "batch")).await;
    env.wait_ready("app in (agent,web,cache,lonely)", 6).await;
    let pods = env.pods();
    eventually(
        "the Job's pod to succeed",
        Duration::from_secs(30),
        || async {
            pods.list(&ListParams::default().labels("app=batch"))
                .await
                .expect("list")
                .items
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        },
    )
    .await;
    (env, node)
}

/// kubectl's refusal lines: "cannot delete … (use --flag to …): ns/a, ns/b".
fn kubectl_refusals(stderr: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in stderr.lines().filter(|l| l.starts_with("cannot delete")) {
        let flag = line
            .split("(use ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("flag");
        let pods = line.split("): ").nth(1).expect("pods");
        out.entry(flag.to_string())
            .or_default()
            .extend(pods.split(", ").map(|p| p.trim().to_string()));
    }
    out
}

fn kordon_json(run: &support::Run) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&run.stdout).expect("kordon -o json prints JSON");
    let pods = if doc.is_array() {
        doc[0]["pods"].clone()
    } else {
        doc["pods"].clone()
    };
    pods.as_array().expect("pods").clone()
}

#[tokio::test]
async fn refusals_and_evictions_match_kubectl_drain_for_every_kind_of_pod() {
    let (env, node) = node_with_every_kind_of_pod().await;

    // Without flags: the same pods refused for the same reasons.
    let kubectl = support::Run::from(
        env.kubectl()
            .args(["drain", &node, "--dry-run=client"])
            .output()
            .expect("kubectl"),
    );
    assert_ne!(kubectl.code, Some(0));
    let kordon = env.run_kordon(&["drain", &node, "-o", "json"]);
    assert_eq!(kordon.code, Some(3), "{kordon:#?}");
    // A refusal under -o json is the error document: each pod with the flags that
    // would let it go.
    let doc: Value = serde_json::from_str(&kordon.stdout).expect("kordon -o json prints JSON");
    assert_eq!(
        (
            doc["kind"].as_str(),
            doc["reason"].as_str(),
            doc["exit"].as_u64()
        ),
        (Some("Error"), Some("Refused"), Some(3)),
        "{doc:#}"
    );
    let mut ours: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in doc["pods"].as_array().expect("pods") {
        for flag in p["flags"].as_array().expect("flags") {
            ours.entry(flag.as_str().expect("flag").to_string())
                .or_default()
                .insert(p["pod"].as_str().expect("pod").to_string());
        }
    }
    assert_eq!(
        ours,
        kubectl_refusals(&kubectl.stderr),
        "kubectl said:\n{}",
        kubectl.stderr
    );
    assert_eq!(
        ours.len(),
        3,
        "all three drain issues are present: {ours:?}"
    );

    // With every flag: the same pods evicted and the same DaemonSet pods left alone.
    let flags = ["--ignore-daemonsets", "--delete-emptydir-data", "--force"];
    let mut args = vec!["drain", node.as_str(), "--dry-run=client"];
    args.extend(flags);
    let kubectl = support::Run::from(env.kubectl().args(&args).output().expect("kubectl"));
    assert_eq!(kubectl.code, Some(0), "{kubectl:#?}");
    let kubectl_evicted: BTreeSet<String> = kubectl
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("evicting pod "))
        .map(|l| l.trim_end_matches(" (dry run)").to_string())
        .collect();
    // The test's one node leaves the replacements nowhere to go, which kubectl does
    // not look at and kordon refuses without --allow-pending.
    args.extend(["--allow-pending", "-o", "json"]);
    let kordon = env.run_kordon(&args);
    kordon.assert_ok();
    let pods = kordon_json(&kordon);
    let ours_evicted: BTreeSet<String> = pods
        .iter()
        .filter(|p| p["verdict"] == "evict")
        .map(|p| p["pod"].as_str().expect("pod").to_string())
        .collect();
    assert_eq!(ours_evicted, kubectl_evicted);
    assert_eq!(
        ours_evicted.len(),
        6,
        "web x2, cache x2, lonely and the finished Job pod"
    );
    let skipped: Vec<&Value> = pods.iter().filter(|p| p["verdict"] == "skip").collect();
    assert_eq!(skipped.len(), 1);
    assert!(kubectl.stderr.contains(&format!(
        "ignoring DaemonSet-managed Pods: {}",
        skipped[0]["pod"].as_str().expect("pod")
    )));
}
