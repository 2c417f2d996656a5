//! Side-by-side benchmark of `kordon drain` and `kubectl drain` on the real testbed.
//! Every scenario runs twice on fresh, identical setups (one per tool) in the same
//! cluster, with an independent watcher recording each workload's fewest Ready pods,
//! the API requests each tool made (from the audit log, by the tool's own identity)
//! and its peak memory. Run through `bench/run`, which starts a cluster with
//! realistic pod delays and prints the table.
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::json;
use support::TestEnv;
use support::fixtures::{self, PodOptions};
use support::watcher::{CordonWatcher, ReadyWatcher};

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Kordon,
    Kubectl,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kordon => "kordon",
            Tool::Kubectl => "kubectl",
        }
    }
}

struct Scenario {
    name: &'static str,
    /// (app, replicas, budget floor: the fewest Ready pods the workload's budget allows)
    workloads: Vec<(String, i32, usize)>,
    pdb: bool,
    spread: bool,
    kordon_flags: Vec<&'static str>,
    /// Maintain this many nodes one after another (`kordon roll` against a loop of
    /// `kubectl drain` + `kubectl uncordon`) instead of draining one node.
    roll: Option<usize>,
}

struct Outcome {
    seconds: f64,
    /// Per workload: fewest Ready pods seen, and its budget floor.
    min_ready: Vec<(usize, usize)>,
    requests: usize,
    evicted: usize,
    peak_mib: f64,
    /// The most nodes seen unschedulable at once.
    max_cordoned: usize,
    ok: bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "1. article: 4 nginx, 2 per node",
            workloads: vec![("nginx".into(), 4, 3)],
            pdb: false,
            spread: true,
            kordon_flags: vec![],
            roll: None,
        },
        Scenario {
            name: "2. 100 pods, 10 Deployments, PDB maxUnavailable 1",
            workloads: (0..10).map(|i| (format!("app{i}"), 10, 9)).collect(),
            pdb: true,
            spread: false,
            kordon_flags: vec![],
            roll: None,
        },
        Scenario {
            name: "3. all 4 replicas co-located, no PDB",
            workloads: vec![("web".into(), 4, 3)],
            pdb: false,
            spread: false,
            kordon_flags: vec![],
            roll: None,
        },
        Scenario {
            name: "4. single replica (kordon --surge)",
            workloads: vec![("solo".into(), 1, 1)],
            pdb: false,
            spread: false,
            kordon_flags: vec!["--surge"],
            roll: None,
        },
        Scenario {
            name: "5. roll 4 nodes: 8 replicas spread, PDB maxUnavailable 1",
            workloads: vec![("web".into(), 8, 7)],
            pdb: true,
            spread: true,
            kordon_flags: vec![],
            roll: Some(4),
        },
    ]
}

async fn run(scenario: &Scenario, tool: Tool) -> Outcome {
    let mut env = TestEnv::new(&format!("bench{}", scenario.name.as_bytes()[0] as char)).await;
    let mut nodes = vec![env.add_node("node-1").await];
    let opts = PodOptions {
        spread: scenario.spread,
        ..Default::default()
    };
    if scenario.spread {
        for i in 2..=scenario.roll.unwrap_or(2) {
            nodes.push(env.add_node(&format!("node-{i}")).await);
        }
    }
    for (app, replicas, _) in &scenario.workloads {
        env.create(&fixtures::deployment(env.ns(), app, *replicas, &opts))
            .await;
        if scenario.pdb {
            env.create::<PodDisruptionBudget>(&fixtures::pdb(
                app,
                app,
                ("maxUnavailable", json!(1)),
            ))
            .await;
        }
    }
    for (app, replicas, _) in &scenario.workloads {
        env.wait_ready(&format!("app={app}"), *replicas as usize)
            .await;
    }
    if !scenario.spread {
        nodes.push(env.add_node("node-2").await);
    }
    let node_1 = nodes[0].clone();
    let evicted = match scenario.roll {
        Some(_) => env
            .pods()
            .list(&Default::default())
            .await
            .map_or(0, |l| l.items.len()),
        None => env.pods_on(&node_1).await.len(),
    };
    let (kubeconfig, user) = support::audit::tool_identity(&env);
    let mut watchers = Vec::new();
    for (app, _, floor) in &scenario.workloads {
        watchers.push((
            ReadyWatcher::start(env.pods(), &format!("app={app}")).await,
            *floor,
        ));
    }

    let audit = support::audit::Audit::start();
    let rss = std::env::temp_dir().join(format!("{}.rss", env.ns()));
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&rss);
    let selector = format!("{}={}", support::ENV_LABEL, env.ns());
    let cordons = CordonWatcher::start(kube::Api::all(env.client.clone()), &selector).await;
    match (tool, scenario.roll) {
        (Tool::Kordon, None) => {
            cmd.arg(env!("CARGO_BIN_EXE_kordon"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["drain", &node_1, "--timeout", "600s"])
                .args(&scenario.kordon_flags);
        }
        (Tool::Kubectl, None) => {
            cmd.arg("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["drain", &node_1, "--ignore-daemonsets", "--timeout=600s"]);
        }
        (Tool::Kordon, Some(_)) => {
            cmd.arg(env!("CARGO_BIN_EXE_kordon"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "roll",
                    "--selector",
                    &selector,
                    "--lock-namespace",
                    env.ns(),
                ])
                .args(&scenario.kordon_flags)
                .args(["--", "true"]);
        }
        (Tool::Kubectl, Some(_)) => {
            // The usual script: drain, maintain, uncordon, node after node.
            let script = format!(
                "for n in {}; do kubectl --kubeconfig {} drain $n --ignore-daemonsets --timeout=600s && true && kubectl --kubeconfig {} uncordon $n || exit 1; done",
                nodes.join(" "),
                kubeconfig.display(),
                kubeconfig.display()
            );
            cmd.args(["sh", "-c", &script]);
        }
    }
    let started = Instant::now();
    let out = cmd.output().expect("run tool");
    let seconds = started.elapsed().as_secs_f64();
    // Let the watchers see the replacements come up before reading them.
    for (app, replicas, _) in &scenario.workloads {
        env.wait_ready(&format!("app={app}"), *replicas as usize)
            .await;
    }
    let requests = audit.requests_by(&user).len();
    let peak_mib = std::fs::read_to_string(&rss)
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0;
    let _ = std::fs::remove_file(&rss);
    let _ = std::fs::remove_file(&kubeconfig);
    let _ = env
        .kubectl()
        .args(["delete", "clusterrolebinding", env.ns()])
        .output();
    if !out.status.success() {
        eprintln!(
            "{} failed: {}",
            tool.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Outcome {
        seconds,
        min_ready: watchers
            .iter()
            .map(|(w, floor)| (w.min_ready(), *floor))
            .collect(),
        requests,
        evicted,
        peak_mib,
        max_cordoned: cordons.max_cordoned(),
        ok: out.status.success(),
    }
}

/// "3/3" when every workload kept its floor, else the worst shortfall.
fn availability(o: &Outcome) -> String {
    let worst = o
        .min_ready
        .iter()
        .min_by_key(|(min, floor)| *min as i64 - *floor as i64)
        .copied()
        .unwrap_or((0, 0));
    let below = o.min_ready.iter().filter(|(m, f)| m < f).count();
    if below == 0 {
        format!("kept ({}>={})", worst.0, worst.1)
    } else {
        format!("BELOW in {below}: {}<{}", worst.0, worst.1)
    }
}

#[tokio::main]
async fn main() {
    let mut rows = Vec::new();
    let mut ratios = BTreeMap::new();
    for scenario in scenarios() {
        let kordon = run(&scenario, Tool::Kordon).await;
        let kubectl = run(&scenario, Tool::Kubectl).await;
        for (tool, o) in [(Tool::Kordon, &kordon), (Tool::Kubectl, &kubectl)] {
            rows.push(format!(
                "| {} | {} | {}{:.1} | {} | {} | {} ({:.1}/pod) | {:.0} |",
                scenario.name,
                tool.name(),
                if o.ok { "" } else { "FAILED " },
                o.seconds,
                availability(o),
                o.max_cordoned,
                o.requests,
                o.requests as f64 / o.evicted.max(1) as f64,
                o.peak_mib
            ));
        }
        ratios.insert(
            scenario.name,
            (
                kordon.seconds / kubectl.seconds,
                (kordon.requests as f64 / kordon.evicted.max(1) as f64)
                    / (kubectl.requests as f64 / kubectl.evicted.max(1) as f64)
                        .max(f64::MIN_POSITIVE),
            ),
        );
    }
    println!(
        "| scenario | tool | wall s | budget floor (min Ready seen) | max nodes out | API requests | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("| scenario | kordon/kubectl time | kordon/kubectl requests per evicted pod |");
    println!("|---|---|---|");
    for (name, (time, req)) in ratios {
        println!("| {name} | {time:.2}x | {req:.2}x |");
    }
}
