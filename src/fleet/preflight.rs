//! Before a roll touches anything: which nodes other runs left out of service, which
//! selected nodes continue from a mark, and whether every wave of the fleet can drain.
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::mark::{Mark, Phase};
use super::sequence::Domain;
use super::{RollError, RollOptions, RollProgress, name_of, run};
use crate::cluster::{ClusterError, nodes};
use crate::names::NodeName;
use crate::plan::PlanOptions;
use crate::snapshot::Snapshot;

/// Nodes other runs left out of service (crashed, halted on a failure, stopped).
pub(super) struct OutOfService {
    /// Selected nodes that a run under a different lock may still be working on.
    pub unfinished: Vec<String>,
    /// Selected nodes a NodeMaintenance holds: the controller's, not the roll's.
    pub held: Vec<String>,
    /// Nodes outside the selection, left by a run sharing this lock: each takes one
    /// of the cap's slots, so the cap holds across runs.
    pub elsewhere: Vec<String>,
    /// How many of `elsewhere` NodeMaintenances hold (the roll counts those afresh as
    /// it goes).
    pub by_maintenances: usize,
}

pub(super) fn out_of_service(
    all: &[Arc<Node>],
    targets: &[Node],
    run: &str,
    lock_namespace: &str,
) -> OutOfService {
    let selected: BTreeSet<&str> = targets
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut out = OutOfService {
        unfinished: Vec::new(),
        held: Vec::new(),
        elsewhere: Vec::new(),
        by_maintenances: 0,
    };
    for node in all.iter().map(AsRef::as_ref) {
        // A NodeMaintenance's node is the controller's: never this roll's, and out of
        // service for the cap.
        if let (Some(name), Some(holder)) = (
            node.metadata.name.as_deref(),
            crate::api::node_maintenance::holder_of(node),
        ) {
            let line = format!("node {name} (NodeMaintenance {holder})");
            match selected.contains(name) {
                true => out.held.push(line),
                false => {
                    out.elsewhere.push(line);
                    out.by_maintenances += 1;
                }
            }
            continue;
        }
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
pub(super) fn continued(node: &Node, run: &str, lock_namespace: &str) -> Option<Mark> {
    Mark::of(node)
        .filter(|m| m.run == run || (m.phase != Phase::Done && m.lock_namespace == lock_namespace))
}

/// Plans the nodes still to drain in waves of `cap`, each wave as if its nodes were
/// cordoned together (the others of the wave are where replacements cannot go). With
/// `--sequence` a wave never spans two domains: they are never out together.
pub(super) fn plan_fleet(
    snapshot: &mut Snapshot,
    queue: &VecDeque<(Node, Option<Mark>)>,
    cap: usize,
    opts: &RollOptions,
    on_progress: &(dyn Fn(RollProgress) + Sync),
) -> Result<(), RollError> {
    let to_drain: Vec<(NodeName, Option<Domain>)> = queue
        .iter()
        .filter(|(_, m)| m.as_ref().is_none_or(|m| m.phase == Phase::Draining))
        .map(|(n, _)| {
            (
                name_of(n),
                opts.rules.sequence.as_ref().map(|s| s.domain(n)),
            )
        })
        .collect();
    // Nodes this roll has cordoned are back before a later wave starts.
    let returning: BTreeSet<String> = queue
        .iter()
        .filter(|(n, m)| match m {
            Some(m) => !m.was_unschedulable,
            None => !nodes::cordoned_by_someone_else(n),
        })
        .map(|(n, _)| name_of(n).to_string())
        .collect();
    for node in &mut snapshot.nodes {
        if returning.contains(node.metadata.name.as_deref().unwrap_or_default()) {
            uncordoned(Arc::make_mut(node));
        }
    }
    let options = PlanOptions {
        permissions: opts.drain.permissions,
        guards: opts.drain.guards,
        drain_order: opts.drain.drain_order.clone(),
    };
    let mut unsafe_waves = Vec::new();
    let waves = to_drain
        .chunk_by(|a, b| a.1 == b.1)
        .flat_map(|domain| domain.chunks(cap))
        .map(|wave| wave.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    for wave in waves {
        let wave = wave.as_slice();
        let report = crate::plan::plan(snapshot, wave, &options)
            .map_err(|crate::plan::PlanError::UnknownNode(n)| ClusterError::NodeNotFound(n))?;
        if report.blocks(opts.drain.allow_pending) {
            unsafe_waves.push(run::UnsafeWave::of(wave, &report));
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

/// The node as it will be once uncordoned: schedulable, without the taint the node
/// controller adds to cordoned nodes.
pub(super) fn uncordoned(node: &mut Node) {
    if let Some(spec) = node.spec.as_mut() {
        spec.unschedulable = None;
        if let Some(taints) = spec.taints.as_mut() {
            taints.retain(|t| t.key != "node.kubernetes.io/unschedulable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::mark::node_with;

    fn node(name: &str, mark: Option<(&str, &str, Phase)>) -> Node {
        let mut node = mark
            .map(|(run, lock, phase)| {
                let mut m = Mark::new(run, lock, false, Vec::new());
                m.enter(phase);
                node_with(m.annotations())
            })
            .unwrap_or_default();
        node.metadata.name = Some(name.into());
        node
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
        let all: Vec<Arc<Node>> = all.into_iter().map(Arc::new).collect();
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
}
