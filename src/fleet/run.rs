//! A roll as a whole: what it was asked to do (kept in the lock's lease, so a re-run of
//! the same command is recognised and continues the same run), its limits and its
//! order.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use super::LOCK_NAME;
use super::mark::Mark;
use crate::classify::{Permissions, Refusal, Verdict, classify};
use crate::cluster::{ClusterError, Connection, lease};
use crate::names::NodeName;
use crate::plan::PlanReport;
use crate::pod::PodKey;
use crate::snapshot::Snapshot;
use crate::workload::{Workload, WorkloadId};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

const RUN: &str = "kordon.dev/run";
const SPEC: &str = "kordon.dev/run-spec";
const STATE: &str = "kordon.dev/run-state";
const NODES: &str = "kordon.dev/run-nodes";
const UPDATED: &str = "kordon.dev/run-updated-at";

/// What a roll was asked to do. Two invocations with the same spec are the same roll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub nodes: Vec<String>,
    pub selector: Option<String>,
    pub command: Vec<String>,
    pub manual: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    /// Every node done.
    Done,
    /// Every node was tried; some failed (they stay cordoned).
    Failed,
    /// Stopped by failures before every node was tried.
    Halted,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// Another run took the lock (this one could not renew it in time).
    LockLost,
}

impl RunState {
    const ALL: [RunState; 6] = [
        RunState::Running,
        RunState::Done,
        RunState::Failed,
        RunState::Halted,
        RunState::Interrupted,
        RunState::LockLost,
    ];

    /// The state a lease annotation names; `None` for one this version does not know.
    fn parse(s: &str) -> Option<RunState> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Halted => "halted",
            RunState::Interrupted => "interrupted",
            RunState::LockLost => "lock-lost",
        }
    }
}

/// The last run, as its lease records it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run: String,
    pub spec: Option<RunSpec>,
    /// `None` when the lease names no state this version knows.
    pub state: Option<RunState>,
    pub nodes: Vec<String>,
    pub updated: Option<String>,
    /// The live holder, if a process holds the lock now.
    pub holder: Option<String>,
}

/// Reads the last run from the lock's lease.
pub async fn last(conn: &Connection, namespace: &str) -> Result<Option<RunRecord>, ClusterError> {
    let lease = lease::read(conn, namespace, LOCK_NAME).await?;
    Ok(lease.as_ref().and_then(of_lease))
}

/// The run record a lease carries, if any.
pub fn of_lease(state: &lease::LeaseState) -> Option<RunRecord> {
    let a = &state.annotations;
    let run = a.get(RUN)?;
    let holder = state
        .is_held(jiff::Timestamp::now())
        .then(|| state.holder.clone())
        .flatten();
    Some(RunRecord {
        run: run.clone(),
        spec: a.get(SPEC).and_then(|s| serde_json::from_str(s).ok()),
        state: a.get(STATE).and_then(|s| RunState::parse(s)),
        nodes: a
            .get(NODES)
            .map(|n| {
                n.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        updated: a.get(UPDATED).cloned(),
        holder,
    })
}

/// The lease annotations recording a run.
pub fn record(
    run: &str,
    spec: &RunSpec,
    state: RunState,
    nodes: &[NodeName],
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (RUN.to_string(), run.to_string()),
        (
            SPEC.to_string(),
            serde_json::to_string(spec).unwrap_or_default(),
        ),
        (STATE.to_string(), state.as_str().to_string()),
        (
            NODES.to_string(),
            nodes
                .iter()
                .map(NodeName::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        (UPDATED.to_string(), jiff::Timestamp::now().to_string()),
    ])
}

/// Continue the last run when it did not finish and was the same roll (or `--resume`
/// says so); otherwise start a new one. Returns the run id and whether it resumes.
pub fn decide(
    last: Option<&RunRecord>,
    spec: &RunSpec,
    resume: bool,
) -> Result<(String, bool), String> {
    let unfinished = last.filter(|r| r.state != Some(RunState::Done));
    match unfinished {
        Some(r) if resume || r.spec.as_ref() == Some(spec) => Ok((r.run.clone(), true)),
        None if resume => Err(match last {
            Some(r) => format!("the last run, {}, finished", r.run),
            None => "no roll has run in this cluster (or in this --lock-namespace)".into(),
        }),
        _ => Ok((new_id(), false)),
    }
}

fn new_id() -> String {
    format!(
        "roll-{}-{:04x}",
        jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S"),
        std::process::id() & 0xffff
    )
}

/// Who holds the lock, for whoever finds it taken.
pub fn holder(run: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{user}@{host} pid {} run {run}", std::process::id())
}

/// `--max-unavailable`: a count, or a percentage of the fleet rounded down (at least
/// one node for a percentage above zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    Count(usize),
    Percent(u32),
}

impl FromStr for MaxUnavailable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--max-unavailable must be a number of nodes or a percentage like 25%, not \"{s}\""
            )
        };
        match s.strip_suffix('%') {
            Some(p) => p.parse().map(Self::Percent).map_err(|_| bad()),
            None => s.parse().map(Self::Count).map_err(|_| bad()),
        }
    }
}

impl MaxUnavailable {
    /// How many nodes of a fleet of `fleet` may be down at once.
    pub fn resolve(self, fleet: usize) -> Result<usize, String> {
        let n = match self {
            Self::Count(n) => n,
            Self::Percent(0) => 0,
            Self::Percent(p) if p > 100 => fleet + 1,
            Self::Percent(p) => (fleet * p as usize / 100).max(1),
        };
        if n == 0 {
            Err("--max-unavailable of 0 would never let a node go; use at least 1".into())
        } else if n > fleet {
            Err(format!(
                "--max-unavailable {n} is more than the {fleet} node(s) selected; at most {fleet}"
            ))
        } else {
            Ok(n)
        }
    }
}

/// `--order`: which nodes go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Order {
    /// Fewest pods to evict first (ties by name): problems show up on cheap nodes.
    #[default]
    LeastDisruptive,
    /// By node name.
    Name,
    /// As named on the command line (by name for a selector).
    Given,
}

/// What a node holds, read once from the snapshot for the whole fleet.
#[derive(Debug, Default)]
pub(crate) struct Holding {
    /// Pods a drain would evict, whatever the flags.
    pub evictable: usize,
    /// Workloads with pods on the node: its health gate waits for them.
    pub workloads: BTreeSet<WorkloadId>,
    /// Those whose budget allows one disruption at a time (see [`super::caps`]).
    pub single: BTreeSet<WorkloadId>,
}

/// Every node's [`Holding`], in one pass over the pods.
pub(crate) fn holdings(snapshot: &Snapshot) -> HashMap<String, Holding> {
    let everything = Permissions {
        ignore_daemonsets: true,
        delete_emptydir_data: true,
        force: true,
        ignore_do_not_disrupt: true,
        evict_daemonsets: false,
    };
    let mut by_node: HashMap<String, Holding> = HashMap::new();
    for p in &snapshot.pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let holding = by_node.entry(node).or_default();
        if matches!(classify(p, everything), Verdict::Evict(_)) {
            holding.evictable += 1;
        }
        if let Some(w) = snapshot.workload_of(p) {
            if single_disruption(&snapshot.budgets_covering(p), &w) {
                holding.single.insert(w.id.clone());
            }
            holding.workloads.insert(w.id);
        }
    }
    by_node
}

/// The workload's budget lets one pod at a time be disrupted: its PodDisruptionBudget
/// does (expected pods less desired healthy), or, without one, its implicit budget.
fn single_disruption(budgets: &[&PodDisruptionBudget], w: &Workload) -> bool {
    if budgets.is_empty() {
        return w.max_unavailable <= 1;
    }
    budgets.iter().any(|b| {
        b.status
            .as_ref()
            .is_none_or(|s| s.expected_pods - s.desired_healthy <= 1)
    })
}

pub(super) fn order(
    nodes: &mut [(Node, Option<Mark>)],
    order: Order,
    holdings: &HashMap<String, Holding>,
) {
    let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    match order {
        Order::Given => {}
        Order::Name => nodes.sort_by_key(|(n, _)| name(n)),
        Order::LeastDisruptive => nodes.sort_by_cached_key(|(n, _)| {
            let node = name(n);
            (holdings.get(&node).map_or(0, |h| h.evictable), node)
        }),
    }
}

/// Why a wave of nodes cannot be drained together: the pods refused (and why), and
/// the replacements no remaining node can take.
#[derive(Debug, Clone)]
pub struct UnsafeWave {
    pub nodes: Vec<NodeName>,
    pub refused: Vec<(PodKey, Vec<Refusal>)>,
    pub fits_nowhere: Vec<PodKey>,
}

impl UnsafeWave {
    pub(super) fn of(wave: &[NodeName], report: &PlanReport) -> UnsafeWave {
        UnsafeWave {
            nodes: wave.to_vec(),
            refused: report
                .pods
                .iter()
                .filter_map(|p| match &p.verdict {
                    Verdict::Refuse { reasons } => {
                        Some((p.pod.clone(), reasons.iter().cloned().collect()))
                    }
                    _ => None,
                })
                .collect(),
            fits_nowhere: report.fits_nowhere.iter().map(|u| u.pod.clone()).collect(),
        }
    }
}

impl std::fmt::Display for UnsafeWave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut reasons: Vec<String> = self
            .refused
            .iter()
            .map(|(pod, why)| {
                let why: Vec<String> = why.iter().map(Refusal::explain).collect();
                format!("{pod} {}", why.join(" and "))
            })
            .collect();
        if !self.fits_nowhere.is_empty() {
            let pods: Vec<String> = self.fits_nowhere.iter().map(ToString::to_string).collect();
            reasons.push(format!("no remaining node can take {}", pods.join(", ")));
        }
        let names: Vec<&str> = self.nodes.iter().map(NodeName::as_str).collect();
        write!(
            f,
            "with {} down, {}",
            names.join(" and "),
            reasons.join(" and ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str) -> RunSpec {
        RunSpec {
            nodes: vec!["a".into(), "b".into()],
            selector: None,
            command: vec![cmd.into()],
            manual: false,
        }
    }

    fn record_of(state: RunState, cmd: &str) -> RunRecord {
        RunRecord {
            run: "roll-1".into(),
            spec: Some(spec(cmd)),
            state: Some(state),
            nodes: Vec::new(),
            updated: None,
            holder: None,
        }
    }

    #[test]
    fn the_same_unfinished_roll_is_resumed_and_anything_else_starts_anew() {
        let interrupted = record_of(RunState::Interrupted, "patch");
        assert_eq!(
            decide(Some(&interrupted), &spec("patch"), false),
            Ok(("roll-1".into(), true))
        );
        let (id, resumed) = decide(Some(&interrupted), &spec("other"), false).unwrap();
        assert!(!resumed && id != "roll-1");
        // --resume takes the last unfinished run whatever the spec.
        assert_eq!(
            decide(Some(&interrupted), &spec("other"), true),
            Ok(("roll-1".into(), true))
        );
        let done = record_of(RunState::Done, "patch");
        assert!(!decide(Some(&done), &spec("patch"), false).unwrap().1);
        assert!(decide(Some(&done), &spec("patch"), true).is_err());
        assert!(decide(None, &spec("patch"), true).is_err());
        // A state this version does not know is not taken for finished.
        let unknown = RunRecord {
            state: None,
            ..record_of(RunState::Done, "patch")
        };
        assert!(decide(Some(&unknown), &spec("patch"), false).unwrap().1);
    }

    #[test]
    fn every_run_state_reads_back_from_its_annotation() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RunState::parse("paused"), None);
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage_within_the_fleet() {
        let m = |s: &str| s.parse::<MaxUnavailable>().unwrap();
        assert_eq!(m("2").resolve(4), Ok(2));
        assert_eq!(m("50%").resolve(4), Ok(2));
        assert_eq!(m("10%").resolve(4), Ok(1));
        assert_eq!(m("100%").resolve(4), Ok(4));
        assert!(
            m("0")
                .resolve(4)
                .unwrap_err()
                .contains("never let a node go")
        );
        assert!(m("0%").resolve(4).is_err());
        assert!(
            m("5")
                .resolve(4)
                .unwrap_err()
                .contains("more than the 4 node(s)")
        );
        assert!("two".parse::<MaxUnavailable>().is_err());
    }
}
