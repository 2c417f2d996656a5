//! `MaintenancePlan` carried out by `kordon controller` on the real control plane: six
//! nodes in three zones at maxUnavailable 2 and one per zone, watched independently;
//! two nodes holding a workload that allows one disruption are never out together; a
//! paused plan and a plan outside its window start nothing and say why.
mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kordon::api::NodeMaintenance;
use kordon::api::maintenance_plan::{MaintenancePlan, PlanWait, TRIGGER_LABEL};
use kordon::api::node_maintenance::StatusPhase;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::fixtures::{self, PodOptions};
use support::nm::Controller;
use support::watcher::{NodeChange, NodeLog, ReadyWatcher, ZONE, ZoneWatcher};
use support::{ENV_LABEL, TestEnv, eventually};

fn env_selector(env: &TestEnv) -> String {
    format!("{ENV_LABEL}={}", env.ns())
}

async fn plans() -> Api<MaintenancePlan> {
    Api::all(support::client().await)
}

async fn create_plan(env: &TestEnv, name: &str, spec: Value) -> String {
    let name = format!("{}-{name}", env.ns());
    let mut body = json!({
        "apiVersion": "kordon.dev/v1alpha1",
        "kind": "MaintenancePlan",
        "metadata": { "name": name, "labels": { ENV_LABEL: env.ns() } },
        "spec": {
            "nodeSelector": format!("{ENV_LABEL}={}", env.ns()),
            "step": { "job": {
                "namespace": env.ns(),
                "template": {
                    "metadata": { "annotations": { "pod-complete.stage.kwok.x-k8s.io/delay": "2s" } },
                    "spec": { "containers": [{ "name": "update", "image": "os-updater:1" }] },
                },
            }},
        },
    });
    if let (Some(target), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    let plan: MaintenancePlan = serde_json::from_value(body).expect("MaintenancePlan");
    plans()
        .await
        .create(&PostParams::default(), &plan)
        .await
        .expect("create plan");
    name
}

/// Waits until at least `count` nodes of the plan are done in its round.
async fn wait_done(name: &str, count: u32) {
    eventually(
        &format!("{count} node(s) of {name} done"),
        Duration::from_secs(300),
        || async {
            let plan = plans().await.get(name).await.expect("plan");
            plan.status.is_some_and(|s| s.done >= count)
        },
    )
    .await;
}

async fn three_nodes(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    for i in 1..=3 {
        env.add_node(&format!("node-{i}")).await;
    }
    env
}

async fn six_nodes_in_three_zones(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    for (i, zone) in ["z-a", "z-a", "z-b", "z-b", "z-c", "z-c"]
        .iter()
        .enumerate()
    {
        let node = env.add_node(&format!("node-{}", i + 1)).await;
        env.label_node(&node, &[format!("{ZONE}={zone}").as_str()]);
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_over_three_zones_keeps_its_caps_and_every_budget() {
    let env = six_nodes_in_three_zones("plan-zones").await;
    let spread = PodOptions {
        spread: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 6, &spread))
        .await;
    // Two nodes drain at once: a budget that lets both go keeps the test about caps.
    env.create::<PodDisruptionBudget>(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", json!(2)),
    ))
    .await;
    env.wait_ready("app=web", 6).await;
    let web = ReadyWatcher::start(env.pods(), "app=web").await;
    let zones = ZoneWatcher::start(Api::all(support::client().await), &env_selector(&env));
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let _controller = Controller::start_with(&env, &["--metrics-address", &address]);

    let name = create_plan(
        &env,
        "zones",
        json!({ "maxUnavailable": "2", "maxUnavailablePer": { ZONE: 1 } }),
    )
    .await;
    wait_done(&name, 6).await;
    let status = plans()
        .await
        .get(&name)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True"),
        "{status:?}"
    );
    assert!(zones.max_out() <= 2, "at most 2 nodes out");
    assert!(zones.max_out() >= 2, "the plan used its cap");
    assert_eq!(zones.max_out_per_zone(), 1, "never two nodes of one zone");
    assert!(
        web.min_ready() >= 4,
        "web kept its budget: {}",
        web.min_ready()
    );
    for i in 1..=6 {
        assert!(!env.is_cordoned(&env.node(&format!("node-{i}"))).await);
    }
    let scraped = std::process::Command::new("curl")
        .args(["-fsS", &format!("http://{address}/metrics")])
        .output()
        .expect("curl");
    let scraped = String::from_utf8_lossy(&scraped.stdout);
    let done = format!("kordon_plan_nodes{{plan=\"{name}\",state=\"done\"}} 6");
    assert!(scraped.contains(&done), "{done} in:\n{scraped}");
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_holding_a_workload_that_allows_one_disruption_are_never_out_together() {
    let env = three_nodes("plan-single").await;
    let spread = PodOptions {
        spread: true,
        ..Default::default()
    };
    // db (2 replicas, implicit budget: one at a time) lands on two of the three nodes.
    env.create(&fixtures::deployment(env.ns(), "db", 2, &spread))
        .await;
    let db = env.wait_ready("app=db", 2).await;
    // The watcher's "zones": the two db nodes share one, the third has its own. The
    // plan caps no zone: only the rule on db keeps the two apart.
    let db_nodes: Vec<String> = db
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    for i in 1..=3 {
        let node = env.node(&format!("node-{i}"));
        let zone = if db_nodes.contains(&node) {
            "db"
        } else {
            "other"
        };
        env.label_node(&node, &[format!("{ZONE}={zone}").as_str()]);
    }
    let ready = ReadyWatcher::start(env.pods(), "app=db").await;
    let zones = ZoneWatcher::start(Api::all(support::client().await), &env_selector(&env));
    let mut controller = Controller::start(&env);

    let name = create_plan(&env, "single", json!({ "maxUnavailable": "3" })).await;
    eventually(
        "the plan to say why a db node waits",
        Duration::from_secs(60),
        || async {
            let plan = plans().await.get(&name).await.expect("plan");
            plan.status.and_then(|s| s.waiting).is_some_and(|w| {
                w.contains(&format!("Deployment {}/db allows one disruption", env.ns()))
            })
        },
    )
    .await;
    wait_done(&name, 3).await;
    assert_eq!(
        zones.max_out_per_zone(),
        1,
        "the two nodes holding db were never out together"
    );
    assert!(ready.min_ready() >= 1, "db kept its budget");
    // SIGTERM, as the kubelet stops the controller's pod: it stops within the grace
    // period Kubernetes gives a pod (30 s) and says it ended well.
    let stopped = controller.0.terminate(Duration::from_secs(30));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "the controller exits 0 within 30 s of SIGTERM: {stopped:?}"
    );
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plans_over_shared_nodes_each_keep_their_cap_over_their_nodes() {
    let mut env = TestEnv::new("plan-overlap").await;
    // Plan a selects nodes 1-4 at 2; plan b selects nodes 3-6 at 1; 3 and 4 are both's.
    for i in 1..=6 {
        let node = env.add_node(&format!("node-{i}")).await;
        let mut labels = vec![];
        if i <= 4 {
            labels.push("kordon-test/a=yes");
        }
        if i >= 3 {
            labels.push("kordon-test/b=yes");
        }
        env.label_node(&node, &labels);
    }
    let selector = |group: &str| format!("{},kordon-test/{group}=yes", env_selector(&env));
    let over_a = ZoneWatcher::start(Api::all(support::client().await), &selector("a"));
    let over_b = ZoneWatcher::start(Api::all(support::client().await), &selector("b"));
    let _controller = Controller::start(&env);

    let a = create_plan(
        &env,
        "a",
        json!({ "maxUnavailable": "2", "nodeSelector": selector("a") }),
    )
    .await;
    let b = create_plan(
        &env,
        "b",
        json!({ "maxUnavailable": "1", "nodeSelector": selector("b") }),
    )
    .await;
    wait_done(&a, 4).await;
    wait_done(&b, 4).await;
    assert!(over_a.max_out() <= 2, "plan a's cap over its nodes");
    assert_eq!(
        over_b.max_out(),
        1,
        "plan b's cap over its nodes, counting a's"
    );
    for name in [a, b] {
        let _ = plans().await.delete(&name, &DeleteParams::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plan_and_a_plan_outside_its_window_start_nothing_and_say_why() {
    let env = six_nodes_in_three_zones("plan-wait").await;
    let _controller = Controller::start(&env);
    let paused = create_plan(&env, "paused", json!({ "paused": true })).await;
    // A window of an hour that opens in twelve hours, every day.
    let in_day = (jiff::Timestamp::now().as_second() + 12 * 3600).rem_euclid(86_400);
    let (hour, minute) = (in_day / 3600, in_day % 3600 / 60);
    let window = format!(
        "Mon-Sun {hour:02}:{minute:02}-{:02}:{minute:02} UTC",
        (hour + 1) % 24
    );
    let closed = create_plan(&env, "window", json!({ "windows": [window] })).await;
    // A selector the controller cannot read: one sentence, nothing starts.
    let selector = format!("{ENV_LABEL} in ({}", env.ns());
    let unread = create_plan(&env, "selector", json!({ "nodeSelector": selector })).await;
    for (name, why, kind) in [
        (&paused, "paused", PlanWait::Paused),
        (&closed, "outside its windows until", PlanWait::Window),
        (&unread, "without its \")\"", PlanWait::InvalidSpec),
    ] {
        eventually(
            &format!("{name} to say why it waits"),
            Duration::from_secs(30),
            || async {
                let plan = plans().await.get(name).await.expect("plan");
                plan.status.is_some_and(|s| {
                    s.waiting_for == Some(kind) && s.waiting.is_some_and(|w| w.contains(why))
                })
            },
        )
        .await;
    }
    let status = plans()
        .await
        .get(&closed)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert!(status.next_window.is_some(), "{status:?}");
    for i in 1..=6 {
        assert!(
            !env.is_cordoned(&env.node(&format!("node-{i}"))).await,
            "nothing started"
        );
    }
    for name in [paused, closed, unread] {
        let _ = plans().await.delete(&name, &DeleteParams::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_spec_starts_a_new_round_the_same_spec_changes_nothing_and_failures_halt() {
    let env = three_nodes("plan-rounds").await;
    let _controller = Controller::start(&env);
    let name = create_plan(&env, "rounds", json!({})).await;
    let api: Api<NodeMaintenance> = Api::all(support::client().await);
    let ours = ListParams::default().labels(&format!("kordon.dev/plan={name}"));
    wait_done(&name, 3).await;
    let first = plans().await.get(&name).await.expect("plan");
    let round = first.status.as_ref().and_then(|s| s.round.clone());

    // The same maintenance with its default pause spelled out (a new generation, the
    // same round): once the controller has decided on it, nothing new has started.
    let same = json!({ "spec": { "pauseBetween": "0s" } });
    let patched = plans()
        .await
        .patch(&name, &PatchParams::default(), &Patch::Merge(&same))
        .await
        .expect("re-apply");
    let generation = patched.metadata.generation;
    eventually(
        "the plan's status to follow its new spec",
        Duration::from_secs(30),
        || async {
            let plan = plans().await.get(&name).await.expect("plan");
            let conditions = plan.status.map(|s| s.conditions).unwrap_or_default();
            conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.observed_generation == generation)
        },
    )
    .await;
    assert_eq!(
        api.list(&ours).await.expect("list").items.len(),
        3,
        "no new NodeMaintenance"
    );
    let again = plans().await.get(&name).await.expect("plan");
    assert_eq!(again.status.as_ref().and_then(|s| s.round.clone()), round);

    // A new maintenance (its Job now fails): a new round, which halts at the first
    // failure with that node left cordoned and the others untouched.
    let failing = json!({ "spec": { "step": { "job": {
        "namespace": env.ns(),
        "template": {
            "metadata": { "annotations": { "pod-fail.stage.kwok.x-k8s.io/delay": "1s" } },
            "spec": { "containers": [{ "name": "update", "image": "os-updater:2" }] },
        },
    }}}});
    plans()
        .await
        .patch(&name, &PatchParams::default(), &Patch::Merge(&failing))
        .await
        .expect("new spec");
    eventually(
        "the new round to halt",
        Duration::from_secs(120),
        || async {
            let plan = plans().await.get(&name).await.expect("plan");
            plan.status.is_some_and(|s| {
                s.waiting_for == Some(PlanWait::Halted)
                    && s.waiting
                        .is_some_and(|w| w.contains("halted: 1 node(s) failed"))
            })
        },
    )
    .await;
    let status = plans()
        .await
        .get(&name)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert_ne!(status.round, round, "a new round");
    assert_eq!((status.done, status.failed), (0, 1), "{status:?}");
    // The first round's end and the halt are Events on the plan (cluster-scoped: in
    // namespace default).
    for reason in ["PlanComplete", "PlanHalted"] {
        eventually(
            &format!("a {reason} event"),
            Duration::from_secs(30),
            || async {
                let events = env
                    .kubectl()
                    .args([
                        "get",
                        "events",
                        "-n",
                        "default",
                        "-o",
                        "name",
                        "--field-selector",
                    ])
                    .arg(format!("reason={reason},involvedObject.name={name}"))
                    .output()
                    .expect("kubectl get events");
                !String::from_utf8_lossy(&events.stdout).trim().is_empty()
            },
        )
        .await;
    }
    assert_eq!(
        api.list(&ours).await.expect("list").items.len(),
        4,
        "one more started"
    );
    let cordoned: Vec<String> = futures::future::join_all((1..=3).map(|i| {
        let node = env.node(&format!("node-{i}"));
        let env = &env;
        async move { env.is_cordoned(&node).await.then_some(node) }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(
        cordoned.len(),
        1,
        "the failed node stays cordoned, no other started"
    );
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_plan_continues_after_a_restart_without_repeating_a_node() {
    let env = three_nodes("plan-restart").await;
    let mut controller = Controller::start(&env);
    let name = create_plan(&env, "restart", json!({})).await;
    wait_done(&name, 1).await;
    controller.0.kill().expect("kill -9");
    let _ = controller.0.wait();
    let _restarted = Controller::start(&env);
    wait_done(&name, 3).await;
    let api: Api<NodeMaintenance> = Api::all(support::client().await);
    let ours = ListParams::default().labels(&format!("kordon.dev/plan={name}"));
    assert_eq!(
        api.list(&ours).await.expect("list").items.len(),
        3,
        "one NodeMaintenance per node: none repeated"
    );
    // Each start is an Event of its own on the plan, naming its node: not counted into
    // the first node's.
    let events: Api<Event> = Api::all(support::client().await);
    let on_plan = ListParams::default().fields(&format!("regarding.name={name}"));
    let started: std::collections::BTreeSet<String> = events
        .list(&on_plan)
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("NodeStarted"))
        .filter_map(|e| e.related?.name)
        .collect();
    let nodes: std::collections::BTreeSet<String> =
        (1..=3).map(|i| env.node(&format!("node-{i}"))).collect();
    assert_eq!(started, nodes, "a NodeStarted Event per node");
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// Plan `name`'s NodeMaintenances.
async fn children(name: &str) -> Vec<NodeMaintenance> {
    let all: Api<NodeMaintenance> = Api::all(support::client().await);
    let mine = ListParams::default().labels(&format!("kordon.dev/plan={name}"));
    all.list(&mine).await.expect("list NodeMaintenances").items
}

/// Someone else's cordon takes a place in a plan's cap: at maxUnavailable 1 the plan
/// starts nothing while their node is cordoned and says why (`status.outByOthers`,
/// `waiting`); once uncordoned, every node is done one at a time, and a watcher never
/// sees two out. With `countOthersOut: false` a plan goes on at once, and maintains
/// their node in its turn, keeping their cordon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_someone_else_cordoned_takes_the_cap_until_it_is_uncordoned() {
    let env = three_nodes("plan-others").await;
    let kubectl = |verb: &str, node: &str| {
        let out = env.kubectl().args([verb, node]).output().expect("kubectl");
        assert!(out.status.success(), "{out:?}");
    };
    let theirs = env.node("node-2");
    kubectl("cordon", &theirs);
    let zones = ZoneWatcher::start(Api::all(support::client().await), &env_selector(&env));
    let _controller = Controller::start(&env);

    let name = create_plan(&env, "others", json!({ "maxUnavailable": "1" })).await;
    eventually(
        "the plan to say their node takes its cap",
        Duration::from_secs(60),
        || async {
            let status = plans().await.get(&name).await.expect("plan").status;
            status.is_some_and(|s| {
                let named = s
                    .out_by_others
                    .iter()
                    .any(|o| o.node == theirs && o.reason == "cordoned");
                let waits = s.waiting.as_deref().unwrap_or_default();
                named
                    && s.waiting_for == Some(PlanWait::Caps)
                    && waits.contains(&format!(
                        "out of service by someone else: {theirs} (cordoned)"
                    ))
            })
        },
    )
    .await;
    let status = plans()
        .await
        .get(&name)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert_eq!(
        status.nodes[&theirs].waiting.as_deref(),
        Some(
            "out of service by someone else (cordoned): it takes a place in the caps and starts once back in service"
        )
    );
    // Its next looks (every 5 s) start nothing either.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(children(&name).await.is_empty(), "the plan started a node");
    }
    kubectl("uncordon", &theirs);
    wait_done(&name, 3).await;
    assert_eq!(zones.max_out(), 1, "never two nodes out at once");
    let done = plans()
        .await
        .get(&name)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert!(done.out_by_others.is_empty(), "{done:?}");
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;

    kubectl("cordon", &theirs);
    let name = create_plan(
        &env,
        "uncounted",
        json!({ "maxUnavailable": "1", "countOthersOut": false }),
    )
    .await;
    wait_done(&name, 3).await;
    assert!(env.is_cordoned(&theirs).await, "their cordon stays");
    let status = plans()
        .await
        .get(&name)
        .await
        .expect("plan")
        .status
        .expect("status");
    assert!(status.out_by_others.is_empty(), "{status:?}");
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// The pending taint's value on each of the test's nodes (`None`: untainted).
async fn pending_taints(env: &TestEnv, count: usize) -> Vec<Option<String>> {
    let mut found = Vec::new();
    for i in 1..=count {
        let node = env.get_node(&env.node(&format!("node-{i}"))).await;
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        found.push(
            taints
                .into_iter()
                .find(|t| {
                    t.key == "kordon.dev/pending-maintenance" && t.effect == "PreferNoSchedule"
                })
                .map(|t| t.value.unwrap_or_default()),
        );
    }
    found
}

/// A plan's nodes still to start carry its PreferNoSchedule taint; a deleted plan's go
/// at the next plan's pass, and none is left once the round is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_nodes_carry_the_plans_taint_until_the_round_is_through() {
    let env = three_nodes("plan-pending").await;
    let _controller = Controller::start(&env);
    let tainted_by = |name: String| async move {
        let uid = plans()
            .await
            .get(&name)
            .await
            .expect("plan")
            .metadata
            .uid
            .expect("uid");
        Some(format!("plan-{uid}"))
    };
    let first = create_plan(&env, "first", json!({ "paused": true })).await;
    let first_value = tainted_by(first.clone()).await;
    eventually(
        "the paused plan's nodes tainted",
        Duration::from_secs(30),
        || async { pending_taints(&env, 3).await == vec![first_value.clone(); 3] },
    )
    .await;
    let _ = plans().await.delete(&first, &DeleteParams::default()).await;

    let second = create_plan(&env, "second", json!({ "paused": true })).await;
    let second_value = tainted_by(second.clone()).await;
    eventually(
        "the deleted plan's taint replaced",
        Duration::from_secs(30),
        || async { pending_taints(&env, 3).await == vec![second_value.clone(); 3] },
    )
    .await;
    plans()
        .await
        .patch(
            &second,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "paused": false } })),
        )
        .await
        .expect("resume the plan");
    wait_done(&second, 3).await;
    eventually(
        "no node keeps the taint",
        Duration::from_secs(30),
        || async { pending_taints(&env, 3).await == vec![None; 3] },
    )
    .await;
    let _ = plans()
        .await
        .delete(&second, &DeleteParams::default())
        .await;
}

/// `sequence` and `maxPer` over six nodes in three zones at maxUnavailable 2: the zones go
/// z-b, z-a, then z-c, each finished (every node uncordoned, its NodeMaintenance Done)
/// before the next starts; an independent watch never sees three starts within the
/// 12 s period, across a controller killed (`kill -9`) while the plan waits on its budget
/// and started again: the budget is counted from the plan's NodeMaintenances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_goes_zone_by_zone_within_its_rate_across_a_controller_restart() {
    let env = six_nodes_in_three_zones("plan-sequence").await;
    let log = NodeLog::start(Api::all(support::client().await), &env_selector(&env)).await;
    let mut controller = Controller::start(&env);
    let name = create_plan(
        &env,
        "sequence",
        json!({
            "maxUnavailable": "2",
            "maxPer": { "period": "12s", "starts": 2 },
            "sequence": { "key": ZONE, "order": ["z-b", "z-a"] },
        }),
    )
    .await;
    // The first two nodes spend the budget: the plan says it waits for it.
    eventually(
        &format!("{name} to wait on maxPer"),
        Duration::from_secs(60),
        || async {
            let plan = plans().await.get(&name).await.expect("plan");
            plan.status.is_some_and(|s| {
                s.waiting_for == Some(PlanWait::Rate)
                    && s.waiting.is_some_and(|w| {
                        w.contains(
                            "at most 2 node start(s) per 12s (maxPer): the next node starts at",
                        )
                    })
            })
        },
    )
    .await;
    controller.0.kill().expect("kill -9");
    let _ = controller.0.wait();
    let _restarted = Controller::start(&env);
    wait_done(&name, 6).await;

    let zone_of = |node: &str| match node {
        n if n == env.node("node-1") || n == env.node("node-2") => "z-a",
        n if n == env.node("node-3") || n == env.node("node-4") => "z-b",
        _ => "z-c",
    };
    let events = log.events();
    let position = |zone: &str, change: NodeChange, last: bool| {
        let matches =
            |e: &&support::watcher::NodeEvent| e.change == change && zone_of(&e.node) == zone;
        let found = match last {
            true => events.iter().rposition(|e| matches(&e)),
            false => events.iter().position(|e| matches(&e)),
        };
        found.unwrap_or_else(|| panic!("no {change:?} in {zone}: {events:#?}"))
    };
    for (before, after) in [("z-b", "z-a"), ("z-a", "z-c")] {
        assert!(
            position(before, NodeChange::Uncordoned, true)
                < position(after, NodeChange::Cordoned, false),
            "{before} back before {after} starts: {events:#?}"
        );
    }
    // Each zone's NodeMaintenances Done before the next zone's are created.
    let nms = children(&name).await;
    let zone_times = |zone: &str| {
        let of_zone = nms.iter().filter(|nm| zone_of(&nm.spec.node_name) == zone);
        let created: Vec<jiff::Timestamp> = of_zone
            .clone()
            .filter_map(|nm| nm.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .collect();
        let finished: Vec<jiff::Timestamp> = of_zone
            .filter_map(|nm| nm.status.as_ref()?.finished_at.as_ref().map(|t| t.0))
            .collect();
        assert_eq!((created.len(), finished.len()), (2, 2), "{zone}: {nms:#?}");
        (created, finished)
    };
    for (before, after) in [("z-b", "z-a"), ("z-a", "z-c")] {
        let finished = zone_times(before).1.into_iter().max();
        let started = zone_times(after).0.into_iter().min();
        assert!(
            finished <= started,
            "{before} Done {finished:?}, {after} created {started:?}"
        );
    }
    let starts = log.starts();
    assert_eq!(starts.len(), 6, "each node started once: {events:#?}");
    let latency = Duration::from_millis(500);
    for three in starts.windows(3) {
        let span = three[2].1 - three[0].1;
        assert!(
            span + latency >= Duration::from_secs(12),
            "three starts within {span:?}: {starts:?}"
        );
    }
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// A rate budget or a sequence that cannot be carried out: the API server refuses a
/// period of 0, no starts or an empty key when the plan is written; a key that is not a
/// label key is the plan's `InvalidSpec`, in one sentence; nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rate_budget_or_sequence_is_refused_and_starts_nothing() {
    let env = three_nodes("plan-bad-policy").await;
    // It applies the CRDs, whose rules refuse the first four.
    let _controller = Controller::start(&env);
    for (extra, says) in [
        (
            json!({ "maxPer": { "period": "0s", "starts": 2 } }),
            "a period such as 24h or 90m, more than 0",
        ),
        (
            json!({ "maxPer": { "period": "1h", "starts": 0 } }),
            "maxPer.starts must be at least 1",
        ),
        (
            json!({ "sequence": { "key": "" } }),
            "sequence.key names a node label",
        ),
        (
            json!({ "gates": { "prometheus": { "url": "http://p:9090", "pauseOnQuery": [] } } }),
            "gates.prometheus.pauseOnQuery needs at least one query",
        ),
    ] {
        let mut body = json!({
            "apiVersion": "kordon.dev/v1alpha1",
            "kind": "MaintenancePlan",
            "metadata": { "name": format!("{}-refused", env.ns()) },
            "spec": { "nodeSelector": env_selector(&env), "step": { "hold": {} } },
        });
        if let (Some(spec), Some(extra)) = (body["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let plan: MaintenancePlan = serde_json::from_value(body).expect("MaintenancePlan");
        let refused = plans()
            .await
            .create(&PostParams::default(), &plan)
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains(says), "{refused}");
    }
    let name = create_plan(
        &env,
        "bad-key",
        json!({ "sequence": { "key": "bad key!" } }),
    )
    .await;
    eventually(
        &format!("{name} to say its sequence is wrong"),
        Duration::from_secs(30),
        || async {
            let plan = plans().await.get(&name).await.expect("plan");
            plan.status.is_some_and(|s| {
                s.waiting_for == Some(PlanWait::InvalidSpec)
                    && s.waiting.as_deref() == Some("sequence: \"bad key!\" is not a label key")
            })
        },
    )
    .await;
    for i in 1..=3 {
        assert!(
            !env.is_cordoned(&env.node(&format!("node-{i}"))).await,
            "nothing started"
        );
    }
    assert!(children(&name).await.is_empty());
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// `spec.notify`: the webhook hears each node's start in turn, the pause between them,
/// and the round's completion once, past a first answer of 503 (retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plans_webhook_hears_each_start_its_pauses_and_the_completion_once() {
    let env = three_nodes("plan-notify").await;
    let hook = support::webhook::Receiver::start(1);
    let _controller = Controller::start(&env);
    let name = create_plan(
        &env,
        "notify",
        json!({ "pauseBetween": "3s", "notify": { "url": hook.url } }),
    )
    .await;
    wait_done(&name, 3).await;
    hook.wait_for(Duration::from_secs(30), "the completion", |n| {
        n["kind"] == "completed"
    })
    .await;
    let taken = hook.taken();
    let flow: Vec<(&str, &str)> = taken
        .iter()
        .filter(|n| n["kind"] != "paused")
        .map(|n| {
            (
                n["kind"].as_str().unwrap_or_default(),
                n["node"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    let nodes: Vec<String> = (1..=3).map(|i| env.node(&format!("node-{i}"))).collect();
    let mut starts: Vec<&str> = flow
        .iter()
        .filter(|(k, _)| *k == "started")
        .map(|(_, n)| *n)
        .collect();
    starts.sort_unstable();
    assert_eq!(starts, nodes, "{taken:#?}");
    assert_eq!(flow.last(), Some(&("completed", "-")), "{taken:#?}");
    assert_eq!(
        flow.iter().filter(|(k, _)| *k == "completed").count(),
        1,
        "{taken:#?}"
    );
    assert!(
        taken.iter().any(|n| n["kind"] == "paused"
            && n["message"]
                .as_str()
                .is_some_and(|m| m.contains("pausing between nodes"))),
        "a pause between nodes is told: {taken:#?}"
    );
    let source = &taken[0]["source"];
    assert_eq!(
        (&source["kind"], &source["name"]),
        (&json!("MaintenancePlan"), &json!(name))
    );
    assert_eq!(
        hook.requests(),
        taken.len() + 1,
        "the refused one was sent again"
    );

    // A URL that is not one: the plan says so and starts nothing.
    let bad = create_plan(
        &env,
        "badhook",
        json!({ "notify": { "url": "hooks.example.com" } }),
    )
    .await;
    eventually(
        "the bad URL in the status",
        Duration::from_secs(30),
        || async {
            let plan = plans().await.get(&bad).await.expect("plan");
            plan.status.is_some_and(|s| {
                s.waiting_for == Some(PlanWait::InvalidSpec)
                    && s.waiting
                        .as_deref()
                        .is_some_and(|w| w.starts_with("notify.url: webhook"))
            })
        },
    )
    .await;
}

/// `spec.gates` against a real Prometheus scraping a test exporter whose metric is bad
/// from the start: the plan starts nothing and says `waitingFor: Gate` with the query and
/// its series; a `kordon.dev/approve` annotation starts exactly one node (recorded in the
/// status), after which it waits on the gate again, and so does `kordon approve PLAN`; once
/// the metric clears, the last node goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_holds_the_plan_and_one_approval_starts_one_node() {
    use support::monitoring::{Exporter, Prometheus};
    let exporter = Exporter::start();
    exporter.set(1.0);
    let prometheus = Prometheus::start(&exporter).await;
    let env = three_nodes("plan-gates").await;
    let log = NodeLog::start(Api::all(support::client().await), &env_selector(&env)).await;
    let _controller = Controller::start(&env);
    let query = "kordon_test_errors > 0";
    let name = create_plan(
        &env,
        "gates",
        json!({ "gates": { "prometheus": { "url": prometheus.url(), "pauseOnQuery": [query] } } }),
    )
    .await;
    let held_by_gate = || async {
        let plan = plans().await.get(&name).await.expect("plan");
        plan.status.is_some_and(|s| {
            s.waiting_for == Some(PlanWait::Gate)
                && s.waiting.is_some_and(|w| {
                    w.contains(&format!("a metric gate fails: query `{query}` returns 1 series: {{__name__=\"kordon_test_errors\", app=\"shop\""))
                })
        })
    };
    eventually(
        "the plan to wait for its gate",
        Duration::from_secs(30),
        held_by_gate,
    )
    .await;
    assert!(
        log.starts().is_empty(),
        "nothing started: {:?}",
        log.events()
    );

    // One approval, one node.
    let annotate = env
        .kubectl()
        .args([
            "annotate",
            "maintenanceplan",
            &name,
            "kordon.dev/approve=first",
        ])
        .output()
        .expect("kubectl annotate");
    assert!(annotate.status.success(), "{annotate:?}");
    // The plan holds on its gate again; the approval its status says it used.
    let held_again = || async {
        eventually(
            "the plan to wait for its gate again",
            Duration::from_secs(30),
            held_by_gate,
        )
        .await;
        let plan = plans().await.get(&name).await.expect("plan");
        plan.status.and_then(|s| s.approved)
    };
    wait_done(&name, 1).await;
    assert_eq!(held_again().await.as_deref(), Some("first"));
    // More than one look (every 5s) later, still the one node.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        log.starts().len(),
        1,
        "one approval starts one node: {:?}",
        log.events()
    );
    assert_eq!(children(&name).await.len(), 1);

    // `kordon approve PLAN` writes a new value: one more node.
    let approved = env.run_kordon(&["approve", &name, "-o", "json"]);
    approved.assert_ok();
    let approved = approved.json();
    assert_eq!(approved["target"], format!("MaintenancePlan {name}"));
    let approval = approved["approval"].as_str().expect("approval").to_string();
    wait_done(&name, 2).await;
    assert_eq!(held_again().await, Some(approval));
    assert_eq!(log.starts().len(), 2, "{:?}", log.events());

    // Cleared: the rest go.
    exporter.set(0.0);
    wait_done(&name, 3).await;
    assert_eq!(log.starts().len(), 3, "{:?}", log.events());
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// A plan whose gate hangs (a Prometheus that accepts and never answers: the controller
/// waits 4 s for each answer) holds only itself: another plan, without gates, starts its
/// node while that gate is still being asked, as an independent watch of the nodes sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_hangs_holds_its_own_plan_and_no_other() {
    let env = three_nodes("plan-slow-gate").await;
    let group = |g: &str| format!("kordon-test/group={g}");
    for (short, g) in [("node-1", "slow"), ("node-2", "slow"), ("node-3", "quick")] {
        env.label_node(&env.node(short), &[group(g).as_str()]);
    }
    let selector = |g: &str| format!("{},{}", env_selector(&env), group(g));
    let log = NodeLog::start(Api::all(support::client().await), &env_selector(&env)).await;
    let silent = support::monitoring::Silent::start();
    let _controller = Controller::start(&env);
    let slow = create_plan(
        &env,
        "slow",
        json!({
            "nodeSelector": selector("slow"),
            "gates": { "prometheus": { "url": silent.url(), "pauseOnQuery": ["up == 0"] } },
        }),
    )
    .await;
    eventually(
        "the slow plan to wait for its gate",
        Duration::from_secs(60),
        || async {
            let plan = plans().await.get(&slow).await.expect("plan");
            plan.status.is_some_and(|s| {
                s.waiting_for == Some(PlanWait::Gate)
                    && s.waiting.is_some_and(|w| w.contains("gives no answer"))
            })
        },
    )
    .await;
    // A new question to the silent Prometheus: the other plan comes while it hangs.
    silent.next_ask(Duration::from_secs(30)).await;
    let quick = create_plan(&env, "quick", json!({ "nodeSelector": selector("quick") })).await;
    let quick_node = env.node("node-3");
    let started = || log.starts().into_iter().find(|(n, _)| *n == quick_node);
    eventually(
        "the quick plan's node to start",
        Duration::from_secs(60),
        || async { started().is_some() },
    )
    .await;
    let (_, at) = started().expect("started");
    assert!(
        silent.asked_at(at),
        "the quick plan's node started while the slow plan's gate was asked: started at {at:?}, asks {:?}",
        silent.asks()
    );
    wait_done(&quick, 1).await;
    let slow_nodes = [env.node("node-1"), env.node("node-2")];
    assert!(
        !log.starts().iter().any(|(n, _)| slow_nodes.contains(n)),
        "the slow plan started nothing: {:?}",
        log.events()
    );
    for name in [slow, quick] {
        let _ = plans().await.delete(&name, &DeleteParams::default()).await;
    }
}

/// `triggered`: a plan over three nodes starts nothing while none says it needs
/// maintenance; a node labelled `kordon.dev/maintenance-needed=<when>` is maintained, it
/// alone (its NodeMaintenance Done, no other node cordoned, as a watch of the nodes
/// sees); the same value left on it is not maintained again, a new value is; a node
/// whose label goes leaves the plan's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_plan_maintains_a_labelled_node_once_per_value() {
    let env = three_nodes("plan-triggered").await;
    let log = NodeLog::start(Api::all(support::client().await), &env_selector(&env)).await;
    let _controller = Controller::start(&env);
    let name = create_plan(&env, "triggered", json!({ "triggered": true })).await;
    let awaits_trigger = |generation: Option<i64>| {
        let name = name.clone();
        async move {
            let plan = plans().await.get(&name).await.expect("plan");
            let conditions = plan.status.map(|s| s.conditions).unwrap_or_default();
            conditions.iter().any(|c| {
                c.type_ == "Complete"
                    && c.status == "True"
                    && c.reason == "TriggeredNodesDone"
                    && (generation.is_none() || c.observed_generation == generation)
            })
        }
    };
    eventually(
        "the plan to await a trigger",
        Duration::from_secs(30),
        || awaits_trigger(None),
    )
    .await;
    assert!(children(&name).await.is_empty(), "nothing started");

    // Done for one value, exactly once.
    let node = env.node("node-2");
    let done_for = |value: &'static str| {
        let (name, node) = (name.clone(), node.clone());
        async move {
            children(&name).await.iter().any(|nm| {
                let labels = nm.metadata.labels.clone().unwrap_or_default();
                nm.spec.node_name == node
                    && labels.get("kordon.dev/trigger").map(String::as_str) == Some(value)
                    && nm.status.as_ref().and_then(|s| s.phase) == Some(StatusPhase::Done)
            })
        }
    };
    let needs = |value: &str| format!("{TRIGGER_LABEL}={value}");
    env.label_node(&node, &[needs("1765027200").as_str()]);
    eventually(
        "node-2 maintained for its trigger",
        Duration::from_secs(120),
        || done_for("1765027200"),
    )
    .await;
    wait_done(&name, 1).await;
    eventually(
        "the plan to await the next trigger",
        Duration::from_secs(30),
        || awaits_trigger(None),
    )
    .await;

    // The same value, still there: once the controller has decided on a new generation
    // of the plan (the same round), nothing new has started.
    let patched = plans()
        .await
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "pauseBetween": "0s" } })),
        )
        .await
        .expect("re-apply");
    eventually(
        "the plan to decide on its new generation",
        Duration::from_secs(30),
        || awaits_trigger(patched.metadata.generation),
    )
    .await;
    assert_eq!(
        children(&name).await.len(),
        1,
        "the same value is not redone"
    );

    // A new need: a new value, maintained again.
    env.label_node(&node, &["--overwrite", needs("1765030800").as_str()]);
    eventually(
        "node-2 maintained for its new trigger",
        Duration::from_secs(120),
        || done_for("1765030800"),
    )
    .await;
    assert_eq!(children(&name).await.len(), 2);
    let starts: Vec<String> = log.starts().into_iter().map(|(n, _)| n).collect();
    assert_eq!(starts, [node.clone(), node.clone()], "{:?}", log.events());

    // The need gone: the node leaves the plan's status.
    env.label_node(&node, &[format!("{TRIGGER_LABEL}-").as_str()]);
    eventually(
        "node-2 out of the plan's status",
        Duration::from_secs(30),
        || async {
            let status = plans().await.get(&name).await.expect("plan").status;
            status.is_some_and(|s| s.nodes.is_empty() && s.done == 0)
        },
    )
    .await;
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}

/// `pauseBetween` is a soak: a pod that fails on a node done within it (a Job's pod
/// exiting 1, KWOK's pod-fail stage) fails that node, recorded on its NodeMaintenance
/// (`kordon.dev/soak-failed`), and at `maxFailures: 1` the plan halts before the next
/// node starts. The node stays in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_on_a_node_during_its_soak_fails_it_and_halts_the_plan() {
    let env = three_nodes("plansoak").await;
    let _controller = Controller::start(&env);
    let name = create_plan(&env, "soak", json!({ "pauseBetween": "60s" })).await;
    wait_done(&name, 1).await;
    let done = children(&name).await;
    assert_eq!(done.len(), 1, "one node at a time");
    let node = done[0].spec.node_name.clone();
    let mut job = fixtures::job(env.ns(), "crash");
    let template = &mut job.spec.as_mut().expect("spec").template;
    template.spec.as_mut().expect("pod spec").node_name = Some(node.clone());
    template.metadata.get_or_insert_default().annotations = Some(
        [(
            "pod-fail.stage.kwok.x-k8s.io/delay".to_string(),
            "1s".to_string(),
        )]
        .into(),
    );
    env.create(&job).await;

    eventually("the plan to halt", Duration::from_secs(60), || async {
        let plan = plans().await.get(&name).await.expect("plan");
        plan.status
            .is_some_and(|s| s.waiting_for == Some(PlanWait::Halted) && s.failed == 1)
    })
    .await;
    let children = children(&name).await;
    assert_eq!(children.len(), 1, "no other node started");
    let annotations = children[0].metadata.annotations.clone().unwrap_or_default();
    let why = annotations
        .get("kordon.dev/soak-failed")
        .cloned()
        .unwrap_or_default();
    assert!(
        why.contains("during the 1m soak, container nginx of pod"),
        "{why}"
    );
    assert!(!env.is_cordoned(&node).await, "the node stays in service");
    let _ = plans().await.delete(&name, &DeleteParams::default()).await;
}
