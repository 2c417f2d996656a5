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

/// `plan --fleet`: a roll of four nodes in two zones, two at a time but one per zone,
/// zone b first, each node taken as 5 minutes: b's nodes one after the other, then a's,
/// each batch when the last ends; the round's end; and nothing on the nodes changed.
#[tokio::test]
async fn a_fleet_forecast_follows_the_rolls_rules_and_changes_nothing() {
    let mut env = TestEnv::new("forecast").await;
    let mut nodes = Vec::new();
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        let node = env.add_node(name).await;
        let labelled = env
            .kubectl()
            .args([
                "label",
                "node",
                &node,
                &format!("{}={zone}", support::watcher::ZONE),
            ])
            .output()
            .expect("kubectl label");
        assert!(labelled.status.success(), "{labelled:?}");
        nodes.push(node);
    }
    let before: Vec<_> = futures::future::join_all(nodes.iter().map(|n| env.get_node(n))).await;
    let selector = format!("{}={}", support::ENV_LABEL, env.ns());
    let zone_1 = format!("{}=1", support::watcher::ZONE);
    let zone_b = format!("{}=b", support::watcher::ZONE);
    let args = [
        "plan",
        "--fleet",
        "-l",
        &selector,
        "--max-unavailable",
        "2",
        "--max-unavailable-per",
        &zone_1,
        "--sequence",
        &zone_b,
        "--order",
        "name",
        "--expect-node-time",
        "5m",
        "-o",
        "json",
    ];
    let run = env.run_kordon(&args);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let forecast = run.json();
    let rows: Vec<(String, u64)> = forecast["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e["batch"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [("b1", 1), ("b2", 2), ("a1", 3), ("a2", 4)]
        .iter()
        .map(|(n, b)| (env.node(n), *b))
        .collect();
    assert_eq!(rows, expected, "{forecast:#}");
    let time = |e: &serde_json::Value, k: &str| {
        e[k].as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .expect("a time")
    };
    let entries = forecast["nodes"].as_array().expect("nodes");
    for pair in entries.windows(2) {
        assert_eq!(
            time(&pair[1], "starts"),
            time(&pair[0], "ends"),
            "{forecast:#}"
        );
    }
    let first = time(&entries[0], "starts");
    assert_eq!(
        time(&forecast, "ends").duration_since(first),
        jiff::SignedDuration::from_mins(20),
        "{forecast:#}"
    );
    assert!(
        entries[2]["waitsFor"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.ends_with("first")))),
        "{forecast:#}"
    );
    assert_eq!(forecast["nodeSeconds"], 300);
    let text = env.run_kordon(&args[..args.len() - 2]);
    assert!(
        text.stdout.contains("4 node(s) in 4 batch(es), done by"),
        "{}",
        text.stdout
    );
    let after: Vec<_> = futures::future::join_all(nodes.iter().map(|n| env.get_node(n))).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.spec, &b.metadata.annotations, &b.metadata.labels),
            (&a.spec, &a.metadata.annotations, &a.metadata.labels),
            "nothing changed"
        );
    }
}
