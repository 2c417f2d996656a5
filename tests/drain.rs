//! cordon, drain, uncordon, status on the real control plane: the seed article's
//! example, its three common drain issues, budgets, StatefulSets and dry runs.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::watcher::ReadyWatcher;
use support::{Run, TestEnv, eventually};

/// The article's Real Example: node-1 and node-2, four nginx pods, two on each.
async fn article_cluster(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name).await;
    env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create(&fixtures::deployment(
        env.ns(),
        "nginx",
        4,
        &fixtures::SPREAD,
    ))
    .await;
    env.wait_ready("app=nginx", 4).await;
    assert_eq!(env.pods_on(&env.node("node-2")).await.len(), 2);
    env
}

#[tokio::test]
async fn article_example_drain_moves_all_four_pods_to_node_1_and_uncordon_restores_it() {
    let env = article_cluster("article").await;
    let (node_1, node_2) = (env.node("node-1"), env.node("node-2"));

    let run = env.run_kordon(&["drain", &node_2]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains(&format!("{node_2}: Ready -> Ready,SchedulingDisabled")),
        "{}",
        run.stdout
    );
    for stage in ["Pending", "ContainerCreating", "Ready"] {
        assert!(
            run.stdout.contains(&format!("{stage} on {node_1}")),
            "{}",
            run.stdout
        );
    }
    // Done once nginx, under an implicit budget, is back at all four Ready.
    assert!(
        run.stdout
            .contains("2 evicted, 0 skipped, replacements Ready 2/2, every workload at its budget"),
        "{}",
        run.stdout
    );

    let ready = env.wait_ready("app=nginx", 4).await;
    assert!(
        ready
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_1.as_str()))
    );
    assert!(env.pods_on(&node_2).await.is_empty());
    assert!(env.is_cordoned(&node_2).await);

    // The article's "after" picture.
    let status = env.run_kordon(&["status", &node_1, &node_2]);
    status.assert_ok();
    let tree = status.stdout.replace(&format!("{}/", env.ns()), "");
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines[0], format!("{node_1}  Ready"));
    assert_eq!(lines.iter().filter(|l| l.contains("── nginx-")).count(), 4);
    assert_eq!(lines[5], format!("{node_2}  Ready,SchedulingDisabled"));
    assert_eq!(lines[6], "└── (no pods)");

    let run = env.run_kordon(&["uncordon", &node_2]);
    run.assert_ok();
    assert_eq!(
        run.stdout.trim(),
        format!("{node_2}: Ready,SchedulingDisabled -> Ready")
    );
    assert!(!env.is_cordoned(&node_2).await);
}

/// Runs a drain that must be refused and checks that nothing changed.
async fn assert_refused_unchanged(env: &TestEnv, node: &str, args: &[&str], flag: &str, pod: &str) {
    let before = env.pod_uids().await;
    let mut all = vec!["drain", node];
    all.extend_from_slice(args);
    let run = env.run_kordon(&all);
    assert_eq!(run.code, Some(3), "refused drain exits 3: {run:#?}");
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    assert!(
        run.stderr.contains(flag),
        "{} should name {flag}",
        run.stderr
    );
    assert!(
        run.stdout.contains(pod) && run.stdout.contains(&format!("pass {flag}")),
        "{}",
        run.stdout
    );
    assert!(
        !env.is_cordoned(node).await,
        "a refused drain does not cordon"
    );
    assert_eq!(env.pod_uids().await, before, "no pod was touched");
}

#[tokio::test]
async fn daemonset_pods_are_refused_without_ignore_daemonsets_and_left_running_with_it() {
    let mut env = TestEnv::new("ds").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create::<DaemonSet>(&fixtures::daemonset(env.ns(), "agent"))
        .await;
    env.wait_ready("app=agent", 2).await;

    assert_refused_unchanged(&env, &node, &[], "--ignore-daemonsets", "agent-").await;

    let run = env.run_kordon(&["drain", &node, "--ignore-daemonsets", "-o", "json"]);
    run.assert_ok();
    let report = &run.json()[0];
    assert_eq!(
        report["pods"],
        json!([{ "pod": report["pods"][0]["pod"], "verdict": "skip", "reason": "daemonSet" }]),
        "{report:#}"
    );
    assert_eq!(report["evicted"], json!([]), "{report:#}");
    assert_eq!(env.pods_on(&node).await.len(), 1, "the DaemonSet pod stays");
}

#[tokio::test]
async fn emptydir_pods_are_refused_without_delete_emptydir_data_and_evicted_with_it() {
    let mut env = TestEnv::new("emptydir").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    let opts = PodOptions {
        empty_dir: true,
        ..fixtures::SPREAD
    };
    env.create(&fixtures::deployment(env.ns(), "cache", 2, &opts))
        .await;
    env.wait_ready("app=cache", 2).await;

    assert_refused_unchanged(&env, &node, &[], "--delete-emptydir-data", "cache-").await;

    let run = env.run_kordon(&["drain", &node, "--delete-emptydir-data", "-o", "json"]);
    run.assert_ok();
    let report = &run.json()[0];
    let pods = report["pods"].as_array().expect("pods");
    assert!(
        !pods.is_empty()
            && pods
                .iter()
                .all(|p| p["verdict"] == "evict" && p["lostVolumes"] == json!(["cache"])),
        "evicted, their emptyDir data lost: {report:#}"
    );
    assert!(env.pods_on(&node).await.is_empty());
    env.wait_ready("app=cache", 2).await;
}

#[tokio::test]
async fn standalone_pods_are_refused_without_force_and_gone_for_good_with_it() {
    let mut env = TestEnv::new("bare").await;
    let node = env.add_node("node-1").await;
    env.create(&fixtures::bare_pod("lonely", &node, &PodOptions::default()))
        .await;
    env.wait_ready("app=lonely", 1).await;

    assert_refused_unchanged(&env, &node, &[], "--force", "lonely").await;

    let run = env.run_kordon(&["drain", &node, "--force", "-o", "json"]);
    run.assert_ok();
    let report = &run.json()[0];
    assert_eq!(report["pods"][0]["verdict"], "evict", "{report:#}");
    assert_eq!(
        report["pods"][0]["replacement"],
        json!({ "by": "none" }),
        "no controller: gone for good: {report:#}"
    );
    assert_eq!(report["replacements"], json!([]), "{report:#}");
    assert!(
        env.pod_uids().await.is_empty(),
        "nothing recreates a standalone pod"
    );
}

#[tokio::test]
async fn pods_marked_do_not_disrupt_are_refused_up_front_and_move_with_the_override() {
    let mut env = TestEnv::new("dnd").await;
    let node = env.add_node("node-1").await;
    let marked = PodOptions {
        annotations: &[("karpenter.sh/do-not-disrupt", "true")],
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "batch", 2, &marked))
        .await;
    env.wait_ready("app=batch", 2).await;
    env.add_node("node-2").await;

    assert_refused_unchanged(&env, &node, &[], "--ignore-do-not-disrupt", "batch").await;

    env.run_kordon(&["drain", &node, "--ignore-do-not-disrupt"])
        .assert_ok();
    let moved = env.wait_ready("app=batch", 2).await;
    assert!(
        moved
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(env.node("node-2").as_str())),
        "both replicas run on node-2 now"
    );
}

/// Two Ready web pods (one per node) and a third pod under the same budget that never
/// becomes Ready: the budget (minAvailable 2 of 3 expected) allows nothing now, but
/// would once the third pod is Ready.
async fn budget_at_zero_for_now(name: &str) -> (TestEnv, String) {
    let mut env = TestEnv::new(name).await;
    let node = env.add_node("node-1").await;
    let other = env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    env.hold_with_budgets(&["web"], &other).await;
    (env, node)
}

#[tokio::test]
async fn a_budget_at_zero_times_out_naming_the_pdb_and_its_numbers() {
    let (env, node) = budget_at_zero_for_now("pdb0").await;
    let before = env.pod_uids().await;

    let run = env.run_kordon(&["drain", &node, "--timeout", "4s"]);
    assert_eq!(run.code, Some(4), "a timed-out drain exits 4: {run:#?}");
    assert!(
        run.stdout
            .contains("waiting for PodDisruptionBudget web-pdb"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("The disruption budget web-pdb needs 2 healthy pods and has 2 currently"),
        "{}",
        run.stderr
    );
    assert_eq!(env.pod_uids().await, before, "the budget kept every pod");
}

#[tokio::test]
async fn a_pod_terminating_before_the_drain_is_not_reported_left_once_gone() {
    let (env, node) = budget_at_zero_for_now("leaving").await;
    let slow_exit = PodOptions {
        delete_delay: Some("3s"),
        ..Default::default()
    };
    env.create(&fixtures::bare_pod("leaving", &node, &slow_exit))
        .await;
    env.wait_ready("app=leaving", 1).await;
    env.pods()
        .delete("leaving", &Default::default())
        .await
        .expect("delete");

    // The budget holds web's pod past the timeout; the terminating pod is gone by then.
    let run = env.run_kordon(&["drain", &node, "--timeout", "10s", "-o", "json"]);
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(run.stderr.contains("with 1 pod(s) left"), "{}", run.stderr);
    // Under -o json the timeout is also a document on stdout.
    let doc = run.json();
    assert_eq!(
        (&doc["kind"], &doc["reason"], &doc["exit"]),
        (&json!("Error"), &json!("TimedOut"), &json!(4)),
        "{doc:#}"
    );
    assert!(
        doc["message"].as_str().is_some_and(|m| m.contains("/web-")),
        "{doc:#}"
    );
    assert!(run.stderr.contains("/web-"), "{}", run.stderr);
    assert!(!run.stderr.contains("/leaving"), "{}", run.stderr);
}

#[tokio::test]
async fn a_budget_that_can_never_allow_is_refused_up_front_with_the_flag_that_helps() {
    let mut env = TestEnv::new("pdbnever").await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb("web-pdb", "web", ("minAvailable", json!(2))))
        .await;
    env.wait_ready("app=web", 2).await;
    assert_refused_unchanged(&env, &node, &[], "--surge", "web-").await;
    let run = env.run_kordon(&["drain", &node]);
    assert!(
        run.stdout.contains("PodDisruptionBudget web-pdb never allows an eviction (minAvailable 2 with 2 replica(s))"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_statefulset_pod_replaced_under_the_same_name_is_not_mistaken_for_the_old_one() {
    let mut env = TestEnv::new("sts").await;
    env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create::<StatefulSet>(&fixtures::statefulset(
        env.ns(),
        "db",
        1,
        &PodOptions::default(),
    ))
    .await;
    let old = env.wait_ready("app=db", 1).await.remove(0);
    let node = old
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("scheduled");

    // A lone StatefulSet pod cannot surge: only accepting the outage moves it.
    assert_refused_unchanged(&env, &node, &[], "--allow-disruption", "db-0").await;
    let run = env.run_kordon(&["drain", &node, "--allow-disruption", "-o", "json"]);
    run.assert_ok();
    let report = &run.json()[0];
    let replacements = report["replacements"].as_array().expect("replacements");
    assert!(
        replacements.len() == 1 && replacements[0]["stage"] == "Ready",
        "{report:#}"
    );

    let new = env.wait_ready("app=db", 1).await.remove(0);
    assert_eq!(new.metadata.name, old.metadata.name, "same name");
    assert_ne!(new.metadata.uid, old.metadata.uid, "a new pod");
    assert_ne!(new.spec.and_then(|s| s.node_name), Some(node));
}

#[tokio::test]
async fn dry_runs_change_nothing() {
    let env = article_cluster("dryrun").await;
    let node_2 = env.node("node-2");
    let before = env.pod_uids().await;
    for mode in ["--dry-run=client", "--dry-run=server", "--dry-run"] {
        let run = env.run_kordon(&["drain", &node_2, mode, "-o", "json"]);
        run.assert_ok();
        let report = &run.json()[0];
        assert_eq!(report["dryRun"], true, "{mode}: {report:#}");
        let to_evict = report["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .filter(|p| p["verdict"] == "evict")
            .count();
        assert_eq!(to_evict, 2, "{mode}: {report:#}");
        let run = env.run_kordon(&["cordon", &node_2, mode, "-o", "json"]);
        run.assert_ok();
        let report = run.json();
        assert_eq!(report["dryRun"], true, "{mode}: {report:#}");
        let node = &report["nodes"][0];
        assert!(
            node["changed"] == true && node["after"] == "Ready,SchedulingDisabled",
            "{mode}: {report:#}"
        );
    }
    assert!(!env.is_cordoned(&node_2).await);
    assert_eq!(env.pod_uids().await, before);
}

#[tokio::test]
async fn unknown_node_and_bad_selectors_are_one_sentence_and_change_nothing() {
    let env = article_cluster("badinput").await;
    let node_2 = env.node("node-2");
    let before = env.pod_uids().await;
    // An unknown node is found out by the cluster (1); a bad selector is bad input (2).
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["drain", "no-such-node"],
            1,
            "node \"no-such-node\" not found",
        ),
        (
            &["drain", &node_2, "no-such-node"],
            1,
            "node \"no-such-node\" not found",
        ),
        (
            &["cordon", "--selector", "a in ("],
            2,
            "invalid label selector \"a in (\"",
        ),
        (
            &["drain", &node_2, "--pod-selector", "=x"],
            2,
            "invalid pod selector \"=x\"",
        ),
    ];
    for (args, code, needle) in cases {
        let run: Run = env.run_kordon(args);
        assert_eq!(run.code, Some(code), "{args:?}: {run:#?}");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
    assert!(!env.is_cordoned(&node_2).await);
    assert_eq!(env.pod_uids().await, before);
}

/// A Deployment of two whose budget allows no disruption at all.
async fn blocked_by_budget(name: &str) -> (TestEnv, String) {
    let mut env = TestEnv::new(name).await;
    let node = env.add_node("node-1").await;
    env.add_node("node-2").await;
    env.create(&fixtures::deployment(env.ns(), "web", 2, &fixtures::SPREAD))
        .await;
    env.create::<PodDisruptionBudget>(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", json!(0)),
    ))
    .await;
    env.wait_ready("app=web", 2).await;
    (env, node)
}

#[tokio::test]
async fn disable_eviction_deletes_past_the_budget_and_says_so() {
    let (env, node) = blocked_by_budget("noevict").await;
    let run = env.run_kordon(&["drain", &node, "--disable-eviction", "--timeout", "60s"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("PodDisruptionBudgets are NOT honoured"),
        "{}",
        run.stderr
    );
    assert!(env.pods_on(&node).await.is_empty());
}

#[tokio::test]
async fn ctrl_c_stops_evicting_and_reports_what_is_left() {
    use std::io::{BufRead, BufReader};
    let (env, node) = budget_at_zero_for_now("ctrlc").await;
    let mut child = env
        .kordon()
        .args(["drain", &node])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kordon");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        if line
            .expect("line")
            .contains("waiting for PodDisruptionBudget web-pdb")
        {
            break;
        }
    }
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: stopped issuing evictions with 1 pod(s) left"),
        "{stderr}"
    );
    assert!(env.is_cordoned(&node).await, "the node stays cordoned");
    assert_eq!(env.pods_on(&node).await.len(), 1);
}

/// Issue 19: a rollout of the workload while it is drained. The rollout replaces the
/// very replacements a drain would follow, and a Deployment controller is no evictor a
/// PodDisruptionBudget can stop: kordon waits while the workload rolls out, never adds
/// an eviction to the rollout's own, and is done when the workload is back, whichever
/// ReplicaSet's pods provide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_during_the_drain_never_takes_the_workload_below_its_rolling_update() {
    let mut env = TestEnv::new("rollout").await;
    let node = env.add_node("node-1").await;
    // All four pods on node-1 first; the others join once they run.
    let slow = PodOptions {
        ready_delay: Some("3s"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 4, &slow))
        .await;
    env.wait_ready("app=web", 4).await;
    env.add_node("node-2").await;
    env.add_node("node-3").await;
    // Its rolling update (25% of 4) lets one pod be unavailable: 3 must serve.
    let web = ReadyWatcher::start(env.pods(), "app=web").await;

    let drain = env
        .kordon()
        .args(["drain", &node, "--timeout", "120s", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kordon drain");
    eventually("the drain to cordon", Duration::from_secs(30), || async {
        env.is_cordoned(&node).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart = json!({ "spec": { "template": { "metadata": { "annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-12-05T12:00:00Z" } } } } });
    Api::<Deployment>::namespaced(support::client().await, env.ns())
        .patch("web", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .expect("rollout restart");

    let run = Run::from(
        tokio::task::spawn_blocking(move || drain.wait_with_output())
            .await
            .expect("join")
            .expect("kordon drain"),
    );
    run.assert_ok();
    let report = &run.json()[0];
    assert_eq!(report["workloads"][0]["state"], "back", "{report:#}");
    assert!(
        report["workloads"][0]["serving"]
            .as_array()
            .is_some_and(|s| s.len() >= 3),
        "the pods that serve it are named: {report:#}"
    );
    assert!(env.pods_on(&node).await.is_empty(), "node-1 is empty");
    assert!(
        web.min_ready() >= 3,
        "web never fell below what its rolling update alone allows: {}",
        web.min_ready()
    );
}

/// Issue 19: the Eviction API refuses any pod that two PodDisruptionBudgets cover, so
/// that is said before anything changes, in `drain` and in `plan`.
#[tokio::test]
async fn a_pod_under_two_budgets_is_refused_before_the_cordon_naming_both() {
    let env = TestEnv::two_nodes_with_web("two-pdbs").await;
    let node = env.node("node-2");
    for name in ["web", "web-too"] {
        env.create(&fixtures::pdb(name, "web", ("maxUnavailable", json!(1))))
            .await;
    }
    assert_refused_unchanged(&env, &node, &[], "--disable-eviction", "web").await;
    let refused = env.run_kordon(&["drain", &node]);
    assert!(
        refused
            .stderr
            .contains("several PodDisruptionBudgets (web, web-too)"),
        "{refused:#?}"
    );
    let plan = env.run_kordon(&["plan", &node, "-o", "json"]);
    assert_eq!(plan.code, Some(3), "the plan is unsafe: {plan:#?}");
    let refused = plan.json().to_string();
    assert!(
        refused.contains("severalBudgets") && refused.contains("web-too"),
        "{refused}"
    );
}

/// Issue 19: a drain that ends with its pods gone but a workload still below its budget
/// does not exit 0; it says which workload, and how short.
#[tokio::test]
async fn a_drain_whose_workload_is_not_back_by_the_timeout_says_which_and_exits_4() {
    let mut env = TestEnv::new("not-back").await;
    let node = env.add_node("node-1").await;
    // A bare ReplicaSet: its template changes only the pods it makes from now on.
    let mut rs: serde_json::Value = serde_json::to_value(fixtures::deployment(
        env.ns(),
        "web",
        2,
        &PodOptions::default(),
    ))
    .expect("json");
    rs["kind"] = json!("ReplicaSet");
    let rs: ReplicaSet = serde_json::from_value(rs).expect("replicaset");
    env.create(&rs).await;
    env.wait_ready("app=web", 2).await;
    env.add_node("node-2").await;
    let never_ready = json!({ "spec": { "template": { "metadata": { "annotations": {
        "pod-ready.stage.kwok.x-k8s.io/delay": "1h" } } } } });
    Api::<ReplicaSet>::namespaced(support::client().await, env.ns())
        .patch("web", &PatchParams::default(), &Patch::Merge(&never_ready))
        .await
        .expect("patch the template");
    // Deleted, not evicted: both go at once, and their replacements are never Ready.
    let run = env.run_kordon(&["drain", &node, "--disable-eviction", "--timeout", "10s"]);
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(
        run.stderr.contains("is drained, but")
            && run
                .stderr
                .contains(&format!("ReplicaSet {}/web (0 Ready, needs 2)", env.ns())),
        "{run:#?}"
    );
    assert!(env.pods_on(&node).await.is_empty(), "the pods are gone");
}
