//! Whether a NodeMaintenance may start: its spec valid, its node free (of another
//! NodeMaintenance, of a roll), and its drain's plan safe. Until then nothing changes
//! and the status says what holds it.

use kube::ResourceExt;

use super::Ctx;
use super::options::drain_options;
use super::reconcile::{ReconcileError, node_of, watched_node};
use super::status::{self, Hold};
use super::tasks::{gate_timeout, reboot_timeout, volume_detach};
use crate::api::NodeMaintenance;
use crate::api::node_maintenance::StatusPhase;
use crate::cluster::ClusterError;
use crate::drain::{self, DrainError};
use crate::phase::Phase;
use crate::snapshot::Reach;

/// What a maintenance that may start records.
pub(super) struct Start {
    /// Someone else had cordoned the node.
    pub was_unschedulable: bool,
    /// What the drain touches, for the last gate.
    pub workloads: Vec<crate::workload::WorkloadId>,
}

/// The start when the maintenance may start, or what holds it (with, for a refused
/// drain, what would let each pod go: `status.refused`).
pub(super) async fn may_start(
    nm: &NodeMaintenance,
    ctx: &Ctx,
) -> Result<Result<Start, (Hold, Vec<String>)>, ReconcileError> {
    let hold = |reason, message: String| Ok(Err((Hold { reason, message }, Vec::new())));
    // Every duration of the spec is read here, once, before anything changes.
    let options = match drain_options(&nm.spec.drain)
        .and_then(|o| gate_timeout(nm).map(|_| o))
        .and_then(|o| reboot_timeout(nm).map(|_| o))
        .and_then(|o| {
            let command = nm.spec.step.command.as_ref();
            command
                .map_or(Ok(()), |c| c.time_limit().map(|_| ()))
                .map(|()| o)
        })
        .and_then(|o| volume_detach(nm).map(|_| o))
    {
        Ok(o) => o,
        Err(message) => return hold("InvalidSpec", message),
    };
    let node = node_of(nm);
    if let Some(other) = earlier_claim(nm, ctx) {
        return hold(
            "AnotherMaintenance",
            format!(
                "NodeMaintenance {other} holds node {node} first; this one waits for it to be deleted"
            ),
        );
    }
    let found = match watched_node(ctx, nm).await {
        Ok(n) => n,
        Err(ClusterError::NodeNotFound(_)) => {
            return hold("NodeNotFound", format!("node {node} does not exist"));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(mark) = crate::fleet::mark::Mark::of(&found).filter(|m| m.phase != Phase::Done) {
        return hold(
            "RollInProgress",
            format!("a kordon roll holds node {node}: {}", mark.describe()),
        );
    }
    tracing::debug!("NodeMaintenance {}: planning node {node}", nm.name_any());
    let plan = match drain::plan(&ctx.kordon, &node, &options, Reach::Placement).await {
        Ok(plan) => plan,
        Err(e) => return hold("DrainRefused", said(&e)),
    };
    tracing::debug!("NodeMaintenance {}: planned node {node}", nm.name_any());
    match plan.refusal(options.allow_pending) {
        None => Ok(Ok(Start {
            was_unschedulable: plan.cordoned_by_someone_else,
            workloads: plan.touched_workloads(),
        })),
        Some(refused @ DrainError::Refused { .. }) => {
            let parts: Vec<String> = refused
                .advice()
                .iter()
                .flat_map(status::advice_parts)
                .collect();
            Ok(Err((
                Hold {
                    reason: "DrainRefused",
                    message: parts.join("; "),
                },
                parts,
            )))
        }
        Some(DrainError::WouldStrand { pods, .. }) => hold(
            "WouldStrand",
            format!(
                "no other node can take the replacement of {}",
                pods.join("; ")
            ),
        ),
        Some(other) => hold("DrainRefused", said(&other)),
    }
}

/// A refused drain and what would let it go, in the spec's words.
fn said(e: &DrainError) -> String {
    let advice = advised(e);
    if advice.is_empty() {
        e.to_string()
    } else {
        format!("{e}; {advice}")
    }
}

/// What would let a refused drain go, in the spec's words: one part per pod.
fn advised(e: &DrainError) -> String {
    let parts: Vec<String> = e.advice().iter().map(status::advice).collect();
    parts.join("; ")
}

/// Another NodeMaintenance of the same node that acts first: one that has started, or
/// an older one still pending.
fn earlier_claim(nm: &NodeMaintenance, ctx: &Ctx) -> Option<String> {
    let key = |o: &NodeMaintenance| (o.creation_timestamp(), o.name_any());
    ctx.store
        .state()
        .into_iter()
        .filter(|o| o.spec.node_name == nm.spec.node_name && o.name_any() != nm.name_any())
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .find(|o| match o.status.as_ref().and_then(|s| s.phase) {
            None | Some(StatusPhase::Pending) => key(o) < key(nm),
            Some(p) => !p.finished(),
        })
        .map(|o| o.name_any())
}
