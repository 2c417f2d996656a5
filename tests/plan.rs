//! `kordon plan`: its predictions hold on the real cluster, and a dump gives the same
//! answer as the live cluster.
mod support;

use serde_json::json;
use support::TestEnv;
use support::fixtures::{self, NodeSpec, PodOptions};

#[tokio::test]
async fn a_predicted_capacity_shortfall_really_happens() {
    let mut env = TestEnv::new("shortfall").await;
    let node_2 = env.add_node("node-2").await;
    let big = PodOptions {
        cpu: Some("600m"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "big", 2, &big))
        .await;
    env.wait_ready("app=big", 2).await;
    let small = NodeSpec {
        cpu: "1",
        ..Default::default()
    };
    let node_1 = env.add_node_with("node-1", small).await;

    let run = env.run_kordon(&["plan", &node_2, "-o", "json"]);
    assert_eq!(run.code, Some(3), "unsafe plan exits 3: {run:#?}");
    let plan = run.json();
    assert_eq!(plan["safe"], false, "{plan:#}");
    let nowhere = plan["fitsNowhere"].as_array().expect("fitsNowhere");
    assert_eq!(nowhere.len(), 1, "one of the two fits nowhere: {plan:#}");
    // Other tests' nodes turn it away by their labels; of this test's, node-1 is too small.
    assert_eq!(
        nowhere[0]["nodesRejecting"]["resources"], 1,
        "node-1 is too small for it: {plan:#}"
    );
    let lands: Vec<&serde_json::Value> = plan["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| &p["landsOn"])
        .collect();
    assert!(
        lands.contains(&&json!(node_1)),
        "the other lands on node-1: {plan:#}"
    );
    let at_risk = plan["atRisk"].as_array().expect("atRisk");
    assert!(
        at_risk.len() == 1
            && at_risk[0]
                .as_str()
                .is_some_and(|w| w.starts_with("Deployment")),
        "{plan:#}"
    );
    assert!(!env.is_cordoned(&node_2).await, "plan changes nothing");

    // drain and maintain refuse what the plan says would strand a replacement.
    for args in [
        vec!["drain", node_2.as_str()],
        vec!["maintain", node_2.as_str(), "--", "true"],
    ] {
        let refused = env.run_kordon(&args);
        assert_eq!(refused.code, Some(3), "{args:?}: {refused:#?}");
        assert!(
            refused
                .stderr
                .contains("no other node can take the replacement of")
                && refused
                    .stderr
                    .contains("1 node(s) lack the cpu, memory or pod slots it requests")
                && refused.stderr.contains("--allow-pending"),
            "{refused:#?}"
        );
        assert!(!env.is_cordoned(&node_2).await, "{args:?} changed nothing");
        env.wait_ready("app=big", 2).await;
    }

    let run = env.run_kordon(&[
        "drain",
        &node_2,
        "--timeout",
        "20s",
        "--allow-pending",
        "-o",
        "json",
    ]);
    run.assert_ok();
    let replacements = run.json()[0]["replacements"].clone();
    let stages: Vec<&serde_json::Value> = replacements
        .as_array()
        .expect("replacements")
        .iter()
        .map(|r| &r["stage"])
        .collect();
    assert_eq!(stages.len(), 2, "{replacements:#}");
    assert_eq!(
        stages.iter().filter(|s| **s == "Ready").count(),
        1,
        "one replacement Ready, the other Pending: {replacements:#}"
    );
    let pods = env
        .pods()
        .list(&Default::default())
        .await
        .expect("pods")
        .items;
    let pending: Vec<_> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .collect();
    assert_eq!(
        pending.len(),
        1,
        "one replacement cannot be scheduled, as predicted"
    );
}

#[tokio::test]
async fn a_safe_plan_is_followed_by_a_drain_that_succeeds_and_a_dump_plans_the_same() {
    let mut env = TestEnv::new("safeplan").await;
    env.add_node("node-1").await;
    let node_2 = env.add_node("node-2").await;
    let spread = PodOptions {
        spread: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "nginx", 4, &spread))
        .await;
    env.wait_ready("app=nginx", 4).await;

    let live = env.run_kordon(&["plan", &node_2, "-o", "json"]);
    live.assert_ok();
    let dump = std::env::temp_dir().join(format!("kordon-dump-{}.json", env.id));
    let out = env
        .kubectl()
        .args(["get", "nodes,pods,pdb,deploy,rs,sts,ds", "-A", "-o", "json"])
        .output()
        .expect("kubectl get");
    assert!(out.status.success());
    std::fs::write(&dump, &out.stdout).expect("write dump");
    let offline = support::Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_kordon"))
            .args(["plan", "--from-file"])
            .arg(&dump)
            .args([&node_2, "-o", "json"])
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("kordon"),
    );
    let _ = std::fs::remove_file(&dump);
    offline.assert_ok();
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("json");
    assert_eq!(
        parse(&live.stdout),
        parse(&offline.stdout),
        "the dump plans like the live cluster"
    );
    let plan = parse(&live.stdout);
    assert_eq!(plan["safe"], true);
    assert_eq!(
        plan["waves"], 2,
        "two pods of a 4-replica Deployment, one at a time"
    );

    let run = env.run_kordon(&["drain", &node_2]);
    run.assert_ok();
    env.wait_ready("app=nginx", 4).await;
}
