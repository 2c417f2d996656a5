//! The control plane fails under kordon: the API server killed mid-drain, etcd
//! restarted, the controller manager stopped, every connection dropped, kordon itself
//! killed with SIGKILL mid-roll; the watches a restarted API server expires (410 Gone)
//! are listed again. Each runs on the fault tests' own cluster (never the
//! shared one) with an independent watcher proving the budget held throughout.
//!
//! Each test prints what it measured (`--nocapture`): how long kordon took to carry on
//! once the API server was back. `bench/faults` runs the roll crash over many seeds.
//!
//! A request the lost API server dropped is tried again (`Connection::retrying`), and
//! the view's watches reconnect within 2 s (`Reconnect`): the user sees one line for
//! the outage and one when it ends.
mod support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use support::faults::{FaultCluster, FaultEnv, MinReady, Proxy, Request, Seeded};
use support::fixtures::{self, PodOptions};
use support::{Run, eventually};

/// `web`: six pods, two per node, under a budget of one unavailable; a replacement is
/// Ready 3 s after it is scheduled, so draining node-2 takes two evictions one at a
/// time, about ten seconds: long enough to fail in the middle.
async fn three_nodes_with_web(cluster: &FaultCluster, name: &str) -> (FaultEnv, String) {
    let mut env = cluster.env(name).await;
    for short in ["node-1", "node-2", "node-3"] {
        env.add_node(short).await;
    }
    let slow = PodOptions {
        spread: true,
        ready_delay: Some("3s"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 6, &slow))
        .await;
    env.create(&fixtures::pdb("web", "web", ("maxUnavailable", json!(1))))
        .await;
    env.wait_ready("app=web", 6).await;
    let node = env.node("node-2");
    (env, node)
}

/// Waits until the first of node-2's two pods is evicted.
async fn first_eviction(env: &FaultEnv, node: &str) {
    eventually("the first eviction", Duration::from_secs(60), || async {
        env.pods_on(node).await.len() == 1
    })
    .await;
}

/// Waits for kordon to exit, killing it after `limit`.
async fn finish(mut child: Child, limit: Duration) -> Run {
    let start = Instant::now();
    while child.try_wait().expect("kordon status").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().expect("kordon output"));
            panic!("kordon still running after {limit:?}:\n{run:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Run::from(child.wait_with_output().expect("kordon output"))
}

fn spawn(cmd: &mut std::process::Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kordon")
}

/// The drain finished, the budget held, node-2 is cordoned and empty, `web` whole.
async fn assert_drained(env: &FaultEnv, node: &str, run: &Run, web: &MinReady) {
    run.assert_ok();
    assert!(web.min_ready() >= 5, "web dipped to {}", web.min_ready());
    assert!(env.is_cordoned(node).await, "{node} stays cordoned");
    assert!(env.pods_on(node).await.is_empty(), "{node} is empty");
    env.wait_ready("app=web", 6).await;
}

/// What kordon lost after the outage, from the audit log: seconds from `back` (the
/// API server answered `/readyz`, polled every 200 ms; negative when kordon got in
/// first) to kordon's first request after `lost`, and from that first request (the
/// server serving again) to the last of kordon's watches starting again.
fn carried_on(cluster: &FaultCluster, lost: Timestamp, back: Timestamp) -> Option<(f64, f64)> {
    let after: Vec<Request> = cluster
        .kordon_requests()
        .into_iter()
        .filter(|r| r.at > lost)
        .collect();
    let first = after.first()?;
    println!(
        "kordon's first request after the outage: {} {}",
        first.verb, first.uri
    );
    let mut watches: std::collections::BTreeMap<&str, Timestamp> = Default::default();
    for r in after.iter().filter(|r| r.verb == "watch") {
        watches.entry(r.path()).or_insert(r.at);
    }
    let last_watch = watches.values().max().copied().unwrap_or(first.at);
    Some((
        first.at.duration_since(back).as_secs_f64(),
        last_watch.duration_since(first.at).as_secs_f64(),
    ))
}

/// The watches kordon had open before the outage and listed again after it: the
/// restarted server's watch cache starts from a fresh list, so a watch resumed from an
/// older resource version is told 410 Gone (as an event in the stream, which the audit
/// log does not show) and kube-runtime's watcher lists again. Each as its path and
/// selectors.
fn relisted_after(cluster: &FaultCluster, lost: Timestamp) -> Vec<String> {
    let requests = cluster.kordon_requests();
    let watched: std::collections::BTreeSet<String> = requests
        .iter()
        .filter(|r| r.at < lost && r.verb == "watch")
        .map(Request::selected)
        .collect();
    let mut relisted: Vec<String> = requests
        .iter()
        .filter(|r| r.at > lost && r.verb == "list")
        .map(Request::selected)
        .filter(|s| watched.contains(s))
        .collect();
    relisted.dedup();
    relisted
}

fn report(fault: &str, outage: Duration, lost: Option<(f64, f64)>, run: &Run) {
    let carried = lost.map_or("no request seen".to_string(), |(first, watches)| {
        format!("first request {first:+.1}s from /readyz, every watch again {watches:.1}s later")
    });
    println!(
        "{fault}: {:.1}s from the kill to /readyz; kordon: {carried}",
        outage.as_secs_f64()
    );
    println!("what the user saw on stderr:\n{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_killed_mid_drain_and_back_in_seconds() {
    let cluster = FaultCluster::up();
    let (env, node) = three_nodes_with_web(&cluster, "apikill").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    // Debug lines from the view show its watches expiring.
    let child = spawn(
        cluster
            .kordon(cluster.kubeconfig())
            .env("RUST_LOG", "kordon::cluster::view=debug")
            .args(["drain", &node]),
    );
    first_eviction(&env, &node).await;

    let lost = Timestamp::now();
    let down = Instant::now();
    cluster.fault("kill", "kube-apiserver").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.fault("start", "kube-apiserver").await;
    let back = Timestamp::now();

    let run = finish(child, Duration::from_secs(120)).await;
    report(
        "kube-apiserver killed",
        down.elapsed(),
        carried_on(&cluster, lost, back),
        &run,
    );
    assert_drained(&env, &node, &run, &web).await;
    // The watches came back through 410 Gone and a fresh list of the same pods.
    let relisted = relisted_after(&cluster, lost);
    println!("watched before the outage and listed again: {relisted:?}");
    assert!(
        run.stderr.contains("watch expired (410 Gone)"),
        "{}",
        run.stderr
    );
    assert!(
        relisted.iter().any(|s| s.contains("/pods")),
        "no pod watch was listed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_manager_stopped_mid_drain_makes_kordon_wait() {
    let cluster = FaultCluster::up();
    let (env, node) = three_nodes_with_web(&cluster, "kcmstop").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    let child = spawn(cluster.kordon(cluster.kubeconfig()).args(["drain", &node]));
    first_eviction(&env, &node).await;
    cluster.fault("stop", "kube-controller-manager").await;

    // No controller: no replacement, no budget update; the second pod must stay.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(env.pods_on(&node).await.len(), 1, "the second pod waits");
    cluster.fault("start", "kube-controller-manager").await;

    let run = finish(child, Duration::from_secs(120)).await;
    println!(
        "kube-controller-manager stopped 10s; stderr:\n{}",
        run.stderr
    );
    assert_drained(&env, &node, &run, &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_dropped_mid_drain() {
    let cluster = FaultCluster::up();
    let (env, node) = three_nodes_with_web(&cluster, "dropall").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    let mut proxy = Proxy::start(&cluster);
    let child = spawn(cluster.kordon(&proxy.kubeconfig).args(["drain", &node]));
    first_eviction(&env, &node).await;

    let open = proxy.send("count");
    proxy.send("drop");
    // Then a stalled server: connections accepted, nothing passed, for 4 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.send("stall 4");
    proxy.send("drop");

    let run = finish(child, Duration::from_secs(120)).await;
    println!(
        "dropped {open} connection(s), then stalled 4s; stderr:\n{}",
        run.stderr
    );
    assert_drained(&env, &node, &run, &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_mid_drain() {
    let cluster = FaultCluster::up();
    let (env, node) = three_nodes_with_web(&cluster, "etcd").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    let child = spawn(cluster.kordon(cluster.kubeconfig()).args(["drain", &node]));
    first_eviction(&env, &node).await;

    let down = Instant::now();
    cluster.fault("restart", "etcd").await;
    let run = finish(child, Duration::from_secs(120)).await;
    println!(
        "etcd restarted ({:.1}s); stderr:\n{}",
        down.elapsed().as_secs_f64(),
        run.stderr
    );
    assert_drained(&env, &node, &run, &web).await;
}

/// A roll over node-1 and node-2 whose maintenance command runs 10 s, with a lock of
/// `lock_duration`: the API server is killed while node-1's command runs, through lock
/// renewals, and started 6 s later. The roll finishes both nodes, uncordoned, and
/// `web` never dips below its budget.
async fn roll_with_the_api_server_killed(lock_duration: &str) {
    let cluster = FaultCluster::up();
    let (env, _) = three_nodes_with_web(&cluster, "rollkill").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    let nodes = [env.node("node-1"), env.node("node-2")];
    let args = [
        "roll",
        "--lock-namespace",
        env.ns(),
        "--lock-duration",
        lock_duration,
        "--order",
        "given",
        &nodes[0],
        &nodes[1],
        "--",
        "sleep",
        "10",
    ];
    let child = spawn(cluster.kordon(cluster.kubeconfig()).args(args));
    eventually("node-1's command", Duration::from_secs(90), || async {
        let node = env.get_node(&nodes[0]).await;
        node.metadata
            .annotations
            .and_then(|a| a.get("kordon.dev/phase").cloned())
            .as_deref()
            == Some("maintaining")
    })
    .await;

    let lost = Timestamp::now();
    let down = Instant::now();
    cluster.fault("kill", "kube-apiserver").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.fault("start", "kube-apiserver").await;
    let back = Timestamp::now();

    let run = finish(child, Duration::from_secs(180)).await;
    report(
        "kube-apiserver killed during a roll's command",
        down.elapsed(),
        carried_on(&cluster, lost, back),
        &run,
    );
    run.assert_ok();
    for node in &nodes {
        assert!(!env.is_cordoned(node).await, "{node} is back in service");
    }
    assert!(web.min_ready() >= 5, "web dipped to {}", web.min_ready());
    env.wait_ready("app=web", 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_killed_during_a_rolls_command() {
    roll_with_the_api_server_killed("15s").await;
}

/// A roll over node-2 whose last gate (`verifying`: the workloads it touched back at full
/// Ready) is made long by a rollout of `web` started while the command runs, each new
/// pod Ready 8 s after it is scheduled. The API server is killed while the gate waits
/// and started 6 s later: the gate carries on, the roll finishes with node-2 back in
/// service once the rollout is through, and `web` never dips below its budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_killed_during_a_rolls_last_gate() {
    let cluster = FaultCluster::up();
    let (env, node) = three_nodes_with_web(&cluster, "gatekill").await;
    let web = MinReady::start(env.pods(), "app=web").await;
    let args = [
        "roll",
        "--lock-namespace",
        env.ns(),
        &node,
        "--",
        "sleep",
        "3",
    ];
    let child = spawn(cluster.kordon(cluster.kubeconfig()).args(args));
    let phase = |wanted: &'static str| {
        let env = &env;
        let node = node.clone();
        async move {
            let node = env.get_node(&node).await;
            node.metadata
                .annotations
                .and_then(|a| a.get("kordon.dev/phase").cloned())
                .as_deref()
                == Some(wanted)
        }
    };
    eventually("the command", Duration::from_secs(90), || {
        phase("maintaining")
    })
    .await;
    let slow = json!({ "spec": { "template": { "metadata": { "annotations": {
        "pod-ready.stage.kwok.x-k8s.io/delay": "8s"
    } } } } });
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args([
            "-n",
            env.ns(),
            "patch",
            "deployment",
            "web",
            "--type",
            "merge",
            "-p",
        ])
        .arg(slow.to_string())
        .status()
        .expect("kubectl patch");
    eventually("the last gate", Duration::from_secs(60), || {
        phase("verifying")
    })
    .await;

    let lost = Timestamp::now();
    let down = Instant::now();
    cluster.fault("kill", "kube-apiserver").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.fault("start", "kube-apiserver").await;
    let back = Timestamp::now();
    assert!(
        !env.is_cordoned(&node).await,
        "uncordoned before the gate, which still waits for the rollout"
    );
    assert!(
        phase("verifying").await,
        "the gate still waits after the outage"
    );

    let run = finish(child, Duration::from_secs(180)).await;
    report(
        "kube-apiserver killed during a roll's last gate",
        down.elapsed(),
        carried_on(&cluster, lost, back),
        &run,
    );
    run.assert_ok();
    assert!(
        run.stderr.contains("lost the API server at"),
        "{}",
        run.stderr
    );
    assert!(!env.is_cordoned(&node).await, "{node} is back in service");
    assert!(web.min_ready() >= 5, "web dipped to {}", web.min_ready());
    let pods = env.wait_ready("app=web", 6).await;
    assert!(
        pods.iter().all(|p| p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("pod-ready.stage.kwok.x-k8s.io/delay"))),
        "the roll ended only once the rollout was through"
    );
}

/// What a roll killed at a seeded moment left behind once re-run.
#[derive(Debug)]
pub struct Crash {
    seed: u64,
    kill_after: Duration,
    rerun: Option<i32>,
    pods_lost: usize,
    nodes_wrong: Vec<String>,
}

/// A roll over three nodes (node-1 cordoned by someone else before it), `web` of three
/// pods and `slow` of two under a budget of one, killed with SIGKILL `seed` picks a
/// moment in its first 20 s; then the same roll again.
async fn crash_roll(cluster: &FaultCluster, seed: u64) -> Crash {
    let mut env = cluster.env(&format!("crash{seed}")).await;
    let nodes: Vec<String> = vec![
        env.add_node("node-1").await,
        env.add_node("node-2").await,
        env.add_node("node-3").await,
    ];
    let cordon = |node: &str, verb: &str| {
        let out = cluster
            .kubectl()
            .args([verb, node])
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "{out:?}");
    };
    cordon(&nodes[0], "cordon");
    let spread = PodOptions {
        spread: true,
        delete_delay: Some("2s"),
        ..Default::default()
    };
    env.create(&fixtures::deployment(env.ns(), "web", 3, &spread))
        .await;
    env.create(&fixtures::deployment(env.ns(), "slow", 2, &spread))
        .await;
    env.create(&fixtures::pdb("slow", "slow", ("maxUnavailable", json!(1))))
        .await;
    env.wait_ready("app=web", 3).await;
    env.wait_ready("app=slow", 2).await;

    let args = [
        "roll",
        "--lock-namespace",
        env.ns(),
        "--lock-duration",
        "3s",
        "--lock-timeout",
        "60s",
        // Someone else's node-1 is maintained in its turn, its cordon kept.
        "--count-others-out=false",
        &nodes[0],
        &nodes[1],
        &nodes[2],
        "--",
        "sleep",
        "2",
    ];
    let kill_after = Duration::from_millis(Seeded::new(seed).below(20_000));
    let mut child = spawn(cluster.kordon(cluster.kubeconfig()).args(args));
    tokio::time::sleep(kill_after).await;
    let _ = child.kill();
    let _ = child.wait();
    let rerun = finish(
        spawn(cluster.kordon(cluster.kubeconfig()).args(args)),
        Duration::from_secs(180),
    )
    .await;

    let mut ready = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let pods = env
            .pods()
            .list(&Default::default())
            .await
            .expect("list pods");
        ready = pods.items.iter().filter(|p| support::pod_ready(p)).count();
        if ready == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut nodes_wrong = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        // node-1 was cordoned by someone else: it stays so; the others are back.
        if env.is_cordoned(node).await != (i == 0) {
            nodes_wrong.push(node.clone());
        }
    }
    if rerun.code != Some(0) {
        println!("seed {seed}: re-run failed:\n{rerun:#?}");
    }
    Crash {
        seed,
        kill_after,
        rerun: rerun.code,
        pods_lost: 5 - ready.min(5),
        nodes_wrong,
    }
}

fn print_table(crashes: &[Crash]) {
    println!("| seed | kill after | re-run exit | pods lost | nodes left wrong |");
    println!("|---|---|---|---|---|");
    for c in crashes {
        println!(
            "| {} | {:.1}s | {} | {} | {} |",
            c.seed,
            c.kill_after.as_secs_f64(),
            c.rerun.map_or("signal".to_string(), |c| c.to_string()),
            c.pods_lost,
            if c.nodes_wrong.is_empty() {
                "0".to_string()
            } else {
                c.nodes_wrong.join(", ")
            }
        );
    }
}

/// Seeds to run: `KORDON_FAULT_SEED` alone, else `count` from the clock.
fn seeds(count: u64) -> Vec<u64> {
    let first = Seeded::seed();
    if std::env::var_os("KORDON_FAULT_SEED").is_some() {
        return vec![first];
    }
    (0..count).map(|i| first + i * 7919).collect()
}

async fn crash_rolls(count: u64) {
    let cluster = FaultCluster::up();
    let mut crashes = Vec::new();
    for seed in seeds(count) {
        println!("seed {seed} (replay: KORDON_FAULT_SEED={seed})");
        crashes.push(crash_roll(&cluster, seed).await);
    }
    print_table(&crashes);
    for c in &crashes {
        assert!(
            c.rerun == Some(0) && c.pods_lost == 0 && c.nodes_wrong.is_empty(),
            "seed {} (replay with KORDON_FAULT_SEED={}): {c:?}",
            c.seed,
            c.seed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_killed_at_a_random_moment_and_run_again_loses_nothing() {
    crash_rolls(2).await;
}

/// `bench/faults`: the same over `KORDON_FAULT_SEEDS` seeds (default 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by bench/faults"]
async fn bench_roll_crashes() {
    let count = std::env::var("KORDON_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    crash_rolls(count).await;
}
