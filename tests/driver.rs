//! `maintain`, `roll` and a NodeMaintenance go through one driver
//! (`workflow/driver.rs`): driven through the same scenarios, each tells the same story
//! on the node, Event by Event, and leaves the node as the same rule says.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kordon::api::node_maintenance::StatusPhase;
use kube::Api;
use serde_json::{Value, json};
use support::fixtures::NodeSpec;
use support::nm::{self, Controller};
use support::{ENV_LABEL, TestEnv, eventually};

/// One way into a node's maintenance, and how it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Maintain,
    Roll,
    NodeMaintenance,
}

struct Scenario {
    name: &'static str,
    /// Someone cordoned the node before kordon came.
    cordoned_before: bool,
    /// The maintenance step fails.
    step_fails: bool,
    /// The node's status is never posted again after it is Ready, as a real kubelet
    /// posts an unchanged one only every 5 minutes: it is back by its Lease.
    status_frozen: bool,
    /// The Events kordon publishes on the node, in order.
    story: &'static [&'static str],
    cordoned_after: bool,
}

/// The story of a maintenance that brings the node back into service.
const BACK_IN_SERVICE: &[&str] = &[
    "Draining",
    "Maintaining",
    "AwaitingReady",
    "Uncordoned",
    "MaintenanceDone",
];

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "plain",
        cordoned_before: false,
        step_fails: false,
        status_frozen: false,
        story: BACK_IN_SERVICE,
        cordoned_after: false,
    },
    Scenario {
        name: "theirs",
        cordoned_before: true,
        step_fails: false,
        status_frozen: false,
        story: &[
            "Draining",
            "Maintaining",
            "AwaitingReady",
            "Verifying",
            "MaintenanceDone",
        ],
        cordoned_after: true,
    },
    Scenario {
        name: "fails",
        cordoned_before: false,
        step_fails: true,
        status_frozen: false,
        story: &["Draining", "Maintaining", "MaintenanceFailed"],
        cordoned_after: true,
    },
    Scenario {
        name: "silent",
        cordoned_before: false,
        step_fails: false,
        status_frozen: true,
        story: BACK_IN_SERVICE,
        cordoned_after: false,
    },
];

fn heartbeat(node: &Node) -> Option<Time> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    ready.last_heartbeat_time.clone()
}

/// kordon's Events on the node, oldest first.
async fn story(env: &TestEnv, node: &str) -> Vec<String> {
    let events: Api<Event> = Api::all(env.client.clone());
    let listed = events
        .list(&kube::api::ListParams::default().fields(&format!("regarding.name={node}")))
        .await
        .expect("list events");
    let mut ours: Vec<_> = listed
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("kordon"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node"))
        .collect();
    ours.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    ours.into_iter().filter_map(|e| e.reason).collect()
}

/// Runs kordon without holding up the other drivers' runs.
async fn cli(env: &TestEnv, args: &[&str]) -> support::Run {
    let mut command = tokio::process::Command::from(env.kordon());
    command
        .args(args)
        .output()
        .await
        .expect("run kordon")
        .into()
}

/// Runs the scenario through one driver on a fresh namespace and node pair, and
/// returns the story told on the drained node and whether it is cordoned at the end.
async fn run(driver: Driver, scenario: &Scenario) -> (Vec<String>, bool) {
    let what = format!("{} through {driver:?}", scenario.name);
    tokio::time::timeout(Duration::from_secs(120), run_once(driver, scenario))
        .await
        .unwrap_or_else(|_| panic!("{what} did not end within 120 s"))
}

async fn run_once(driver: Driver, scenario: &Scenario) -> (Vec<String>, bool) {
    let frozen = NodeSpec {
        status_frozen: scenario.status_frozen,
        ..Default::default()
    };
    let env = TestEnv::two_nodes_with_web_on(&format!("drv-{}", scenario.name), frozen).await;
    let node = env.node("node-1");
    let heartbeat_before = heartbeat(&env.get_node(&node).await);
    if scenario.cordoned_before {
        let cordon = env
            .kubectl()
            .args(["cordon", &node])
            .output()
            .expect("cordon");
        assert!(cordon.status.success());
    }
    // The controller (only for its driver) lives until the story is read.
    let (_controller, object) = carry_out(&env, &node, driver, scenario).await;
    let told = wait_for_story(&env, &node, driver, scenario).await;
    if scenario.status_frozen {
        let after = heartbeat(&env.get_node(&node).await);
        assert_eq!(after, heartbeat_before, "{driver:?}: the status was posted");
    }
    let cordoned = env.is_cordoned(&node).await;
    // A failed NodeMaintenance holds its node, which other runs count as out of service.
    if let Some(name) = object {
        nm::delete(&name).await;
    }
    (told, cordoned)
}

/// Runs the maintenance of `node` through `driver` to its end; for a NodeMaintenance,
/// returns its controller and its name.
async fn carry_out(
    env: &TestEnv,
    node: &str,
    driver: Driver,
    scenario: &Scenario,
) -> (Option<Controller>, Option<String>) {
    let command = if scenario.step_fails { "false" } else { "true" };
    let selector = format!("{ENV_LABEL}={},kubernetes.io/hostname={node}", env.ns());
    let args = match driver {
        Driver::Maintain => vec!["maintain", node, "--", command],
        Driver::Roll => {
            let mut args = vec![
                "roll",
                "--lock-namespace",
                env.ns(),
                "--selector",
                selector.as_str(),
            ];
            // A roll leaves a node someone else has out to them by default (counted
            // against its cap); the scenario is what the driver does with their cordon.
            if scenario.cordoned_before {
                args.push("--count-others-out=false");
            }
            args.extend(["--", command]);
            args
        }
        Driver::NodeMaintenance => {
            let controller = Controller::start(env);
            let stage = if scenario.step_fails {
                "pod-fail.stage.kwok.x-k8s.io/delay"
            } else {
                "pod-complete.stage.kwok.x-k8s.io/delay"
            };
            let step: Value = json!({ "step": { "job": {
                "namespace": env.ns(),
                "template": {
                    "metadata": { "annotations": { stage: "1s" } },
                    "spec": { "containers": [{ "name": "update", "image": "os-updater:1" }] },
                },
            }}});
            let name = nm::create(env, "drv", node, step).await;
            let end = if scenario.step_fails {
                StatusPhase::Failed
            } else {
                StatusPhase::Done
            };
            nm::wait_phase(&name, end).await;
            return (Some(controller), Some(name));
        }
    };
    let run = cli(env, &args).await;
    assert_eq!(run.code == Some(0), !scenario.step_fails, "{run:#?}");
    (None, None)
}

async fn wait_for_story(
    env: &TestEnv,
    node: &str,
    driver: Driver,
    scenario: &Scenario,
) -> Vec<String> {
    // Events are written after the record they tell of: wait for the last one.
    let last = scenario.story.last().copied().unwrap_or_default();
    eventually(
        &format!("{driver:?}: {last} on {node}"),
        Duration::from_secs(20),
        || async { story(env, node).await.last().map(String::as_str) == Some(last) },
    )
    .await;
    story(env, node).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_roll_and_a_node_maintenance_pass_the_same_phases() {
    // A roll counts every node a NodeMaintenance has out against its cap, so the rolls
    // go first, side by side (each with its own lock), then the others.
    let rolls = SCENARIOS.iter().map(|s| run(Driver::Roll, s));
    let others = SCENARIOS
        .iter()
        .flat_map(|s| [Driver::Maintain, Driver::NodeMaintenance].map(|driver| run(driver, s)));
    let rolled = futures::future::join_all(rolls).await;
    let ran = futures::future::join_all(others).await;
    let mut ran = ran.into_iter();
    for (scenario, roll) in SCENARIOS.iter().zip(rolled) {
        let seen = [
            (Driver::Roll, roll),
            (Driver::Maintain, ran.next().expect("maintain's run")),
            (
                Driver::NodeMaintenance,
                ran.next().expect("the object's run"),
            ),
        ];
        for (driver, (told, cordoned)) in seen {
            assert_eq!(told, scenario.story, "{}: {driver:?}", scenario.name);
            assert_eq!(
                cordoned, scenario.cordoned_after,
                "{}: {driver:?} left the node cordoned: {cordoned}",
                scenario.name
            );
        }
    }
}
