//! What a roll records on each node it works on, in annotations, so that any machine
//! can see where a run stands (`kordon status`, `kubectl describe node`) and a re-run
//! after a crash continues each node from its phase.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use crate::cluster::nodes::Annotations;
pub use crate::phase::Phase;
use crate::workload::WorkloadId;

const RUN: &str = "kordon.dev/run";
const LOCK: &str = "kordon.dev/lock-namespace";
const PHASE: &str = "kordon.dev/phase";
const PHASE_SINCE: &str = "kordon.dev/phase-since";
const STARTED: &str = "kordon.dev/started-at";
const WAS_UNSCHEDULABLE: &str = "kordon.dev/was-unschedulable";
const BOOT_ID: &str = "kordon.dev/boot-id-before";
const HEARTBEAT: &str = "kordon.dev/heartbeat-before";
const EVICTED: &str = "kordon.dev/evicted";
const WORKLOADS: &str = "kordon.dev/workloads";
const ERROR: &str = "kordon.dev/error";

/// The node's record for one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub run: String,
    /// Where the run's lock lives: runs sharing it share the concurrency cap, so a
    /// node another of them left out of service takes one of the cap's slots.
    pub lock_namespace: String,
    pub phase: Phase,
    pub phase_since: Timestamp,
    pub started: Timestamp,
    /// Someone else had cordoned the node before kordon came: it stays cordoned.
    pub was_unschedulable: bool,
    /// The node's bootID and Ready heartbeat before the work, to tell "back" from
    /// "never left" after a crash.
    pub boot_id_before: Option<String>,
    pub heartbeat_before: Option<Timestamp>,
    pub evicted: usize,
    /// Workloads whose pods were on the node: the health gate waits for them.
    pub workloads: Vec<WorkloadId>,
    /// Set when the phase failed; a re-run retries the phase.
    pub error: Option<String>,
}

impl Mark {
    pub fn new(
        run: &str,
        lock_namespace: &str,
        was_unschedulable: bool,
        workloads: Vec<WorkloadId>,
    ) -> Self {
        let now = Timestamp::now();
        Self {
            run: run.to_string(),
            lock_namespace: lock_namespace.to_string(),
            phase: Phase::Draining,
            phase_since: now,
            started: now,
            was_unschedulable,
            boot_id_before: None,
            heartbeat_before: None,
            evicted: 0,
            workloads,
            error: None,
        }
    }

    /// Reads the node's mark; `None` when kordon's roll never touched it (or the
    /// annotations are not ones it wrote).
    pub fn of(node: &Node) -> Option<Self> {
        let a = node.metadata.annotations.as_ref()?;
        let time = |key: &str| a.get(key).and_then(|v| v.parse::<Timestamp>().ok());
        Some(Self {
            run: a.get(RUN)?.clone(),
            lock_namespace: a.get(LOCK)?.clone(),
            phase: a.get(PHASE)?.parse().ok()?,
            phase_since: time(PHASE_SINCE)?,
            started: time(STARTED)?,
            was_unschedulable: a.get(WAS_UNSCHEDULABLE).is_some_and(|v| v == "true"),
            boot_id_before: a.get(BOOT_ID).cloned(),
            heartbeat_before: time(HEARTBEAT),
            evicted: a.get(EVICTED).and_then(|v| v.parse().ok()).unwrap_or(0),
            workloads: a
                .get(WORKLOADS)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
            error: a.get(ERROR).cloned(),
        })
    }

    /// Moves to `phase`, clearing a failure.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_since = Timestamp::now();
        self.error = None;
    }

    /// The annotations as a merge patch: every key, with absent values removed.
    pub fn annotations(&self) -> Annotations {
        let mut a: Annotations = BTreeMap::new();
        let mut set = |k: &str, v: Option<String>| {
            a.insert(k.to_string(), v);
        };
        set(RUN, Some(self.run.clone()));
        set(LOCK, Some(self.lock_namespace.clone()));
        set(PHASE, Some(self.phase.to_string()));
        set(PHASE_SINCE, Some(self.phase_since.to_string()));
        set(STARTED, Some(self.started.to_string()));
        set(WAS_UNSCHEDULABLE, Some(self.was_unschedulable.to_string()));
        set(BOOT_ID, self.boot_id_before.clone());
        set(HEARTBEAT, self.heartbeat_before.map(|t| t.to_string()));
        set(EVICTED, Some(self.evicted.to_string()));
        let workloads = (!self.workloads.is_empty())
            .then(|| serde_json::to_string(&self.workloads).unwrap_or_default());
        set(WORKLOADS, workloads);
        set(ERROR, self.error.clone());
        a
    }

    /// One line for people: "draining since 12:03:04Z (run r-…)" or the failure.
    pub fn describe(&self) -> String {
        match &self.error {
            Some(e) => format!("failed in {} (run {}): {e}", self.phase, self.run),
            None => format!(
                "{} since {} (run {})",
                self.phase,
                self.phase_since.strftime("%Y-%m-%d %H:%M:%SZ"),
                self.run
            ),
        }
    }
}

/// When each node a roll under this lock (`--lock-namespace`) started last, from the
/// marks: what `--max-per` counts, so that the rate holds across runs and crashes. A
/// node keeps one mark, so a node started twice shows its later start only.
pub fn starts(nodes: &[impl std::borrow::Borrow<Node>], lock_namespace: &str) -> Vec<Timestamp> {
    nodes
        .iter()
        .filter_map(|n| Mark::of(n.borrow()))
        .filter(|m| m.lock_namespace == lock_namespace)
        .map(|m| m.started)
        .collect()
}

/// A node carrying these annotations (those set to `None` left out), for tests.
#[cfg(test)]
pub(super) fn node_with(annotations: Annotations) -> Node {
    let mut node = Node::default();
    node.metadata.annotations = Some(
        annotations
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
    );
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_survives_the_round_trip_through_annotations() {
        let mut mark = Mark::new(
            "r-1",
            "kube-system",
            true,
            vec![WorkloadId {
                kind: crate::workload::WorkloadKind::Deployment,
                namespace: "shop".into(),
                name: "web".into(),
            }],
        );
        mark.enter(Phase::AwaitingReady);
        mark.boot_id_before = Some("boot-a".into());
        mark.evicted = 4;
        mark.error = Some("command exited with 1".into());
        let back = Mark::of(&node_with(mark.annotations())).expect("a mark");
        assert_eq!(back, mark);
        assert!(back.describe().starts_with("failed in awaiting-ready"));
    }

    #[test]
    fn clearing_an_error_removes_its_annotation() {
        let mut mark = Mark::new("r-1", "kube-system", false, Vec::new());
        mark.error = Some("boom".into());
        mark.enter(Phase::Maintaining);
        assert_eq!(mark.annotations().get(ERROR), Some(&None));
    }

    #[test]
    fn the_starts_counted_are_those_of_runs_under_the_same_lock() {
        let mut ours = Mark::new("r-1", "ops", false, Vec::new());
        ours.enter(Phase::Done);
        let theirs = Mark::new("r-2", "elsewhere", false, Vec::new());
        let nodes = [
            node_with(ours.annotations()),
            node_with(theirs.annotations()),
            Node::default(),
        ];
        assert_eq!(starts(&nodes, "ops"), [ours.started]);
    }

    #[test]
    fn nodes_without_a_complete_mark_have_none() {
        assert_eq!(Mark::of(&Node::default()), None);
        let mut partial = Annotations::new();
        partial.insert(RUN.into(), Some("r-1".into()));
        partial.insert(PHASE.into(), Some("sleeping".into()));
        assert_eq!(Mark::of(&node_with(partial)), None);
    }
}
