//! Drain tiers on the real control plane: pods leave in the order of their type,
//! `--drain-order` and priority, each tier only once every pod of the one before is
//! gone, within their budgets; DaemonSet pods last, and only with `--evict-daemonsets`,
//! on a node already tainted so their DaemonSets do not put them back until the
//! uncordon. A watch of the test's own (`Timeline`) is the judge, not kordon's output.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::fixtures::{self, NodeSpec, PodOptions};
use support::watcher::{Moment, ReadyWatcher, Timeline, at, bound, gone, leaving};
use support::{TestEnv, eventually};

const DRAINING: &str = "kordon.dev/draining";

/// A PriorityClass of this test's own (cluster-scoped, so named after the test).
async fn priority_class(env: &TestEnv, short: &str, value: i32) -> String {
    let name = format!("{}-{short}", env.id);
    let class: PriorityClass =
        serde_json::from_value(json!({ "metadata": { "name": name }, "value": value }))
            .expect("priority class");
    Api::<PriorityClass>::all(env.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("create priority class");
    name
}

async fn drop_priority_class(env: &TestEnv, name: &str) {
    let _ = Api::<PriorityClass>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// A Deployment of four pods spread over the test's two nodes, leaving two seconds
/// after deletion (so "evicted" and "gone" are far apart), in `class` if given.
fn app(env: &TestEnv, name: &str, class: Option<&str>) -> Deployment {
    let slow = PodOptions {
        delete_delay: Some("2s"),
        spread: true,
        ..Default::default()
    };
    let mut d = fixtures::deployment(env.ns(), name, 4, &slow);
    if let Some(spec) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.priority_class_name = class.map(str::to_string);
    }
    d
}

/// The app a pod belongs to: its name up to the first `-`.
fn app_of(pod: &str) -> &str {
    pod.split('-').next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tier_is_gone_before_the_next_starts_and_budgets_hold() {
    let mut env = TestEnv::new("tiers").await;
    let node_1 = env.add_node("node-1").await;
    env.add_node("node-2").await;
    let low = priority_class(&env, "low", -10).await;
    let high = priority_class(&env, "high", 1000).await;
    // batch (priority -10), web (0, a budget of one at a time), dns (1000), and db
    // (0, but ordered last with --drain-order app=db=10).
    for (name, class) in [
        ("batch", Some(low.as_str())),
        ("web", None),
        ("dns", Some(high.as_str())),
        ("db", None),
    ] {
        env.create(&app(&env, name, class)).await;
    }
    env.create(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", json!(1)),
    ))
    .await;
    // The order the tiers must go in.
    let expected = ["batch", "web", "dns", "db"];
    for name in expected {
        env.wait_ready(&format!("app={name}"), 4).await;
    }

    // The plan shows the tiers, in order, with their pods.
    let plan = env.run_kordon(&["plan", &node_1, "--drain-order", "app=db=10", "-o", "json"]);
    plan.assert_ok();
    let tiers = plan.json()["tiers"].clone();
    let planned: Vec<(String, i64, i64, usize)> = tiers
        .as_array()
        .expect("tiers")
        .iter()
        .map(|t| {
            let pods = t["pods"].as_array().expect("pods");
            let first = pods[0]
                .as_str()
                .expect("pod")
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let app = app_of(first).to_string();
            assert!(
                pods.iter()
                    .all(|p| p.as_str().is_some_and(|p| p.contains(&format!("/{app}-"))))
            );
            (
                app,
                t["order"].as_i64().unwrap_or(-99),
                t["priority"].as_i64().unwrap_or(-99),
                pods.len(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            ("batch".to_string(), 0, -10, 2),
            ("web".to_string(), 0, 0, 2),
            ("dns".to_string(), 0, 1000, 2),
            ("db".to_string(), 10, 0, 2),
        ],
        "{}",
        plan.stdout
    );
    let text = env.run_kordon(&["plan", &node_1, "--drain-order", "app=db=10"]);
    assert!(
        text.stdout
            .contains("tier 4 (pods, order 10, priority 0): "),
        "{}",
        text.stdout
    );

    let before: Vec<String> = env
        .pods_on(&node_1)
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(before.len(), 8);
    let mut serving = Vec::new();
    for name in expected {
        serving.push((
            name,
            ReadyWatcher::start(env.pods(), &format!("app={name}")).await,
        ));
    }
    let nodes: Api<Node> = Api::all(env.client.clone());
    let timeline = Timeline::start(env.pods(), nodes, &node_1).await;
    let run = env.run_kordon(&["drain", &node_1, "--drain-order", "app=db=10", "-o", "json"]);
    run.assert_ok();
    eventually(
        "every pod of node-1 gone",
        Duration::from_secs(30),
        || async {
            let log = timeline.log();
            before.iter().all(|p| at(&log, p, gone).is_some())
        },
    )
    .await;

    // Every pod of a tier was gone before any pod of the next was evicted.
    let log = timeline.log();
    let of = |app: &'static str| before.iter().filter(move |p| app_of(p) == app);
    for pair in expected.windows(2) {
        let last_gone = of(pair[0]).filter_map(|p| at(&log, p, gone)).max();
        let first_leaving = of(pair[1]).filter_map(|p| at(&log, p, leaving)).min();
        assert!(
            last_gone < first_leaving && first_leaving.is_some(),
            "{} left before every {} pod was gone: {log:#?}",
            pair[1],
            pair[0]
        );
    }
    // Every budget held throughout: web's PodDisruptionBudget and the others' implicit
    // ones (a Deployment's maxUnavailable, 25% of 4) let one of four go at a time.
    for (name, watcher) in &serving {
        assert!(
            watcher.min_ready() >= 3,
            "{name} fell to {} Ready",
            watcher.min_ready()
        );
    }
    let report = run.json();
    assert_eq!(
        report[0]["tiers"].as_array().map(Vec::len),
        Some(4),
        "{}",
        run.stdout
    );
    drop_priority_class(&env, &low).await;
    drop_priority_class(&env, &high).await;
}

/// node-1 (with a taint of someone else's) and node-2, a DaemonSet `agent` on both, a
/// DaemonSet `everywhere` that tolerates every taint, and a Deployment `web` of two.
async fn daemons(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    let theirs =
        json!({ "key": "example.com/theirs", "value": "kept", "effect": "PreferNoSchedule" });
    env.add_node_with(
        "node-1",
        NodeSpec {
            taints: vec![theirs],
            ..Default::default()
        },
    )
    .await;
    env.add_node("node-2").await;
    env.create(&fixtures::daemonset(env.ns(), "agent")).await;
    let mut everywhere = fixtures::daemonset(env.ns(), "everywhere");
    if let Some(spec) = everywhere
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        spec.tolerations = Some(vec![
            serde_json::from_value(json!({ "operator": "Exists" })).expect("toleration"),
        ]);
    }
    env.create(&everywhere).await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    for app in ["agent", "everywhere", "web"] {
        env.wait_ready(&format!("app={app}"), 2).await;
    }
    env
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_pods_go_last_on_a_tainted_node_and_come_back_after_uncordon() {
    let env = daemons("ds-last").await;
    let node_1 = env.node("node-1");
    let on_node = env.pods_on(&node_1).await;
    let name_of = |app: &str| {
        on_node
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .find(|n| app_of(n) == app)
            .expect("pod on node-1")
    };
    let (agent, everywhere, web) = (name_of("agent"), name_of("everywhere"), name_of("web"));
    let nodes: Api<Node> = Api::all(env.client.clone());
    let timeline = Timeline::start(env.pods(), nodes.clone(), &node_1).await;

    let run = env.run_kordon(&["drain", &node_1, "--evict-daemonsets", "-o", "json"]);
    run.assert_ok();
    let report = run.json();
    let verdict = |pod: &str| {
        report[0]["pods"]
            .as_array()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p["pod"].as_str().is_some_and(|k| k.ends_with(pod)))
            })
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(verdict(&agent)["verdict"], "evict", "{}", run.stdout);
    assert_eq!(
        verdict(&agent)["replacement"]["by"],
        "daemonSet",
        "{}",
        run.stdout
    );
    assert_eq!(
        verdict(&everywhere)["reason"],
        "toleratesDrainingTaint",
        "{}",
        run.stdout
    );

    // The DaemonSet controller has seen the taint: it wants its pod on node-2 only.
    let sets: Api<DaemonSet> = Api::namespaced(env.client.clone(), env.ns());
    eventually(
        "agent scheduled on node-2 only",
        Duration::from_secs(30),
        || async {
            sets.get("agent")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.desired_number_scheduled == 1)
        },
    )
    .await;
    let log = timeline.log();
    let tainted = log
        .iter()
        .position(|m| matches!(m, Moment::Taints { keys } if keys.iter().any(|k| k == DRAINING)))
        .expect("the draining taint was put on");
    let agent_leaving = at(&log, &agent, leaving).expect("agent evicted");
    let web_gone = at(&log, &web, gone).expect("web gone");
    assert!(
        tainted < agent_leaving,
        "tainted after the eviction: {log:#?}"
    );
    assert!(
        web_gone < agent_leaving,
        "the DaemonSet pod went before web was gone: {log:#?}"
    );
    assert!(at(&log, &everywhere, leaving).is_none(), "{log:#?}");
    let recreated: Vec<&String> = log[agent_leaving..]
        .iter()
        .filter_map(bound)
        .filter(|p| app_of(p) == "agent")
        .collect();
    assert!(
        recreated.is_empty(),
        "agent came back while node-1 was out: {log:#?}"
    );
    assert!(
        env.pods_on(&node_1)
            .await
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(&agent))
    );

    // The uncordon takes kordon's taint off, keeps the other one, and the agent returns.
    // (The node lifecycle controller lifts its own `unschedulable` taint a moment later.)
    env.run_kordon(&["uncordon", &node_1]).assert_ok();
    assert!(
        !taint_keys(&env.get_node(&node_1).await)
            .iter()
            .any(|k| k == DRAINING)
    );
    eventually("only their taint left", Duration::from_secs(30), || async {
        taint_keys(&env.get_node(&node_1).await) == ["example.com/theirs"]
    })
    .await;
    env.wait_ready("app=agent", 2).await;
    assert!(env.pods_on(&node_1).await.iter().any(|p| {
        p.metadata
            .name
            .as_deref()
            .is_some_and(|n| app_of(n) == "agent")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_evict_daemonsets_daemonset_pods_stay_and_no_taint_is_set() {
    let env = daemons("ds-stay").await;
    let node_1 = env.node("node-1");
    let agents_before: Vec<Option<String>> = env
        .pods_on(&node_1)
        .await
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| app_of(n) != "web")
        })
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(agents_before.len(), 2);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let timeline = Timeline::start(env.pods(), nodes, &node_1).await;

    let run = env.run_kordon(&["drain", &node_1, "--ignore-daemonsets"]);
    run.assert_ok();
    let agents_after: Vec<Option<String>> = env
        .pods_on(&node_1)
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(agents_after, agents_before, "only web left node-1");
    let ever_tainted = timeline
        .log()
        .iter()
        .any(|m| matches!(m, Moment::Taints { keys } if keys.iter().any(|k| k == DRAINING)));
    assert!(!ever_tainted);
    env.run_kordon(&["uncordon", &node_1]).assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_maintenance_evicts_daemonset_pods_and_its_end_lifts_only_its_taint() {
    use kordon::api::node_maintenance::StatusPhase;
    use support::nm::{Controller, create, delete, wait_condition};

    let env = daemons("nm-ds").await;
    let node_1 = env.node("node-1");
    // Someone else's cordon: it stays after the maintenance, kordon's taint does not.
    env.run_kordon(&["cordon", &node_1]).assert_ok();
    let theirs = json!({ "metadata": { "annotations": { "kordon.dev/cordoned-at": null } } });
    Api::<Node>::all(env.client.clone())
        .patch(
            &node_1,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&theirs),
        )
        .await
        .expect("make the cordon someone else's");
    let _controller = Controller::start(&env);
    let drain = json!({ "evictDaemonSets": true, "drainOrder": [
        { "podSelector": { "matchLabels": { "app": "web" } }, "order": 5 },
    ] });
    let name = create(
        &env,
        "ds",
        &node_1,
        json!({ "drain": drain, "step": { "hold": {} } }),
    )
    .await;
    let held = wait_condition(&name, "Blocked", "Held").await;
    assert_eq!(
        held.status.and_then(|s| s.phase),
        Some(StatusPhase::Maintaining)
    );
    let node = env.get_node(&node_1).await;
    assert!(
        taint_keys(&node).iter().any(|k| k == DRAINING),
        "{:?}",
        taint_keys(&node)
    );
    let left: Vec<String> = env
        .pods_on(&node_1)
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        left.iter().all(|n| app_of(n) == "everywhere") && left.len() == 1,
        "{left:?}"
    );

    delete(&name).await;
    let node = env.get_node(&node_1).await;
    assert!(
        env.is_cordoned(&node_1).await,
        "someone else's cordon stays"
    );
    assert!(
        !taint_keys(&node).iter().any(|k| k == DRAINING),
        "{:?}",
        taint_keys(&node)
    );
    assert!(taint_keys(&node).iter().any(|k| k == "example.com/theirs"));
    env.run_kordon(&["uncordon", &node_1]).assert_ok();
    env.wait_ready("app=agent", 2).await;
}
