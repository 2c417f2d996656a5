//! `kordon controller` carrying out NodeMaintenance objects on the real control plane,
//! one controller process per test limited to that test's objects by label: each
//! maintenance step, a refused plan, deletion mid-drain, and someone else's cordon.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kordon::api::node_maintenance::StatusPhase;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::nm::{
    Controller, api, complete_external, condition, create, delete, phase_of, wait_condition,
    wait_phase,
};
use support::watcher::ReadyWatcher;
use support::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_drains_within_budget_keeps_the_node_out_and_deleting_brings_it_back() {
    let env = TestEnv::two_nodes_with_web("nm-hold").await;
    let node = env.node("node-1");
    let web = ReadyWatcher::start(env.pods(), "app=web").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let _controller = Controller::start_with(&env, &["--metrics-address", &address]);

    let name = create(&env, "hold", &node, json!({ "step": { "hold": {} } })).await;
    let held = wait_condition(&name, "Blocked", "Held").await;
    assert_eq!(
        held.status.as_ref().and_then(|s| s.phase),
        Some(StatusPhase::Maintaining)
    );
    assert_eq!(condition(&held, "Progressing").0, "True");
    assert!(env.is_cordoned(&node).await);
    assert!(env.pods_on(&node).await.is_empty(), "node-1 is drained");
    assert!(web.min_ready() >= 1, "web kept a Ready pod throughout");
    let drain = held.status.and_then(|s| s.drain).expect("drain progress");
    assert_eq!((drain.total, drain.evicted), (1, 1));

    // Prometheus sees the same story.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-fsS", &format!("http://{address}{path}")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("/readyz"), "ready");
    let scraped = curl("/metrics");
    for line in [
        "kordon_nodes{phase=\"Maintaining\"} 1",
        "kordon_evictions_total{outcome=\"done\"} 1",
        "kordon_reconciles_total{result=\"ok\"}",
        "kordon_reconcile_duration_seconds_count",
    ] {
        assert!(scraped.contains(line), "{line} in:\n{scraped}");
    }

    // The CLI sees the node is the controller's and leaves it alone.
    let status = env.run_kordon(&["status", &node]);
    assert!(
        status
            .stdout
            .contains(&format!("held by NodeMaintenance {name}")),
        "{}",
        status.stdout
    );
    let maintain = env.run_kordon(&["maintain", &node, "--", "true"]);
    assert_eq!(maintain.code, Some(3), "{maintain:#?}");
    assert!(
        maintain
            .stderr
            .contains(&format!("NodeMaintenance {name} holds the node"))
    );
    let roll = env.run_kordon(&["roll", &node, "--lock-namespace", env.ns(), "--", "true"]);
    assert_eq!(roll.code, Some(3), "{roll:#?}");
    assert!(
        roll.stderr
            .contains("carries out a NodeMaintenance on node"),
        "{}",
        roll.stderr
    );

    // `kubectl get` tells the story at a glance.
    let table = env
        .kubectl()
        .args(["get", "nodemaintenances", &name])
        .output()
        .expect("kubectl get");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("Maintaining") && table.contains(&node),
        "{table}"
    );

    delete(&name).await;
    assert!(
        !env.is_cordoned(&node).await,
        "deleting the object uncordons"
    );
    let annotations = env
        .get_node(&node)
        .await
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.starts_with("kordon.dev/")),
        "no kordon mark is left: {annotations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_step_is_done_when_another_actor_sets_its_condition() {
    let env = TestEnv::two_nodes_with_web("nm-external").await;
    let node = env.node("node-1");
    let _controller = Controller::start(&env);

    let name = create(&env, "ext", &node, json!({ "step": { "external": {} } })).await;
    // The other actor (a driver operator, an OS updater) says it is done.
    complete_external(&name).await;
    let done = wait_phase(&name, StatusPhase::Done).await;
    assert_eq!(condition(&done, "Complete").0, "True");
    assert!(!env.is_cordoned(&node).await, "back in service");
    delete(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_step_waits_for_a_new_boot_id_and_someone_elses_cordon_stays() {
    let env = TestEnv::two_nodes_with_web("nm-reboot").await;
    let node = env.node("node-1");
    env.kubectl()
        .args(["cordon", &node])
        .output()
        .expect("kubectl cordon");
    let _controller = Controller::start(&env);

    let name = create(&env, "reboot", &node, json!({ "step": { "reboot": {} } })).await;
    wait_condition(&name, "Blocked", "AwaitingReboot").await;
    let reboot = env
        .kubectl()
        .args([
            "patch",
            "node",
            &node,
            "--subresource=status",
            "--type=merge",
            "-p",
        ])
        .arg(r#"{"status":{"nodeInfo":{"bootID":"boot-after"}}}"#)
        .output()
        .expect("kubectl patch");
    assert!(
        reboot.status.success(),
        "{}",
        String::from_utf8_lossy(&reboot.stderr)
    );
    wait_phase(&name, StatusPhase::Done).await;
    assert!(
        env.is_cordoned(&node).await,
        "the node had been cordoned by someone else: it stays cordoned"
    );
    delete(&name).await;
    assert!(env.is_cordoned(&node).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_plan_changes_nothing_and_says_why() {
    let mut env = TestEnv::new("nm-refused").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create(&fixtures::bare_pod("solo", &node, &PodOptions::default()))
        .await;
    env.wait_ready("app=solo", 1).await;
    let _controller = Controller::start(&env);

    let name = create(&env, "refused", &node, json!({ "step": { "hold": {} } })).await;
    let pending = wait_phase(&name, StatusPhase::Pending).await;
    eventually(
        "the refusal in the status",
        Duration::from_secs(30),
        || async {
            let nm = api().await.get(&name).await.expect("get");
            condition(&nm, "Blocked") == ("True".into(), "DrainRefused".into())
        },
    )
    .await;
    let status = api()
        .await
        .get(&name)
        .await
        .expect("get")
        .status
        .expect("status");
    assert!(
        status
            .refused
            .iter()
            .any(|r| r.contains("solo") && r.contains("spec.drain.force")),
        "{status:?} {pending:?}"
    );
    assert!(!env.is_cordoned(&node).await, "nothing changed");
    assert_eq!(env.pods_on(&node).await.len(), 1);
    delete(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_mid_drain_stops_evicting_and_uncordons() {
    let mut env = TestEnv::new("nm-withdraw").await;
    let node = env.add_node("node-1").await;
    let other = env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    env.hold_with_budgets(&["web"], &other).await;
    let before = env.pod_uids().await;
    let _controller = Controller::start(&env);

    let name = create(&env, "withdraw", &node, json!({ "step": { "hold": {} } })).await;
    eventually(
        "the budget to hold the drain",
        Duration::from_secs(60),
        || async {
            let nm = api().await.get(&name).await.expect("get");
            nm.status.and_then(|s| s.drain).is_some_and(|d| {
                d.held
                    .iter()
                    .any(|h| h.budget.as_deref() == Some("web-pdb"))
            })
        },
    )
    .await;
    assert!(env.is_cordoned(&node).await);

    delete(&name).await;
    assert!(
        !env.is_cordoned(&node).await,
        "the controller's cordon is lifted"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.pod_uids().await, before, "no pod was evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_mid_drain_when_the_leader_dies_and_keeps_the_budget() {
    let mut env = TestEnv::new("nm-leader").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    // Replacements take 8 s to be Ready and web may lose one pod at a time: the two
    // pods on node-1 go one after the other, slowly enough to kill the leader between
    // (the status shows the first eviction within 5 s).
    let slow = PodOptions {
        spread: true,
        ready_delay: Some("8s"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 4, &slow))
        .await;
    env.wait_ready("app=web", 4).await;
    let web = ReadyWatcher::start(env.pods(), "app=web").await;
    let election = [
        "--leader-election-namespace",
        env.ns(),
        "--lease-duration",
        "3s",
    ];
    let mut a = Controller::start_with(
        &env,
        &[&election[..], &["--identity", "replica-a"]].concat(),
    );
    let mut b = Controller::start_with(
        &env,
        &[&election[..], &["--identity", "replica-b"]].concat(),
    );

    let name = create(&env, "failover", &node, json!({ "step": { "hold": {} } })).await;
    eventually("the first eviction", Duration::from_secs(60), || async {
        let nm = api().await.get(&name).await.expect("get");
        nm.status
            .and_then(|s| s.drain)
            .is_some_and(|d| d.evicted >= 1)
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(support::client().await, env.ns());
    let holder = leases
        .get("kordon-controller")
        .await
        .expect("the leader lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    // kill -9: no goodbye, the lease just stops being renewed.
    let leader = if holder.starts_with("replica-a") {
        &mut a
    } else {
        &mut b
    };
    leader.0.kill().expect("kill the leader");

    let held = wait_phase(&name, StatusPhase::Maintaining).await;
    let taken_over = leases
        .get("kordon-controller")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(taken_over, holder, "the standby leads now");
    assert!(env.pods_on(&node).await.is_empty(), "the drain finished");
    assert_eq!(
        held.status.as_ref().and_then(|s| s.phase),
        Some(StatusPhase::Maintaining)
    );
    assert!(
        web.min_ready() >= 3,
        "web never lost more than one pod: {}",
        web.min_ready()
    );
    let drain = held.status.and_then(|s| s.drain).expect("drain progress");
    assert_eq!(
        drain.evicted, drain.total,
        "the counts add up after the resume: {drain:?}"
    );
    // The dead leader's drain Lease, and the budget it owned, are taken over and
    // removed: no budget the user never wrote keeps applying to every evictor.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(support::client().await, env.ns());
    let made_by_kordon =
        |role: &str| ListParams::default().labels(&format!("kordon.dev/role={role}"));
    eventually(
        "kordon's leases and budgets gone",
        Duration::from_secs(40),
        || async {
            let leases_left = leases
                .list(&made_by_kordon("drain-run"))
                .await
                .map(|l| l.items.len());
            let budgets_left = budgets
                .list(&made_by_kordon("shared-budget"))
                .await
                .map(|l| l.items.len());
            leases_left.is_ok_and(|n| n == 0) && budgets_left.is_ok_and(|n| n == 0)
        },
    )
    .await;
    delete(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_step_runs_on_the_node_and_a_failing_job_leaves_it_cordoned() {
    let env = TestEnv::two_nodes_with_web("nm-job").await;
    let node = env.node("node-1");
    let _controller = Controller::start(&env);
    let job = |fail: bool| {
        let annotations = if fail {
            json!({ "pod-fail.stage.kwok.x-k8s.io/delay": "1s" })
        } else {
            json!({ "pod-complete.stage.kwok.x-k8s.io/delay": "1s" })
        };
        json!({ "step": { "job": {
            "namespace": env.ns(),
            "template": {
                "metadata": { "annotations": annotations },
                "spec": { "containers": [{ "name": "update", "image": "os-updater:1" }] },
            },
        }}})
    };

    let name = create(&env, "job-ok", &node, job(false)).await;
    let done = wait_phase(&name, StatusPhase::Done).await;
    assert_eq!(condition(&done, "Complete").0, "True");
    assert!(!env.is_cordoned(&node).await, "back in service");
    let ran: Vec<_> = env
        .pods()
        .list(&Default::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("kordon-"))
        })
        .collect();
    assert!(
        ran.iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())),
        "the Job's pod ran on the node"
    );
    delete(&name).await;

    let name = create(&env, "job-fails", &node, job(true)).await;
    let failed = wait_phase(&name, StatusPhase::Failed).await;
    let error = failed.status.and_then(|s| s.last_error).unwrap_or_default();
    assert!(error.contains("failed"), "{error}");
    assert!(
        env.is_cordoned(&node).await,
        "a failed step leaves the node cordoned"
    );
    delete(&name).await;
    assert!(
        !env.is_cordoned(&node).await,
        "deleting the object brings it back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_api_refuses_fails_the_maintenance_with_the_reason() {
    let env = TestEnv::two_nodes_with_web("nm-badjob").await;
    let node = env.node("node-1");
    let _controller = Controller::start(&env);
    // A container without an image: the API server refuses the Job.
    let step = json!({ "step": { "job": {
        "namespace": env.ns(),
        "template": { "spec": { "containers": [{ "name": "update" }] } },
    }}});
    let name = create(&env, "badjob", &node, step).await;
    let failed = wait_phase(&name, StatusPhase::Failed).await;
    let error = failed.status.and_then(|s| s.last_error).unwrap_or_default();
    assert!(
        error.contains("create job") && error.contains("422"),
        "{error}"
    );
    assert!(
        env.is_cordoned(&node).await,
        "a failed step leaves the node cordoned"
    );
    delete(&name).await;
    assert!(!env.is_cordoned(&node).await);
}

/// Starts a rollout of `web` whose new pods take `delay` to be Ready: its workload is
/// not back at full Ready until the rollout is through.
async fn slow_rollout(env: &TestEnv, delay: &str) {
    let deployments: Api<Deployment> = Api::namespaced(support::client().await, env.ns());
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
        "pod-ready.stage.kwok.x-k8s.io/delay": delay,
    } } } } });
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("start a rollout");
}

async fn web_recovered(env: &TestEnv) -> bool {
    let deployments: Api<Deployment> = Api::namespaced(support::client().await, env.ns());
    let d = deployments.get("web").await.expect("web");
    let s = d.status.unwrap_or_default();
    s.observed_generation == d.metadata.generation
        && s.ready_replicas == Some(2)
        && s.updated_replicas == Some(2)
        && s.replicas == Some(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_gate_waits_for_the_workloads_it_touched_and_fails_past_its_timeout() {
    let env = TestEnv::two_nodes_with_web("nm-gate").await;
    let node = env.node("node-1");
    let _controller = Controller::start(&env);

    // web is mid-rollout when the node comes back: Done only once web is whole again.
    let name = create(&env, "gate", &node, json!({ "step": { "external": {} } })).await;
    let drained = wait_condition(&name, "Blocked", "AwaitingExternal").await;
    let touched = drained.status.map(|s| s.workloads).unwrap_or_default();
    assert_eq!(
        touched.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("Deployment {}/web", env.ns())],
        "the drain's workloads are recorded for the gate"
    );
    slow_rollout(&env, "15s").await;
    complete_external(&name).await;
    wait_condition(&name, "Blocked", "AwaitingWorkloads").await;
    assert!(
        !env.is_cordoned(&node).await,
        "back in service while it waits"
    );
    eventually("the gate to pass", Duration::from_secs(120), || async {
        phase_of(&name).await == Some(StatusPhase::Done)
    })
    .await;
    assert!(
        web_recovered(&env).await,
        "Done only once web is whole again"
    );
    delete(&name).await;

    // A gate that outlasts its timeout fails the maintenance; the node stays in service.
    // web's pods are all on node-2 now (the rollout ran while node-1 was cordoned).
    let node = env.node("node-2");
    let name = create(
        &env,
        "gate-short",
        &node,
        json!({ "step": { "external": {} }, "gateTimeout": "5s" }),
    )
    .await;
    wait_condition(&name, "Blocked", "AwaitingExternal").await;
    slow_rollout(&env, "60s").await;
    complete_external(&name).await;
    let failed = wait_phase(&name, StatusPhase::Failed).await;
    let error = failed.status.and_then(|s| s.last_error).unwrap_or_default();
    assert!(
        error.contains(&format!("Deployment {}/web", env.ns())),
        "names the workload: {error}"
    );
    assert!(
        !env.is_cordoned(&node).await,
        "a failed last gate leaves the node in service"
    );
    delete(&name).await;
}

/// A duration the controller could not read is refused when the object is written (the
/// CRDs' CEL rules), in every field that holds one, so none is silently ignored later.
#[tokio::test]
async fn a_bad_duration_in_a_spec_is_refused_when_written() {
    use kordon::api::NodeMaintenance;
    use kordon::api::maintenance_plan::MaintenancePlan;
    use kube::api::PostParams;

    let env = TestEnv::new("nm-durations").await;
    let _controller = Controller::start(&env); // applies the CRDs
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let nm = |spec: serde_json::Value| -> NodeMaintenance {
        let mut body = json!({ "nodeName": "x", "step": { "hold": {} } });
        body.as_object_mut()
            .expect("object")
            .extend(spec.as_object().expect("object").clone());
        serde_json::from_value(json!({
            "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
            "metadata": { "name": format!("{}-probe", env.ns()) }, "spec": body }))
        .expect("NodeMaintenance")
    };
    let nms: Api<NodeMaintenance> = Api::all(support::client().await);
    eventually("the CRDs to be served", Duration::from_secs(30), || async {
        nms.create(&dry, &nm(json!({}))).await.is_ok()
    })
    .await;
    for (spec, field) in [
        (json!({ "gateTimeout": "ten minutes" }), "spec.gateTimeout"),
        (json!({ "gateTimeout": "-5m" }), "spec.gateTimeout"),
        (
            json!({ "step": { "reboot": { "timeout": "1h 30m" } } }),
            "spec.step.reboot.timeout",
        ),
        (json!({ "drain": { "timeout": "soon" } }), "spec.drain"),
        (
            json!({ "drain": { "ladder": { "deadline": "2days" } } }),
            "spec.drain",
        ),
    ] {
        let refused = nms.create(&dry, &nm(spec.clone())).await;
        let Err(kube::Error::Api(status)) = refused else {
            panic!("{spec} was accepted: {refused:?}");
        };
        assert_eq!(status.code, 422, "{spec}: {status:?}");
        assert!(
            status.message.contains(field) && status.message.contains("such as 30m"),
            "{spec}: {}",
            status.message
        );
    }
    // A command step needs a program, and a timeout in Kubernetes' words.
    for (step, says) in [
        (
            json!({ "command": { "command": [] } }),
            "name the program to run",
        ),
        (
            json!({ "command": { "command": ["true"], "timeout": "a while" } }),
            "such as 30m",
        ),
        (
            json!({ "command": { "command": ["true"] }, "hold": {} }),
            "set exactly one of hold, job, reboot, command, external",
        ),
    ] {
        let refused = nms.create(&dry, &nm(json!({ "step": step }))).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains(says)),
            "{step}: {refused:?}"
        );
    }
    // Go's own forms are fine.
    nms.create(
        &dry,
        &nm(json!({ "gateTimeout": "1h30m", "drain": { "timeout": "1.5h" } })),
    )
    .await
    .expect("Go durations are accepted");
    let plans: Api<MaintenancePlan> = Api::all(support::client().await);
    let plan: MaintenancePlan = serde_json::from_value(json!({
        "apiVersion": "kordon.dev/v1alpha1", "kind": "MaintenancePlan",
        "metadata": { "name": format!("{}-probe", env.ns()) },
        "spec": { "nodeSelector": "a=b", "step": { "hold": {} }, "pauseBetween": "a while" } }))
    .expect("MaintenancePlan");
    let refused = plans.create(&dry, &plan).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("spec.pauseBetween")),
        "{refused:?}"
    );
}
