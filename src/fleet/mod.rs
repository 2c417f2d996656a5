//! Rolling maintenance over many nodes (`kordon roll`): plan the whole fleet first,
//! take a cluster-wide lock, then run the four steps on up to N nodes at a time, each
//! behind health gates, inside maintenance windows, recording every phase on its node
//! so that a re-run after a crash continues where the last one stopped.
pub mod gate;
pub mod mark;
mod node;
pub mod run;
pub mod window;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::access::{self, Permission};
use crate::cluster::events::NodeEvents;
use crate::cluster::lease::{self, LockError, LockSpec};
use crate::cluster::{ClusterError, Connection, nodes};
use crate::drain::{DrainOptions, Event};
use crate::names::NodeName;
use crate::plan::{PlanOptions, PlanReport};
use crate::snapshot::Snapshot;
use crate::workflow::{ReadyCriteria, Work};
use mark::{Mark, Phase};
pub use node::{NodeResult, Outcome};
pub use run::{MaxUnavailable, Order, RunRecord, RunSpec, RunState};
use window::{Availability, Window};

#[derive(Debug, Clone)]
pub struct RollOptions {
    pub drain: DrainOptions,
    pub work: Work,
    pub ready: ReadyCriteria,
    pub ready_timeout: Duration,
    /// How long each health gate may take.
    pub gate_timeout: Duration,
    pub max_unavailable: MaxUnavailable,
    pub order: Order,
    pub windows: Vec<Window>,
    /// Soak time after a node is done before the next one starts.
    pub pause_between: Duration,
    /// The roll halts once this many nodes failed.
    pub max_failures: usize,
    pub lock: LockOptions,
    /// What the run was asked to do, kept in the lease to recognise a re-run.
    pub spec: RunSpec,
    /// `--resume`: continue the last unfinished run (which must exist).
    pub resume: bool,
}

#[derive(Debug, Clone)]
pub struct LockOptions {
    pub namespace: String,
    /// How long to wait for another run's lock before refusing.
    pub wait: Duration,
    /// The lease duration: how soon a crashed run's lock can be taken over.
    pub duration: Duration,
}

/// The lease every roll takes, in the lock namespace.
pub const LOCK_NAME: &str = "kordon-roll";

/// Progress as it happens, for the output layer.
#[derive(Debug, Clone)]
pub enum RollProgress {
    Started {
        run: String,
        resumed: bool,
        /// How many nodes of this run may be out at once: the cap less the nodes
        /// other runs sharing the lock left out of service (`out_elsewhere`).
        slots: usize,
        out_elsewhere: Vec<String>,
        order: Vec<NodeName>,
    },
    /// The pre-flight plan of one wave: nodes that may be down together.
    Planned {
        wave: Vec<NodeName>,
        report: PlanReport,
    },
    /// No new node starts before `until`.
    Waiting {
        until: jiff::Timestamp,
        why: WaitReason,
    },
    Phase {
        node: NodeName,
        phase: Phase,
    },
    Drain {
        node: NodeName,
        event: Event,
    },
    Failed {
        node: NodeName,
        phase: Phase,
        error: String,
    },
    /// `--manual`: asking the person at the terminal to do the work.
    Prompt {
        node: NodeName,
        text: String,
    },
    /// Ctrl-C or a lost lock: nodes in progress stop at their next safe point.
    Stopping {
        why: RunState,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Outside every maintenance window: the next one opens then.
    Window,
    /// `--pause-between` after the last node.
    Pause,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollReport {
    pub run: String,
    pub resumed: bool,
    pub state: RunState,
    pub max_unavailable: usize,
    pub nodes: Vec<NodeResult>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollError {
    #[error("{0}")]
    MaxUnavailable(String),
    #[error("nothing to resume: {0}")]
    NothingToResume(String),
    #[error(
        "{} is still in the middle of another run ({}); resume that run with `kordon roll --resume`, or finish those nodes by hand (uncordon, remove their kordon.dev/ annotations); nothing was changed",
        plural(.nodes.len(), "node"), .nodes.join("; ")
    )]
    Unfinished { nodes: Vec<String> },
    #[error(
        "--max-unavailable {max_unavailable} leaves no room: {} still out of service from another run ({}); finish that run first (`kordon roll --resume`, or re-run it), or raise --max-unavailable; nothing was changed",
        plural(.nodes.len(), "node"), .nodes.join("; ")
    )]
    NoRoom {
        max_unavailable: usize,
        nodes: Vec<String>,
    },
    #[error(
        "the fleet plan is unsafe: {}; nothing was changed",
        .waves.join("; ")
    )]
    Unsafe { waves: Vec<String> },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// What the node tasks share.
pub(crate) struct Job<'a> {
    conn: &'a Connection,
    options: &'a RollOptions,
    run: String,
    events: NodeEvents,
    /// Set when the roll must stop at the next safe point, with why.
    stop: watch::Receiver<Option<RunState>>,
    on_progress: &'a (dyn Fn(RollProgress) + Sync),
}

pub async fn roll(
    conn: &Connection,
    targets: Vec<Node>,
    opts: &RollOptions,
    on_progress: &(dyn Fn(RollProgress) + Sync),
) -> Result<RollReport, RollError> {
    let cap = opts
        .max_unavailable
        .resolve(targets.len())
        .map_err(RollError::MaxUnavailable)?;
    // Another run holding the lock is the first thing to say (or to wait for): what
    // this run decides below must be read after that run has let go.
    let lease = lease::wait_free(conn, &opts.lock.namespace, LOCK_NAME, opts.lock.wait).await?;
    let last = lease.as_ref().and_then(run::of_lease);
    let (run_id, resumed) =
        run::decide(last.as_ref(), &opts.spec, opts.resume).map_err(RollError::NothingToResume)?;

    // One read of the cluster: marks, pods to plan with, the workloads each node holds.
    let mut snapshot = Snapshot::live(conn).await?;
    let out = out_of_service(&snapshot.nodes, &targets, &run_id, &opts.lock.namespace);
    if !out.unfinished.is_empty() {
        return Err(RollError::Unfinished {
            nodes: out.unfinished,
        });
    }
    if out.elsewhere.len() >= cap {
        return Err(RollError::NoRoom {
            max_unavailable: cap,
            nodes: out.elsewhere,
        });
    }
    let slots = cap - out.elsewhere.len();

    let mut results = Vec::new();
    let mut in_progress = Vec::new();
    let mut fresh = Vec::new();
    for node in targets {
        let name = NodeName::new(node.metadata.name.as_deref().unwrap_or_default());
        match continued(&node, &run_id, &opts.lock.namespace) {
            Some(m) if m.phase == Phase::Done => results.push(NodeResult::untouched(
                name,
                Outcome::AlreadyDone,
                Some(&m),
                crate::node_state::NodeState::of(&node).to_string(),
            )),
            Some(m) => in_progress.push((node, Some(m))),
            None => fresh.push((node, None)),
        }
    }
    let holdings = run::holdings(&snapshot);
    run::order(&mut fresh, opts.order, &holdings);
    let queue: VecDeque<(Node, Option<Mark>)> = in_progress.into_iter().chain(fresh).collect();
    let order: Vec<NodeName> = queue.iter().map(|(n, _)| name_of(n)).collect();
    on_progress(RollProgress::Started {
        run: run_id.clone(),
        resumed,
        slots,
        out_elsewhere: out.elsewhere,
        order: order.clone(),
    });

    plan_fleet(&mut snapshot, &queue, slots, opts, on_progress)?;
    access::require(
        conn,
        "roll nodes",
        &needed_permissions(&opts.lock.namespace),
    )
    .await?;

    let holder = run::holder(&run_id);
    let lock = lease::acquire(
        conn,
        &LockSpec {
            namespace: opts.lock.namespace.clone(),
            name: LOCK_NAME.into(),
            holder: holder.clone(),
            duration: opts.lock.duration,
        },
        run::record(&run_id, &opts.spec, RunState::Running, &order),
    )
    .await?;

    let (stop_tx, stop_rx) = watch::channel(None);
    let watcher = spawn_stop_watch(stop_tx, lock.lost());
    let job = Job {
        conn,
        options: opts,
        run: run_id.clone(),
        events: NodeEvents::new(conn, &holder),
        stop: stop_rx,
        on_progress,
    };
    let state = schedule(&job, &holdings, queue, slots, &mut results).await;
    watcher.abort();
    let state = if state == RunState::Done && results.iter().any(|r| r.outcome == Outcome::Failed) {
        RunState::Failed
    } else {
        state
    };
    if let Err(e) = lock
        .release(run::record(&run_id, &opts.spec, state, &order))
        .await
    {
        tracing::warn!("cannot release the lock: {e}; it expires on its own");
    }
    results.sort_by_key(|r| order.iter().position(|n| *n == r.node));
    Ok(RollReport {
        run: run_id,
        resumed,
        state,
        max_unavailable: cap,
        nodes: results,
    })
}

/// Nodes other runs left out of service (crashed, halted on a failure, stopped).
struct OutOfService {
    /// Selected nodes that a run under a different lock may still be working on.
    unfinished: Vec<String>,
    /// Nodes outside the selection, left by a run sharing this lock: each takes one
    /// of the cap's slots, so the cap holds across runs.
    elsewhere: Vec<String>,
}

fn out_of_service(all: &[Node], targets: &[Node], run: &str, lock_namespace: &str) -> OutOfService {
    let selected: BTreeSet<&str> = targets
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut out = OutOfService {
        unfinished: Vec::new(),
        elsewhere: Vec::new(),
    };
    for node in all {
        let (Some(name), Some(mark)) = (node.metadata.name.as_deref(), Mark::of(node)) else {
            continue;
        };
        if mark.run == run || mark.phase == Phase::Done {
            continue;
        }
        let ours = mark.lock_namespace == lock_namespace;
        let line = format!("node {name} is {}", mark.describe());
        match (selected.contains(name), ours) {
            (true, false) => out.unfinished.push(line),
            (false, true) => out.elsewhere.push(line),
            // A selected node left by a run under this lock is continued (below);
            // another lock's nodes outside the selection belong to another fleet.
            _ => {}
        }
    }
    out
}

/// The mark a selected node is continued from: this run's, or an unfinished one that
/// an earlier run under the same lock left behind (that run can no longer be live,
/// as this one is about to hold the lock).
fn continued(node: &Node, run: &str, lock_namespace: &str) -> Option<Mark> {
    Mark::of(node)
        .filter(|m| m.run == run || (m.phase != Phase::Done && m.lock_namespace == lock_namespace))
}

fn name_of(node: &Node) -> NodeName {
    NodeName::new(node.metadata.name.as_deref().unwrap_or_default())
}

/// Plans the nodes still to drain in waves of `cap`, each wave as if its nodes were
/// cordoned together (the others of the wave are where replacements cannot go).
fn plan_fleet(
    snapshot: &mut Snapshot,
    queue: &VecDeque<(Node, Option<Mark>)>,
    cap: usize,
    opts: &RollOptions,
    on_progress: &(dyn Fn(RollProgress) + Sync),
) -> Result<(), RollError> {
    let to_drain: Vec<NodeName> = queue
        .iter()
        .filter(|(_, m)| m.as_ref().is_none_or(|m| m.phase == Phase::Draining))
        .map(|(n, _)| name_of(n))
        .collect();
    // Nodes this roll has cordoned are back before a later wave starts.
    let returning: BTreeSet<String> = queue
        .iter()
        .filter(|(n, m)| match m {
            Some(m) => !m.was_unschedulable,
            None => !is_cordoned(n) || nodes::cordoned_by_kordon(n),
        })
        .map(|(n, _)| name_of(n).to_string())
        .collect();
    for node in &mut snapshot.nodes {
        if returning.contains(node.metadata.name.as_deref().unwrap_or_default()) {
            uncordoned(node);
        }
    }
    let options = PlanOptions {
        permissions: opts.drain.permissions,
        guards: opts.drain.guards,
    };
    let mut unsafe_waves = Vec::new();
    for wave in to_drain.chunks(cap) {
        let report = crate::plan::plan(snapshot, wave, options)
            .map_err(|crate::plan::PlanError::UnknownNode(n)| ClusterError::NodeNotFound(n))?;
        if !report.safe {
            unsafe_waves.push(run::unsafe_reason(wave, &report));
        }
        on_progress(RollProgress::Planned {
            wave: wave.to_vec(),
            report,
        });
    }
    if unsafe_waves.is_empty() {
        Ok(())
    } else {
        Err(RollError::Unsafe {
            waves: unsafe_waves,
        })
    }
}

fn is_cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

/// The node as it will be once uncordoned: schedulable, without the taint the node
/// controller adds to cordoned nodes.
fn uncordoned(node: &mut Node) {
    if let Some(spec) = node.spec.as_mut() {
        spec.unschedulable = None;
        if let Some(taints) = spec.taints.as_mut() {
            taints.retain(|t| t.key != "node.kubernetes.io/unschedulable");
        }
    }
}

/// Beyond what each drain checks itself: the lock, the node records, the events.
fn needed_permissions(lock_namespace: &str) -> Vec<Permission> {
    vec![
        Permission::cluster("patch", "", "nodes"),
        Permission::namespaced("get", "coordination.k8s.io", "leases", None, lock_namespace),
        Permission::namespaced(
            "create",
            "coordination.k8s.io",
            "leases",
            None,
            lock_namespace,
        ),
        Permission::namespaced(
            "update",
            "coordination.k8s.io",
            "leases",
            None,
            lock_namespace,
        ),
        Permission::namespaced("create", "events.k8s.io", "events", None, "default"),
    ]
}

/// The first Ctrl-C (or losing the lock) asks every node to stop at its next safe
/// point; a second Ctrl-C exits at once, leaving each node's phase recorded for a
/// re-run.
fn spawn_stop_watch(
    stop: watch::Sender<Option<RunState>>,
    mut lost: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let state = tokio::select! {
            _ = tokio::signal::ctrl_c() => RunState::Interrupted,
            _ = lost.wait_for(|l| *l) => RunState::LockLost,
        };
        let _ = stop.send(Some(state));
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "interrupted again: exiting now; every node's phase is recorded, re-run the roll to continue"
            );
            std::process::exit(130);
        }
    })
}

/// Starts nodes while slots, windows and pauses allow; collects their results.
async fn schedule(
    job: &Job<'_>,
    holdings: &HashMap<String, run::Holding>,
    mut queue: VecDeque<(Node, Option<Mark>)>,
    cap: usize,
    results: &mut Vec<NodeResult>,
) -> RunState {
    let opts = job.options;
    let mut running = FuturesUnordered::new();
    let mut failures = 0;
    let mut pause_until: Option<jiff::Timestamp> = None;
    let mut announced: Option<jiff::Timestamp> = None;
    let mut stop = job.stop.clone();
    loop {
        let stopping = stop.borrow().is_some();
        let halted = failures >= opts.max_failures;
        // Failed nodes stay cordoned, so they keep their slot.
        let mut wait_until: Option<tokio::time::Instant> = None;
        while !stopping && !halted && running.len() + failures < cap {
            let Some((_, previous)) = queue.front() else {
                break;
            };
            let now = jiff::Timestamp::now();
            if previous.is_none()
                && let Some((until, why)) = next_start(pause_until, &opts.windows, now)
            {
                if announced != Some(until) {
                    announced = Some(until);
                    (job.on_progress)(RollProgress::Waiting { until, why });
                }
                let wait = until.duration_since(now).unsigned_abs();
                wait_until = Some(tokio::time::Instant::now() + wait);
                break;
            }
            let Some((node, previous)) = queue.pop_front() else {
                break;
            };
            let fresh = fresh_mark(&node, holdings, job);
            running.push(async move { node::maintain(job, &node, previous, fresh).await });
        }
        if running.is_empty() && (queue.is_empty() || stopping || halted) {
            break;
        }
        if running.is_empty() && wait_until.is_none() {
            // Every slot is held by a failed node: nothing can start.
            break;
        }
        let sleep = async {
            match wait_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            Some(result) = running.next(), if !running.is_empty() => {
                match result.outcome {
                    Outcome::Failed => failures += 1,
                    Outcome::Done => {
                        let pause = jiff::SignedDuration::try_from(opts.pause_between).unwrap_or_default();
                        pause_until = jiff::Timestamp::now().checked_add(pause).ok();
                    }
                    _ => {}
                }
                results.push(result);
            }
            _ = sleep => {}
            _ = stop.changed() => {
                if let Some(state) = *stop.borrow() {
                    (job.on_progress)(RollProgress::Stopping { why: state });
                }
            }
        }
    }
    for (node, previous) in queue {
        let name = name_of(&node);
        let state = crate::workflow::current_state(job.conn, &name).await;
        results.push(NodeResult::untouched(
            name,
            Outcome::NotStarted,
            previous.as_ref(),
            state,
        ));
    }
    let not_started = results.iter().any(|r| r.outcome == Outcome::NotStarted);
    if let Some(state) = *stop.borrow() {
        state
    } else if not_started {
        RunState::Halted
    } else {
        RunState::Done
    }
}

/// When the next node that has not started yet may start, if not now: after the pause
/// that follows a finished node, and inside a maintenance window.
fn next_start(
    pause_until: Option<jiff::Timestamp>,
    windows: &[Window],
    now: jiff::Timestamp,
) -> Option<(jiff::Timestamp, WaitReason)> {
    if let Some(t) = pause_until.filter(|t| *t > now) {
        return Some((t, WaitReason::Pause));
    }
    match window::availability(windows, now) {
        Some(Availability::Closed { opens }) => Some((opens, WaitReason::Window)),
        _ => None,
    }
}

/// The mark a node gets when the roll reaches it: whether it was already cordoned by
/// someone else, and which workloads it holds (the health gate waits for them).
fn fresh_mark(node: &Node, holdings: &HashMap<String, run::Holding>, job: &Job<'_>) -> Mark {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let workloads = holdings
        .get(name)
        .map(|h| h.workloads.iter().cloned().collect())
        .unwrap_or_default();
    Mark::new(
        &job.run,
        &job.options.lock.namespace,
        is_cordoned(node) && !nodes::cordoned_by_kordon(node),
        workloads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, mark: Option<(&str, &str, Phase)>) -> Node {
        let annotations = mark.map(|(run, lock, phase)| {
            let mut m = Mark::new(run, lock, false, Vec::new());
            m.enter(phase);
            m.annotations()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect()
        });
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn nodes_other_runs_left_out_take_slots_or_block_or_are_continued() {
        let all = vec![
            node("a", Some(("old", "ops", Phase::Maintaining))),
            node("b", Some(("old", "ops", Phase::Draining))),
            node("c", Some(("old", "ops", Phase::Done))),
            node("d", Some(("other", "elsewhere", Phase::Verifying))),
            node("e", Some(("other", "elsewhere", Phase::Draining))),
            node("f", Some(("now", "ops", Phase::Draining))),
            node("g", None),
        ];
        let selected: Vec<Node> = ["a", "d", "f", "g"]
            .iter()
            .filter_map(|n| all.iter().find(|x| x.metadata.name.as_deref() == Some(n)))
            .cloned()
            .collect();
        let out = out_of_service(&all, &selected, "now", "ops");
        // Another lock's run may still be working on a selected node.
        assert_eq!(out.unfinished.len(), 1);
        assert!(out.unfinished[0].starts_with("node d is verifying"));
        // An unselected node this lock's earlier run left out takes a slot; done
        // nodes and other fleets' nodes do not.
        assert_eq!(out.elsewhere.len(), 1);
        assert!(out.elsewhere[0].starts_with("node b is draining"));
        // Selected nodes continue from this run's mark or an earlier run's unfinished
        // one under the same lock; a done or foreign mark starts afresh.
        let from = |name: &str| {
            let n = all
                .iter()
                .find(|x| x.metadata.name.as_deref() == Some(name));
            n.and_then(|n| continued(n, "now", "ops")).map(|m| m.run)
        };
        assert_eq!(from("a").as_deref(), Some("old"));
        assert_eq!(from("c"), None);
        assert_eq!(from("d"), None);
        assert_eq!(from("f").as_deref(), Some("now"));
        assert_eq!(from("g"), None);
    }

    #[test]
    fn a_node_waits_for_the_pause_then_for_a_window() {
        // Tuesday 2026-11-24 12:00 UTC; the window opens on Mondays.
        let now: jiff::Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let monday: Window = "Mon 02:00-03:00 UTC".parse().unwrap();
        let later = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(next_start(None, &[], now), None);
        assert_eq!(
            next_start(Some(later), &[], now),
            Some((later, WaitReason::Pause))
        );
        let opens: jiff::Timestamp = "2026-11-30T02:00:00Z".parse().unwrap();
        assert_eq!(
            next_start(Some(now), std::slice::from_ref(&monday), now),
            Some((opens, WaitReason::Window))
        );
    }
}
