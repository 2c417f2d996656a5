//! `kordon roll` over several fake nodes on the real control plane: the concurrency cap
//! and budgets seen by independent watchers, crashes (`kill -9`) at several points
//! followed by a re-run, the lock, windows, failures, and bad input.
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use serde_json::json;
use support::fixtures::{self, PodOptions};
use support::watcher::{CordonWatcher, NodeChange, NodeLog, ReadyWatcher, ZONE, ZoneWatcher};
use support::{ENV_LABEL, Run, TestEnv, eventually};

/// `count` nodes and a Deployment `web` with one pod per node, plus a DaemonSet.
async fn fleet(name: &str, count: usize) -> (TestEnv, Vec<String>) {
    let mut env = TestEnv::new(name).await;
    let mut nodes = Vec::new();
    for i in 1..=count {
        nodes.push(env.add_node(&format!("node-{i}")).await);
    }
    let spread = PodOptions {
        spread: true,
        ..Default::default()
    };
    env.create(&fixtures::deployment(
        env.ns(),
        "web",
        count as i32,
        &spread,
    ))
    .await;
    env.create(&fixtures::daemonset(env.ns(), "agent")).await;
    env.wait_ready("app=web", count).await;
    env.wait_ready("app=agent", count).await;
    (env, nodes)
}

/// A [`fleet`] of one node per zone given, labelled so. web's implicit budget lets one
/// pod go at a time, which alone would keep two of its nodes from being out together: a
/// budget that allows two keeps the tests about zones.
async fn zoned_fleet(name: &str, zones: &[&str]) -> (TestEnv, Vec<String>) {
    let (env, nodes) = fleet(name, zones.len()).await;
    for (node, zone) in nodes.iter().zip(zones) {
        env.label_node(node, &[&format!("{ZONE}={zone}")]);
    }
    env.create::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", json!(2)),
    ))
    .await;
    (env, nodes)
}

/// The roll's common flags: this test's own lock, short enough to take over quickly.
fn roll_args<'a>(env: &'a TestEnv, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "roll",
        "--lock-namespace",
        env.ns(),
        "--lock-duration",
        "3s",
        "--ignore-daemonsets",
    ];
    args.extend_from_slice(extra);
    args
}

fn annotations(node: &Node) -> BTreeMap<String, String> {
    node.metadata.annotations.clone().unwrap_or_default()
}

async fn phase(env: &TestEnv, node: &str) -> Option<String> {
    annotations(&env.get_node(node).await)
        .get("kordon.dev/phase")
        .cloned()
}

/// Every node done, schedulable, and `web` whole again.
async fn assert_all_done(env: &TestEnv, nodes: &[String]) {
    for node in nodes {
        assert_eq!(phase(env, node).await.as_deref(), Some("done"), "{node}");
        assert!(!env.is_cordoned(node).await, "{node} is uncordoned");
    }
    env.wait_ready("app=web", nodes.len()).await;
}

/// The `-o json` report of a roll that ended `done`, and each node's outcome.
fn report_done(run: &Run) -> (serde_json::Value, Vec<String>) {
    let report = run.json();
    assert_eq!(report["state"], "done", "{report:#}");
    let outcomes = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["outcome"].as_str().unwrap_or_default().to_string())
        .collect();
    (report, outcomes)
}

/// The `-o json` report of a fresh roll that did all its `count` nodes.
fn assert_report_done(run: &Run, count: usize) -> serde_json::Value {
    let (report, outcomes) = report_done(run);
    assert_eq!(outcomes, vec!["done"; count], "{report:#}");
    report
}

async fn roll_keeps_budgets_and_the_cap(name: &str, cap: usize) {
    let (env, nodes) = fleet(name, 4).await;
    let web = ReadyWatcher::start(env.pods(), "app=web").await;
    let cordons = CordonWatcher::start(
        Api::all(env.client.clone()),
        &format!("{ENV_LABEL}={}", env.ns()),
    )
    .await;
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let cap_arg = cap.to_string();
    let run = env.run_kordon(&roll_args(
        &env,
        &[
            "--selector",
            &selector,
            "--max-unavailable",
            &cap_arg,
            "-o",
            "json",
            "--",
            "true",
        ],
    ));
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    assert!(
        cordons.max_cordoned() <= cap,
        "at most {cap} node(s) unschedulable at once, saw {}",
        cordons.max_cordoned()
    );
    assert!(cordons.max_cordoned() >= 1);
    // 4 replicas, maxUnavailable 25% → at least 3 Ready throughout.
    assert!(web.min_ready() >= 3, "web dipped to {}", web.min_ready());
    assert_report_done(&run, 4);

    // The story is in `kubectl describe node`, as Events.
    let out = env
        .kubectl()
        .args(["describe", "node", &nodes[0]])
        .output()
        .expect("kubectl describe");
    let described = String::from_utf8_lossy(&out.stdout);
    for reason in [
        "Draining",
        "Maintaining",
        "AwaitingReady",
        "Uncordoned",
        "MaintenanceDone",
    ] {
        assert!(described.contains(reason), "{reason} in:\n{described}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_one_at_a_time_keeps_every_budget() {
    roll_keeps_budgets_and_the_cap("roll1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roll_two_at_a_time_never_has_more_than_two_nodes_out() {
    roll_keeps_budgets_and_the_cap("roll2", 2).await;
}

/// Starts a roll in the background.
fn spawn_roll(env: &TestEnv, args: &[&str]) -> Child {
    env.kordon()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kordon")
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().expect("wait for kordon"))
}

/// A maintenance command (`sh -c SCRIPT`) that marks its start with a file, so a test
/// can act while it runs rather than in the moment between the phase change and its start.
struct Announced {
    file: std::path::PathBuf,
    script: String,
}

impl Announced {
    fn sleeping(env: &TestEnv, seconds: u32) -> Self {
        let file = std::env::temp_dir().join(format!("kordon-{}-started", env.id));
        let _ = std::fs::remove_file(&file);
        let script = format!("touch {}; sleep {seconds}", file.display());
        Self { file, script }
    }

    async fn started(&self) {
        eventually("the command started", Duration::from_secs(60), || async {
            self.file.exists()
        })
        .await;
    }
}

/// Where the crash happens.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    AfterCordon,
    MidDrain,
    DuringCommand,
    BeforeUncordon,
}

/// A roll over three nodes, the first cordoned by someone else before the run, killed
/// with SIGKILL while the second node is at `point`; a re-run of the same command
/// completes, leaving no node cordoned but the one that was cordoned before.
async fn crash_and_resume(name: &str, point: KillPoint) {
    let (env, nodes) = fleet(name, 3).await;
    // Someone else cordoned node-1 before the run.
    let cordon = |node: &str, on: bool| {
        let verb = if on { "cordon" } else { "uncordon" };
        let out = env.kubectl().args([verb, node]).output().expect("kubectl");
        assert!(out.status.success(), "{out:?}");
    };
    cordon(&nodes[0], true);
    // Two more pods on node-2, which a budget lets go one at a time, slowly; placed
    // there by keeping node-3 cordoned while they are scheduled.
    cordon(&nodes[2], true);
    let slow = PodOptions {
        delete_delay: Some("3s"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "slow", 2, &slow))
        .await;
    env.create(&fixtures::pdb("slow", "slow", ("maxUnavailable", json!(1))))
        .await;
    env.wait_ready("app=slow", 2).await;
    cordon(&nodes[2], false);

    let command = "case \"$KORDON_NODE\" in *node-2) sleep 4;; esac";
    // Someone else's node is maintained in its turn, its cordon kept (counted against
    // the cap, it would be left to them until they uncordon it).
    let args = roll_args(
        &env,
        &[
            &nodes[0],
            &nodes[1],
            &nodes[2],
            "--order",
            "given",
            "--lock-timeout",
            "60s",
            "--count-others-out=false",
            "--",
            "sh",
            "-c",
            command,
        ],
    );
    let mut child = spawn_roll(&env, &args);
    let target = nodes[1].clone();
    eventually(
        &format!("{target} at {point:?}"),
        Duration::from_secs(90),
        || async {
            let phase = phase(&env, &target).await;
            match point {
                KillPoint::AfterCordon => {
                    phase.as_deref() == Some("draining") && env.is_cordoned(&target).await
                }
                KillPoint::MidDrain => {
                    let on_node = env.pods_on(&target).await;
                    phase.as_deref() == Some("draining")
                        && on_node.iter().filter(|p| label(p) == "slow").count() == 1
                }
                KillPoint::DuringCommand => phase.as_deref() == Some("maintaining"),
                KillPoint::BeforeUncordon => phase.as_deref() == Some("awaiting-ready"),
            }
        },
    )
    .await;
    child.kill().expect("kill -9 kordon");
    let crashed = finish(child);
    assert_ne!(crashed.code, Some(0), "{crashed:#?}");
    assert!(
        env.is_cordoned(&target).await,
        "left cordoned, with its phase"
    );

    // Anyone can see where the run stands.
    let status = env.run_kordon(&[
        "status",
        "--lock-namespace",
        env.ns(),
        &target,
        "-o",
        "json",
    ]);
    status.assert_ok();
    let status = status.json();
    let run_id = status["run"]["run"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(run_id.starts_with("roll-"), "the last run: {status:#}");
    assert_eq!(
        status["nodes"][0]["maintenance"]["run"], run_id,
        "the node's phase in that run: {status:#}"
    );

    let mut rerun_args = args.clone();
    rerun_args.splice(1..1, ["-o", "json"]);
    let rerun = env.run_kordon(&rerun_args);
    rerun.assert_ok();
    let (report, outcomes) = report_done(&rerun);
    assert_eq!(
        outcomes,
        ["alreadyDone", "done", "done"],
        "node-1 was done before the crash: {report:#}"
    );
    assert_eq!(report["resumed"], true, "{report:#}");
    assert_eq!(report["run"], run_id.as_str(), "the same run: {report:#}");
    assert!(
        env.is_cordoned(&nodes[0]).await,
        "the node cordoned before the run stays cordoned"
    );
    for node in &nodes[1..] {
        assert_eq!(phase(&env, node).await.as_deref(), Some("done"), "{node}");
        assert!(!env.is_cordoned(node).await, "{node} is uncordoned");
    }
    assert_eq!(phase(&env, &nodes[0]).await.as_deref(), Some("done"));
    env.wait_ready("app=web", 3).await;
    env.wait_ready("app=slow", 2).await;
}

fn label(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app").cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_crash_right_after_the_cordon_resumes() {
    crash_and_resume("killcordon", KillPoint::AfterCordon).await;
}

#[tokio::test]
async fn a_crash_mid_drain_resumes() {
    crash_and_resume("killdrain", KillPoint::MidDrain).await;
}

#[tokio::test]
async fn a_crash_during_the_command_resumes() {
    crash_and_resume("killcmd", KillPoint::DuringCommand).await;
}

#[tokio::test]
async fn a_crash_before_the_uncordon_resumes() {
    crash_and_resume("killready", KillPoint::BeforeUncordon).await;
}

#[tokio::test]
async fn a_second_run_is_refused_while_the_first_holds_the_lock() {
    let (env, nodes) = fleet("rolllock", 2).await;
    let first_args = roll_args(&env, &[&nodes[0], "--", "sleep", "6"]);
    let first = spawn_roll(&env, &first_args);
    eventually(
        "the first run maintaining",
        Duration::from_secs(60),
        || async { phase(&env, &nodes[0]).await.as_deref() == Some("maintaining") },
    )
    .await;
    let second = env.run_kordon(&roll_args(&env, &[&nodes[1], "--", "true"]));
    assert_eq!(second.code, Some(3), "{second:#?}");
    assert!(
        second.stderr.contains("another kordon run holds the lock")
            && second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert!(
        !env.is_cordoned(&nodes[1]).await,
        "the second run changed nothing"
    );
    assert_eq!(phase(&env, &nodes[1]).await, None);

    // A run told to wait starts once the first is done, from what the cluster is then:
    // the first run's node is done, not mid-phase.
    let both = [
        &nodes[0],
        &nodes[1],
        "--lock-timeout",
        "60s",
        "-o",
        "json",
        "--",
        "true",
    ];
    let waiting = spawn_roll(&env, &roll_args(&env, &both));
    finish(first).assert_ok();
    let third = finish(waiting);
    third.assert_ok();
    let report = assert_report_done(&third, 2);
    assert_eq!(report["resumed"], false, "a run of its own: {report:#}");
    assert_all_done(&env, &nodes).await;
}

#[tokio::test]
async fn a_closed_window_makes_the_run_wait_for_it() {
    let (env, nodes) = fleet("rollwindow", 2).await;
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    let closes = opens + jiff::SignedDuration::from_hours(1);
    let window = format!(
        "daily {}-{} UTC",
        opens.strftime("%H:%M:%S"),
        closes.strftime("%H:%M:%S")
    );
    let run = env.run_kordon(&roll_args(
        &env,
        &[&nodes[0], "--window", &window, "--", "true"],
    ));
    run.assert_ok();
    assert!(
        run.stdout
            .contains("outside every maintenance window: no new node starts until"),
        "{}",
        run.stdout
    );
    let node = env.get_node(&nodes[0]).await;
    let started: jiff::Timestamp = annotations(&node)["kordon.dev/started-at"]
        .parse()
        .expect("a timestamp");
    assert!(
        started
            >= opens.round(jiff::Unit::Second).expect("round") - jiff::SignedDuration::from_secs(1),
        "started {started}, the window opened {opens}"
    );
}

#[tokio::test]
async fn a_failing_command_on_the_third_node_halts_the_roll() {
    let (env, nodes) = fleet("rollfail", 4).await;
    // Each node's command saves the nodes as they are while it works.
    let dir = std::env::temp_dir().join(format!("kordon-pending-{}", env.id));
    std::fs::create_dir_all(&dir).expect("a directory for the snapshots");
    let fail_on = format!(
        "kubectl --kubeconfig {} get nodes {} -o json > {}/\"$KORDON_NODE\".json; test \"$KORDON_NODE\" != {}",
        support::kubeconfig().display(),
        nodes.join(" "),
        dir.display(),
        nodes[2]
    );
    let mut args = roll_args(&env, &["--order", "given", "-o", "json"]);
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--", "sh", "-c", &fail_on]);
    let run = env.run_kordon(&args);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{} failed in maintaining and stays cordoned",
            nodes[2]
        )),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["state"], "halted", "{report:#}");
    let outcomes: Vec<(&str, &str)> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap_or_default();
            (field("node"), field("outcome"))
        })
        .collect();
    let expected: Vec<(&str, &str)> = nodes
        .iter()
        .map(String::as_str)
        .zip(["done", "done", "failed", "notStarted"])
        .collect();
    assert_eq!(outcomes, expected, "{report:#}");
    for node in &nodes[..2] {
        assert_eq!(phase(&env, node).await.as_deref(), Some("done"));
        assert!(!env.is_cordoned(node).await);
    }
    let third = env.get_node(&nodes[2]).await;
    assert!(
        env.is_cordoned(&nodes[2]).await,
        "the failed node stays cordoned"
    );
    assert_eq!(annotations(&third)["kordon.dev/phase"], "maintaining");
    assert!(annotations(&third)["kordon.dev/error"].contains("exited with"));
    let fourth = env.get_node(&nodes[3]).await;
    assert!(!env.is_cordoned(&nodes[3]).await, "the fourth is untouched");
    assert!(!annotations(&fourth).contains_key("kordon.dev/phase"));

    // The nodes still waiting carried the pending taint while the others worked, a
    // node lost it once its maintenance ended, and no node keeps it after the run.
    let pending_while = |node: &str| -> Vec<String> {
        let path = dir.join(format!("{node}.json"));
        let text = std::fs::read_to_string(&path).expect("the command saved the nodes");
        let list: serde_json::Value = serde_json::from_str(&text).expect("nodes as JSON");
        let mut tainted: Vec<String> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|n| {
                n["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter().any(|t| {
                        t["key"] == "kordon.dev/pending-maintenance"
                            && t["effect"] == "PreferNoSchedule"
                    })
                })
            })
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .filter(|n| n != node)
            .collect();
        tainted.sort();
        tainted
    };
    assert_eq!(pending_while(&nodes[0]), nodes[1..].to_vec());
    assert_eq!(pending_while(&nodes[2]), vec![nodes[3].clone()]);
    let _ = std::fs::remove_dir_all(&dir);
    for node in &nodes {
        let taints = env
            .get_node(node)
            .await
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default();
        assert!(
            taints
                .iter()
                .all(|t| t.key != "kordon.dev/pending-maintenance"),
            "{node} keeps no pending taint: {taints:?}"
        );
    }
}

/// A node an earlier run left out of service (here: failed, cordoned) takes one of
/// the cap's slots in the next run under the same lock; a re-run on that node takes
/// it over and finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_out_by_an_earlier_run_counts_against_the_cap() {
    let (env, nodes) = fleet("rollroom", 3).await;
    let failed = env.run_kordon(&roll_args(&env, &[&nodes[2], "--", "false"]));
    assert_eq!(failed.code, Some(1), "{failed:#?}");
    assert!(env.is_cordoned(&nodes[2]).await);

    // With room for one node, the left-over one fills it: refused, nothing changed.
    let uids = env.pod_uids().await;
    let others = ["--order", "given", &nodes[0], &nodes[1], "--", "true"];
    let refused = env.run_kordon(&roll_args(&env, &others));
    assert_eq!(refused.code, Some(3), "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("at most 1 node(s) out at a time leaves no room")
            && refused
                .stderr
                .contains(&format!("node {} is failed in maintaining", nodes[2])),
        "{}",
        refused.stderr
    );
    for node in &nodes[..2] {
        assert!(!env.is_cordoned(node).await);
        assert_eq!(phase(&env, node).await, None);
    }
    assert_eq!(env.pod_uids().await, uids);

    // With room for two, the run takes one node at a time.
    let cordons = CordonWatcher::start(
        Api::all(env.client.clone()),
        &format!("{ENV_LABEL}={}", env.ns()),
    )
    .await;
    let mut args = roll_args(&env, &["--max-unavailable", "2"]);
    args.extend(others);
    let run = env.run_kordon(&args);
    run.assert_ok();
    assert!(run.stdout.contains("at most 1 at a time"), "{}", run.stdout);
    assert_eq!(cordons.max_cordoned(), 2, "the left-over node and one more");
    for node in &nodes[..2] {
        assert_eq!(phase(&env, node).await.as_deref(), Some("done"));
        assert!(!env.is_cordoned(node).await);
    }
    assert_eq!(phase(&env, &nodes[2]).await.as_deref(), Some("maintaining"));

    // A new roll over the left-over node continues it from its phase.
    let finish = env.run_kordon(&roll_args(&env, &[&nodes[2], "--", "true"]));
    finish.assert_ok();
    assert!(!finish.stdout.contains("] draining"), "{}", finish.stdout);
    assert_all_done(&env, &nodes).await;
}

/// Someone uncordoning a node while it is out for maintenance (another tool, a person
/// with kubectl) would let pods land on a node about to go down: kordon cordons it
/// again at once, says so, and the roll goes on.
#[tokio::test]
async fn a_node_uncordoned_by_someone_else_while_out_is_cordoned_again() {
    let (env, nodes) = fleet("rollhold", 2).await;
    let command = Announced::sleeping(&env, 6);
    let child = spawn_roll(
        &env,
        &roll_args(&env, &[&nodes[0], "--", "sh", "-c", &command.script]),
    );
    command.started().await;
    let out = env
        .kubectl()
        .args(["uncordon", &nodes[0]])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{out:?}");
    eventually("cordoned again", Duration::from_secs(10), || async {
        env.is_cordoned(&nodes[0]).await
    })
    .await;
    assert_eq!(phase(&env, &nodes[0]).await.as_deref(), Some("maintaining"));

    let run = finish(child);
    run.assert_ok();
    assert!(run.stdout.contains("cordoned again"), "{}", run.stdout);
    assert_eq!(phase(&env, &nodes[0]).await.as_deref(), Some("done"));
    assert!(!env.is_cordoned(&nodes[0]).await);
    let out = env
        .kubectl()
        .args(["describe", "node", &nodes[0]])
        .output()
        .expect("kubectl describe");
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(described.contains("Recordoned"), "{described}");
}

/// Each bad input: exit code, one sentence, and nothing changed.
#[tokio::test]
async fn bad_input_is_one_sentence_and_changes_nothing() {
    let (env, nodes) = fleet("rollbad", 2).await;
    env.create(&fixtures::bare_pod(
        "lonely",
        &nodes[0],
        &PodOptions::default(),
    ))
    .await;
    let uids = env.pod_uids().await;
    let no_match = format!("{ENV_LABEL}=nobody");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--selector", &no_match, "--", "true"],
            1,
            "no nodes match the selector",
        ),
        (
            vec![&nodes[1], "--window", "Mon 03:00-03:00 UTC", "--", "true"],
            2,
            "can never open",
        ),
        (
            vec![&nodes[1], "--max-unavailable", "0", "--", "true"],
            2,
            "--max-unavailable of 0",
        ),
        (
            vec![&nodes[0], &nodes[1], "--max-unavailable", "3", "--", "true"],
            2,
            "more than the 2 node(s) selected",
        ),
        (
            vec![&nodes[0], &nodes[1], "--", "true"],
            3,
            "the fleet plan is unsafe",
        ),
        (vec![&nodes[0]], 2, "say what the maintenance is"),
    ];
    for (extra, code, message) in cases {
        let run = env.run_kordon(&roll_args(&env, &extra));
        assert_eq!(run.code, Some(code), "{extra:?}: {run:#?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(first.contains(message), "{extra:?}: {}", run.stderr);
        for node in &nodes {
            assert!(!env.is_cordoned(node).await, "{extra:?} cordoned {node}");
            assert_eq!(phase(&env, node).await, None, "{extra:?} marked {node}");
        }
        assert_eq!(env.pod_uids().await, uids, "{extra:?} touched pods");
    }
    // The unsafe plan names the pod and its flag.
    let run = env.run_kordon(&roll_args(&env, &[&nodes[0], "--", "true"]));
    assert!(
        run.stderr.contains("/lonely needs --force"),
        "{}",
        run.stderr
    );
}

/// Ctrl-C during the command lets it finish, then stops with the node's phase
/// recorded; the report says where each node is.
#[tokio::test]
async fn ctrl_c_stops_at_a_safe_point_and_reports_every_node() {
    let (env, nodes) = fleet("rollint", 2).await;
    let command = Announced::sleeping(&env, 3);
    let args = roll_args(
        &env,
        &[
            "--order",
            "given",
            &nodes[0],
            &nodes[1],
            "--",
            "sh",
            "-c",
            &command.script,
        ],
    );
    let child = spawn_roll(&env, &args);
    command.started().await;
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    let run = finish(child);
    assert_eq!(run.code, Some(130), "{run:#?}");
    assert!(
        run.stdout.contains("interrupted: no new node starts"),
        "{}",
        run.stdout
    );
    // The report's rows: the node in progress stopped, the other never started.
    let row = |node: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default()
    };
    assert!(
        row(&nodes[0]).contains("stopped") && row(&nodes[1]).contains("not started"),
        "{}",
        run.stdout
    );
    // The command finished; the node waits, cordoned, in the next phase.
    assert_eq!(
        phase(&env, &nodes[0]).await.as_deref(),
        Some("awaiting-ready")
    );
    assert!(env.is_cordoned(&nodes[0]).await);
    assert!(!env.is_cordoned(&nodes[1]).await);

    let rerun = env.run_kordon(&args);
    rerun.assert_ok();
    assert_all_done(&env, &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unavailable_per_zone_never_takes_two_nodes_of_one_zone() {
    let (env, nodes) = zoned_fleet("roll-zones", &["z-a", "z-a", "z-b", "z-b"]).await;
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let zones = ZoneWatcher::start(Api::all(env.client.clone()), &selector);
    let per_zone = format!("{ZONE}=1");
    let run = env.run_kordon(&roll_args(
        &env,
        &[
            "--selector",
            &selector,
            "--max-unavailable",
            "2",
            "--max-unavailable-per",
            &per_zone,
            "--",
            "true",
        ],
    ));
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    assert_eq!(zones.max_out_per_zone(), 1, "never two nodes of one zone");
    assert_eq!(zones.max_out(), 2, "two zones, one node each, at once");
}

/// Someone else's cordon takes a place in the cap: with room for one node, the roll
/// leaves their node to them and starts no other while it is cordoned, says why, and
/// goes on once it is uncordoned; an independent watcher never sees two nodes out. With
/// `--count-others-out=false` a roll goes on at once, and maintains their node in its
/// turn, keeping their cordon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_someone_else_cordoned_takes_the_cap_until_it_is_uncordoned() {
    let (env, nodes) = fleet("roll-others", 3).await;
    let kubectl = |verb: &str, node: &str| {
        let out = env.kubectl().args([verb, node]).output().expect("kubectl");
        assert!(out.status.success(), "{out:?}");
    };
    let theirs = &nodes[1];
    kubectl("cordon", theirs);
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let cordons = CordonWatcher::start(Api::all(env.client.clone()), &selector).await;
    let child = spawn_roll(
        &env,
        &roll_args(&env, &["--selector", &selector, "--", "true"]),
    );

    // Once the roll holds its lock it decides; for a few seconds after, nothing goes out.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), env.ns());
    eventually(
        "the roll to take its lock",
        Duration::from_secs(60),
        || async { leases.get_opt("kordon-roll").await.ok().flatten().is_some() },
    )
    .await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for node in &nodes {
            assert_eq!(phase(&env, node).await, None, "{node} was started");
        }
    }
    assert_eq!(cordons.max_cordoned(), 1, "only their node is out");
    kubectl("uncordon", theirs);
    let run = finish(child);
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    assert_eq!(cordons.max_cordoned(), 1, "never two nodes out at once");
    for line in [
        format!(
            "out of service by someone else, counted against the cap (not started while so): {theirs} (cordoned)"
        ),
        "nodes out of service by someone else take the rest of the cap: no new node starts until one is back (--count-others-out=false not to count them)".into(),
        "no selected node is out of service by someone else any more".into(),
        format!("out of service by someone else, counted against the cap: {theirs} (cordoned)"),
    ] {
        assert!(run.stdout.contains(&line), "{line}\nin:\n{}", run.stdout);
    }

    // Not counted, their node is maintained in its turn and keeps their cordon.
    kubectl("cordon", theirs);
    let run = env.run_kordon(&roll_args(
        &env,
        &[
            "--selector",
            &selector,
            "--count-others-out=false",
            "-o",
            "json",
            "--",
            "true",
        ],
    ));
    let report = assert_report_done(&run, 3);
    assert_eq!(report["outByOthers"], json!([]), "{report:#}");
    assert!(env.is_cordoned(theirs).await, "their cordon stays");
    assert_eq!(phase(&env, theirs).await.as_deref(), Some("done"));
}

/// `--max-per 8s=2` at `--max-unavailable 3` over four nodes: the cap would start three at
/// once, the budget starts two; an independent watch of the cordons never sees three
/// starts within 8 s, the marks kordon counts from agree exactly, and the roll says it
/// waits for the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_never_starts_more_nodes_in_a_period_than_its_budget() {
    let (env, nodes) = fleet("roll-rate", 4).await;
    env.create::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&fixtures::pdb(
        "web-pdb",
        "web",
        ("maxUnavailable", json!(2)),
    ))
    .await;
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let log = NodeLog::start(Api::all(env.client.clone()), &selector).await;
    let began = std::time::Instant::now();
    let run = env.run_kordon(&roll_args(
        &env,
        &[
            "--selector",
            &selector,
            "--max-unavailable",
            "3",
            "--max-per",
            "8s=2",
            "--",
            "true",
        ],
    ));
    let took = began.elapsed();
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    assert!(
        run.stdout
            .contains("2 node(s) started in the last 8s (--max-per 8s=2): the next node starts at"),
        "{}",
        run.stdout
    );
    let starts = log.starts();
    assert_eq!(starts.len(), 4, "each node started once: {starts:?}");
    // The watch's own clock; a write reaches it some milliseconds after kordon's
    // clock read the start, so it may see two starts up to that much closer.
    let latency = Duration::from_millis(500);
    for three in starts.windows(3) {
        let span = three[2].1 - three[0].1;
        assert!(
            span + latency >= Duration::from_secs(8),
            "three starts within {span:?}: {starts:?}"
        );
    }
    // The marks kordon counts from: the same rule, exactly.
    let mut marked = Vec::new();
    for node in &nodes {
        let n = env.get_node(node).await;
        let at: jiff::Timestamp = annotations(&n)["kordon.dev/started-at"]
            .parse()
            .expect("a timestamp");
        marked.push(at);
    }
    marked.sort();
    for three in marked.windows(3) {
        assert!(
            three[2].duration_since(three[0]) >= jiff::SignedDuration::from_secs(8),
            "{marked:?}"
        );
    }
    assert!(
        starts[2].1 - starts[0].1 + latency >= Duration::from_secs(8),
        "the third start waited for the first to age out"
    );
    assert!(took >= Duration::from_secs(8), "the roll took {took:?}");
}

/// `--sequence zone=b,a` at `--max-unavailable 2` over zones a, b and c (two nodes each):
/// an independent watch sees every node of b done before any node of a is cordoned, and
/// every node of a done before any of c; within a zone two nodes go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_finishes_each_zone_before_the_next_in_the_stated_order() {
    let zones = ["z-a", "z-a", "z-b", "z-b", "z-c", "z-c"];
    let (env, nodes) = zoned_fleet("roll-sequence", &zones).await;
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let log = NodeLog::start(Api::all(env.client.clone()), &selector).await;
    let cordons = ZoneWatcher::start(Api::all(env.client.clone()), &selector);
    let sequence = format!("{ZONE}=z-b,z-a");
    let run = env.run_kordon(&roll_args(
        &env,
        &[
            "--selector",
            &selector,
            "--max-unavailable",
            "2",
            "--sequence",
            &sequence,
            "--",
            "true",
        ],
    ));
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    assert!(
        run.stdout.contains(&format!(
            "(domain by domain: {ZONE}=z-b, {ZONE}=z-a, {ZONE}=z-c)"
        )),
        "{}",
        run.stdout
    );
    let zone_of = |node: &str| zones[nodes.iter().position(|n| n == node).expect("a node")];
    let events = log.events();
    // Where in the watch's order each zone's nodes were first cordoned and last done.
    let first = |zone: &str, change: NodeChange| {
        events
            .iter()
            .position(|e| e.change == change && zone_of(&e.node) == zone)
            .unwrap_or_else(|| panic!("no {change:?} in {zone}: {events:#?}"))
    };
    let last = |zone: &str, change: NodeChange| {
        events
            .iter()
            .rposition(|e| e.change == change && zone_of(&e.node) == zone)
            .unwrap_or_else(|| panic!("no {change:?} in {zone}: {events:#?}"))
    };
    for (before, after) in [("z-b", "z-a"), ("z-a", "z-c")] {
        assert!(
            last(before, NodeChange::Done) < first(after, NodeChange::Cordoned),
            "{before} done before {after} starts: {events:#?}"
        );
        assert!(
            last(before, NodeChange::Uncordoned) < first(after, NodeChange::Cordoned),
            "{before} uncordoned before {after} starts: {events:#?}"
        );
    }
    let cordoned = events
        .iter()
        .filter(|e| e.change == NodeChange::Cordoned)
        .count();
    assert_eq!(cordoned, 6, "each node started once: {events:#?}");
    assert_eq!(cordons.max_out(), 2, "two nodes of a zone at once");
}

/// `--notify`: a webhook hears each node's start, a budget holding a pod (once, with the
/// pod and the budget, while it holds), the failed node and the run's end, in that
/// order, retried past a 503; the report says how many went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_hears_each_start_the_block_the_failure_and_the_end() {
    let mut env = TestEnv::new("rollnotify").await;
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(env.add_node(&format!("node-{i}")).await);
    }
    let spare = env.add_node("spare").await;
    env.create(&fixtures::deployment(env.ns(), "web", 4, &fixtures::SPREAD))
        .await;
    env.wait_ready("app=web", 4).await;
    // A budget at zero for now: the pod it waits for on the spare node never gets Ready.
    let never_ready = PodOptions {
        ready_delay: Some("1h"),
        pin_to: Some(spare.clone()),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "warming", 1, &never_ready))
        .await;
    env.create(&fixtures::pdb_over(
        "web-pdb",
        &["web", "warming"],
        ("minAvailable", json!(4)),
    ))
    .await;

    let hook = support::webhook::Receiver::start(1);
    let mut args = roll_args(
        &env,
        &["--order", "given", "--notify", &hook.url, "-o", "json"],
    );
    args.extend(nodes.iter().map(String::as_str));
    let fail_on = format!("test \"$KORDON_NODE\" != {}", nodes[2]);
    args.extend(["--", "sh", "-c", &fail_on]);
    let command = {
        let mut cmd = env.kordon();
        cmd.args(&args);
        cmd
    };
    let roll = tokio::task::spawn_blocking(move || {
        let mut command = command;
        Run::from(command.output().expect("run kordon"))
    });
    let blocked = hook
        .wait_for(Duration::from_secs(60), "a blocked pod", |n| {
            n["kind"] == "blocked"
        })
        .await;
    assert_eq!(blocked["node"], nodes[0].as_str(), "{blocked:#}");
    assert_eq!(blocked["blocking"][0]["budget"], "web-pdb", "{blocked:#}");
    assert!(
        blocked["blocking"][0]["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{}/web-", env.ns()))),
        "{blocked:#}"
    );
    assert!(
        env.is_cordoned(&nodes[0]).await,
        "the notification came while the budget held the drain"
    );
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(
        support::client().await,
        env.ns(),
    )
    .delete("web-pdb", &Default::default())
    .await
    .expect("delete the budget");

    let run = roll.await.expect("join");
    assert_eq!(run.code, Some(1), "{run:#?}");
    let report = run.json();
    // Besides web-pdb, kordon's own implicit budget may hold a pod for a moment while the
    // API server takes it in ("still being processed"): told too, as it happened.
    let seen: Vec<(String, String)> = hook
        .taken()
        .iter()
        .filter(|n| n["kind"] != "blocked" || n["blocking"][0]["budget"] == "web-pdb")
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap_or("-").to_string();
            (field("kind"), field("node"))
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("started", nodes[0].as_str()),
        ("blocked", nodes[0].as_str()),
        ("started", nodes[1].as_str()),
        ("started", nodes[2].as_str()),
        ("failed", nodes[2].as_str()),
        ("completed", "-"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(seen, expected, "{:#?}", hook.taken());
    let end = hook.taken().pop().expect("the end");
    assert_eq!(end["source"]["kind"], "roll");
    assert_eq!(end["source"]["name"], report["run"]);
    assert!(
        end["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 failed")),
        "{end:#}"
    );
    let taken = hook.taken().len();
    assert_eq!(
        hook.requests(),
        taken + 1,
        "the first was refused and sent again"
    );
    assert_eq!(
        report["notifications"],
        json!({ "delivered": taken, "failed": 0 }),
        "{report:#}"
    );
}

/// A roll's output as it comes, read line by line in the background.
struct Output {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Output {
    fn follow(child: &mut Child) -> Self {
        let text: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let (stdout, kept) = (child.stdout.take().expect("stdout"), text.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(mut t) = kept.lock() {
                    t.push_str(&line);
                    t.push('\n');
                }
            }
        });
        Self { text }
    }

    fn now(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    async fn says(&self, what: &str) {
        eventually(
            &format!("the roll to say {what:?}"),
            Duration::from_secs(30),
            || async { self.now().contains(what) },
        )
        .await;
        println!("the roll says {what:?}");
    }
}

/// A maintenance command that marks its node started (a file) and runs until the test
/// releases the node (another file).
struct Held(std::path::PathBuf);

impl Held {
    fn new(env: &TestEnv) -> Self {
        let dir = std::env::temp_dir().join(format!("kordon-{}-held", env.id));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self(dir)
    }

    fn script(&self) -> String {
        let d = self.0.display();
        format!(
            "touch {d}/started-$KORDON_NODE; while [ ! -e {d}/release-$KORDON_NODE ]; do sleep 0.1; done"
        )
    }

    fn release(&self, node: &str) {
        std::fs::write(self.0.join(format!("release-{node}")), "").expect("release");
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A roll over three nodes behind a real Prometheus (a query over a test exporter's
/// metric) and a real Alertmanager (an alert the test posts): while the metric is bad, and
/// then while only the alert is active, the independent watch sees no node start but the
/// one `kordon approve` lets go, and the roll says which gate holds it and why; once both
/// clear, the roll finishes, one node at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_gates_pause_the_roll_while_a_query_has_series_or_an_alert_is_active() {
    use support::monitoring::{Alertmanager, Exporter, Prometheus};
    let exporter = Exporter::start();
    let (prometheus, alertmanager) =
        tokio::join!(Prometheus::start(&exporter), Alertmanager::start());
    let (env, nodes) = fleet("roll-gates", 3).await;
    let selector = format!("{ENV_LABEL}={}", env.ns());
    let log = NodeLog::start(Api::all(env.client.clone()), &selector).await;
    let cordons = CordonWatcher::start(Api::all(env.client.clone()), &selector).await;
    let held = Held::new(&env);
    let script = held.script();
    let (prometheus_url, alertmanager_url) = (prometheus.url(), alertmanager.url());
    let query = "kordon_test_errors > 0";
    let mut child = spawn_roll(
        &env,
        &roll_args(
            &env,
            &[
                "--selector",
                &selector,
                "--prometheus",
                &prometheus_url,
                "--pause-on-query",
                query,
                "--alertmanager",
                &alertmanager_url,
                "--pause-on-alerts",
                "severity=critical,team=shop",
                "--",
                "sh",
                "-c",
                &script,
            ],
        ),
    );
    let output = Output::follow(&mut child);
    let starts = || log.starts();
    eventually(
        "the first node to start",
        Duration::from_secs(30),
        || async { starts().len() == 1 },
    )
    .await;
    let first = starts()[0].0.clone();

    // The metric turns bad while the first node is under way; the roll asks every 5s.
    exporter.set(3.0);
    eventually(
        "Prometheus to see the bad metric",
        Duration::from_secs(10),
        || async { prometheus.series(query) == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    held.release(&first);
    output
        .says(&format!("a metric gate fails: query `{query}` returns 1 series: {{__name__=\"kordon_test_errors\", app=\"shop\""))
        .await;
    assert!(
        output
            .now()
            .contains("no new node starts until it passes (nodes under way go on)"),
        "{}",
        output.now()
    );

    // `kordon approve`: one node starts despite the gate, and one only.
    let approved = env.run_kordon(&["approve", "--lock-namespace", env.ns()]);
    approved.assert_ok();
    assert!(
        approved.stdout.starts_with("approved: roll "),
        "{}",
        approved.stdout
    );
    eventually(
        "the approved node to start",
        Duration::from_secs(30),
        || async { starts().len() == 2 },
    )
    .await;
    let second = starts()[1].0.clone();
    output
        .says(&format!(
            "[{second}] starts despite a failing metric gate: approved (kordon approve, "
        ))
        .await;
    held.release(&second);
    eventually(
        "the approved node to be done",
        Duration::from_secs(30),
        || async {
            log.events()
                .iter()
                .any(|e| e.node == second && e.change == NodeChange::Done)
        },
    )
    .await;

    // An alert fires too; the metric clears: the alert alone holds the roll.
    let alert = json!({ "alertname": "ShopErrors", "severity": "critical", "team": "shop" });
    alertmanager.fire(&alert);
    eventually(
        "Alertmanager to hold the alert",
        Duration::from_secs(10),
        || async { alertmanager.active() == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    exporter.set(0.0);
    output
        .says(r#"a metric gate fails: alert ShopErrors {severity="critical", team="shop"} is active (matching severity=critical,team=shop)"#)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        starts().len(),
        2,
        "no node starts while a gate fails, but the approved one: {:?}",
        log.events()
    );

    // Cleared: the others go, one at a time.
    let cleared = std::time::Instant::now();
    alertmanager.resolve(&alert);
    for node in &nodes {
        held.release(node);
    }
    let run = finish(child);
    run.assert_ok();
    assert_all_done(&env, &nodes).await;
    let starts = starts();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(
        starts[2].1 >= cleared,
        "the last node starts once the gates clear: {starts:?}"
    );
    assert_eq!(cordons.max_cordoned(), 1, "one node out at a time");
}

/// `--pause-between` is a soak: a pod on the node just back that fails during it (here a
/// Job's pod exiting 1, KWOK's pod-fail stage) fails that node, and at the default
/// `--max-failures 1` the roll halts before the next node starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_on_a_node_during_its_soak_fails_the_node_and_halts_the_roll() {
    let (env, nodes) = fleet("rollsoak", 2).await;
    let mut args = roll_args(
        &env,
        &["--order", "given", "--pause-between", "40s", "-o", "json"],
    );
    args.extend(nodes.iter().map(String::as_str));
    args.extend(["--", "true"]);
    let child = spawn_roll(&env, &args);
    eventually("the first node done", Duration::from_secs(90), || async {
        phase(&env, &nodes[0]).await.as_deref() == Some("done")
    })
    .await;
    let mut job = fixtures::job(env.ns(), "crash");
    let template = &mut job.spec.as_mut().expect("spec").template;
    template.spec.as_mut().expect("pod spec").node_name = Some(nodes[0].clone());
    template.metadata.get_or_insert_default().annotations = Some(
        [(
            "pod-fail.stage.kwok.x-k8s.io/delay".to_string(),
            "1s".to_string(),
        )]
        .into(),
    );
    env.create(&job).await;

    let run = finish(child);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains("failed its soak (it is in service)"),
        "{}",
        run.stderr
    );
    let report = run.json();
    let blockers = report["nodes"][0]["blockers"].to_string();
    assert!(
        blockers.contains("during the 40s soak, container"),
        "{report:#}"
    );
    assert_eq!(report["state"], "halted", "{report:#}");
    let outcomes: Vec<&str> = report["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["failed", "notStarted"], "{report:#}");
    assert!(
        !env.is_cordoned(&nodes[0]).await,
        "back in service before its soak"
    );
    assert_eq!(
        phase(&env, &nodes[1]).await,
        None,
        "the next node never started"
    );
}
