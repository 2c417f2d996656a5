//! One NodeMaintenance, one step at a time: start when the node is free and the plan is
//! safe, drain, run the maintenance step, wait for Ready, bring the node back. Every
//! cordon change comes from the state machine and goes to the node before the status
//! records it, so a restart (or a new leader) resumes from the status and the node's
//! kordon mark says whose cordon it is.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::Ctx;
pub use super::error::{ReconcileError, retry};
use super::start::{Start, may_start};
use super::status;
use super::tasks::{Look, run};
use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{HELD_BY, NodeMaintenanceStatus, StatusPhase, holder_of};
use crate::cluster::ClusterError;
use crate::cluster::events::Severity;
use crate::cluster::nodes::{self, Annotations, DryRun};
use crate::fence;
use crate::names::NodeName;
use crate::workflow::driver::{self, Command, Observed, Phase, Policy, Record, Task};
use crate::workflow::notes;

/// Keeps a NodeMaintenance until the node is put back.
pub const FINALIZER: &str = "kordon.dev/node-maintenance";

/// How often a running phase looks again (drain progress, reboot, Ready).
pub(super) const LOOK_AGAIN: Duration = Duration::from_secs(5);

/// How long a blocked start waits before it looks again.
const RETRY_START: Duration = Duration::from_secs(15);

pub async fn reconcile(nm: Arc<NodeMaintenance>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let api: Api<NodeMaintenance> = Api::all(ctx.kordon.conn.client.clone());
    let result = finalizer(&api, FINALIZER, nm, |event| async {
        match event {
            finalizer::Event::Apply(nm) => apply(&nm, &ctx).await,
            finalizer::Event::Cleanup(nm) => withdraw(&nm, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(started.elapsed(), result.is_ok());
    result
}

pub fn error_policy(nm: Arc<NodeMaintenance>, error: &ReconcileError, _: Arc<Ctx>) -> Action {
    retry("NodeMaintenance", &nm.name_any(), error)
}

/// How soon an object the watch shows behind our own write is looked at again (its
/// watch event wakes it sooner).
const CATCH_UP: Duration = Duration::from_secs(1);

async fn apply(nm: &NodeMaintenance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    if ctx.recorded.is_behind(nm) {
        return Ok(Action::requeue(CATCH_UP));
    }
    let status = nm.status.clone().unwrap_or_default();
    tracing::debug!("NodeMaintenance {}: {:?}", nm.name_any(), status.phase);
    match status.phase.unwrap_or(StatusPhase::Pending) {
        StatusPhase::Pending => start(nm, ctx).await,
        phase if phase.finished() => Ok(Action::await_change()),
        phase => {
            // A drain started by an earlier process (or leader) goes on from what is
            // left, on a node that must still be cordoned.
            let resumed = phase == StatusPhase::Draining
                && ctx.runs.state(&nm.name_any(), Task::Drain).is_none();
            let first = if resumed {
                Observed::Resume
            } else {
                Observed::Recorded
            };
            drive(nm.clone(), ctx, status, first).await
        }
    }
}

pub(super) fn node_of(nm: &NodeMaintenance) -> NodeName {
    NodeName::from(nm.spec.node_name.as_str())
}

/// The maintenance's node as the controller's watch has it; read only when the watch
/// has not seen it (yet, or at all).
pub(super) async fn watched_node(
    ctx: &Ctx,
    nm: &NodeMaintenance,
) -> Result<Arc<Node>, ClusterError> {
    match ctx.nodes.store().get(&ObjectRef::new(&nm.spec.node_name)) {
        Some(node) => Ok(node),
        None => nodes::get(&ctx.kordon.conn, &node_of(nm))
            .await
            .map(Arc::new),
    }
}

/// The controller's choices for the driver: both health gates, and a failed step keeps
/// the node cordoned for a person to look at.
const POLICY: Policy = Policy {
    daemon_sets: true,
    workloads: true,
    uncordon_on_failure: false,
};

/// Starts once the spec is valid, the node is free and its plan is safe; until then
/// the status says what holds it, and nothing changes.
async fn start(nm: &NodeMaintenance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let status = nm.status.clone().unwrap_or_default();
    match may_start(nm, ctx).await? {
        Err((hold, refused)) => {
            let pending = NodeMaintenanceStatus {
                phase: Some(StatusPhase::Pending),
                refused,
                ..status
            };
            status::write(ctx, nm, pending, Some(&hold)).await?;
            Ok(Action::requeue(RETRY_START))
        }
        Ok(Start {
            was_unschedulable,
            workloads,
        }) => {
            let started = NodeMaintenanceStatus {
                was_unschedulable: Some(was_unschedulable),
                started_at: Some(status::now()),
                refused: Vec::new(),
                workloads,
                ..status
            };
            drive(nm.clone(), ctx, started, Observed::Start).await
        }
    }
}

/// Carries out the driver's commands until one has to wait: each cordon change goes to
/// the node first (with kordon's mark), and the status follows once, when the pass
/// stops. A status that lags its node redoes at most the steps in between, and each is
/// safe to redo (an empty node drains at once, a Job is found again, the cordon is as
/// it should be); a phase passed through without waiting costs no write of its own.
async fn drive(
    nm: NodeMaintenance,
    ctx: &Ctx,
    mut status: NodeMaintenanceStatus,
    mut observed: Observed,
) -> Result<Action, ReconcileError> {
    let mut failure = String::new();
    loop {
        let record = Record {
            phase: status.phase.and_then(StatusPhase::progress),
            was_unschedulable: status.was_unschedulable.unwrap_or(false),
        };
        match driver::next(record, POLICY, observed) {
            Command::Record { phase, cordon } => {
                let entered = record.phase != Some(phase);
                put_node(ctx, &nm, cordon, phase.out_of_service()).await?;
                status = NodeMaintenanceStatus {
                    phase: Some(phase.into()),
                    phase_since: if entered {
                        Some(status::now())
                    } else {
                        status.phase_since
                    },
                    finished_at: (phase == Phase::Done)
                        .then(status::now)
                        .or(status.finished_at),
                    ..status
                };
                if entered {
                    let evicted = status.drain.as_ref().map_or(0, |d| d.evicted as usize);
                    let note = notes::entered(phase, record.was_unschedulable, evicted);
                    announce(ctx, &nm, false, Severity::Normal, note).await;
                }
                observed = Observed::Recorded;
            }
            Command::Run(task) => {
                observed = match run(&nm, ctx, &mut status, task).await? {
                    Look::Did => Observed::Did(task),
                    Look::Wait(hold, action) => {
                        status::write(ctx, &nm, status, hold.as_ref()).await?;
                        return Ok(action);
                    }
                    Look::Failed(message) => {
                        failure = message;
                        Observed::Failed
                    }
                    Look::Abandoned(message) => {
                        failure = message;
                        Observed::Abandoned
                    }
                };
            }
            Command::Fail { cordon } => {
                let at = record.phase.unwrap_or(Phase::Draining);
                return fail(&nm, ctx, status, at, cordon, failure).await;
            }
            Command::PutBack { cordon } => {
                put_node(ctx, &nm, cordon, false).await?;
                let status = NodeMaintenanceStatus {
                    phase: Some(StatusPhase::Abandoned),
                    last_error: Some(failure.clone()),
                    finished_at: Some(status::now()),
                    ..status
                };
                status::write(ctx, &nm, status, None).await?;
                let note = notes::abandoned(&failure);
                announce(ctx, &nm, true, Severity::Warning, note).await;
                return Ok(Action::await_change());
            }
            Command::Finish => {
                status::write(ctx, &nm, status, None).await?;
                return Ok(Action::await_change());
            }
        }
    }
}

/// The object is deleted: no eviction goes out any more, and the node is put back
/// (uncordoned if this maintenance cordoned it).
async fn withdraw(nm: &NodeMaintenance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    ctx.runs.stop(&nm.name_any());
    ctx.recorded.forget(nm);
    let status = nm.status.clone().unwrap_or_default();
    let node = match nodes::get(&ctx.kordon.conn, &node_of(nm)).await {
        Ok(n) => n,
        Err(ClusterError::NodeNotFound(_)) => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    };
    // Only a node this object holds is ours to put back.
    if holder_of(&node) != Some(nm.name_any().as_str()) {
        return Ok(Action::await_change());
    }
    // A node this object holds is out of service, whatever the object's own phase
    // (a failed step keeps it out too).
    let record = Record {
        phase: status
            .phase
            .and_then(StatusPhase::progress)
            .filter(|p| p.out_of_service())
            .or(Some(Phase::Draining)),
        was_unschedulable: status.was_unschedulable.unwrap_or(false),
    };
    let cordon = match driver::next(record, POLICY, Observed::Withdrawn) {
        Command::PutBack { cordon } => cordon,
        _ => None,
    };
    put_node(ctx, nm, cordon, false).await?;
    let note = notes::withdrawn(cordon == Some(false));
    announce(ctx, nm, true, Severity::Normal, note).await;
    Ok(Action::await_change())
}

/// A step failed: the node's cordon changes as the driver says (it stays, for the
/// controller), the status says why.
async fn fail(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: NodeMaintenanceStatus,
    at: Phase,
    cordon: Option<bool>,
    message: String,
) -> Result<Action, ReconcileError> {
    if cordon.is_some() {
        put_node(ctx, nm, cordon, false).await?;
    }
    let status = NodeMaintenanceStatus {
        phase: Some(StatusPhase::Failed),
        last_error: Some(message.clone()),
        finished_at: Some(status::now()),
        ..status
    };
    status::write(ctx, nm, status, None).await?;
    announce(
        ctx,
        nm,
        true,
        Severity::Warning,
        notes::failed(at, &message, cordon),
    )
    .await;
    Ok(Action::await_change())
}

/// One patch: the cordon change, whether the node carries this object's name, and the
/// fence against other disruptors that goes with it (up while held, see
/// [`crate::fence`]); none when the node watch shows all as they should be already (a
/// phase that changes none).
async fn put_node(
    ctx: &Ctx,
    nm: &NodeMaintenance,
    cordon: Option<bool>,
    held: bool,
) -> Result<(), ReconcileError> {
    let name = nm.name_any();
    let watched = ctx.nodes.store().get(&ObjectRef::new(&nm.spec.node_name));
    if cordon.is_none()
        && let Some(node) = &watched
        && holder_of(node) == held.then_some(name.as_str())
        && fence::settled(held, node.annotations())
    {
        return Ok(());
    }
    // The fence's record comes from the node as it is: from the watch, or read when the
    // watch does not have it yet.
    let annotations = match watched {
        Some(node) => node.annotations().clone(),
        None => nodes::get(&ctx.kordon.conn, &node_of(nm))
            .await?
            .annotations()
            .clone(),
    };
    let mut changes: Annotations = [(HELD_BY.to_string(), held.then_some(name))].into();
    changes.extend(fence::follow(held, &annotations));
    nodes::patch(
        &ctx.kordon.conn,
        &node_of(nm),
        cordon,
        &changes,
        DryRun::None,
    )
    .await?;
    Ok(())
}

/// An Event on the node, as a roll's or `maintain`'s (the same story whoever drives;
/// the node as the controller's watch has it: an Event needs only its name and uid),
/// and `on_object` on the object too: an end other than done, which someone looking at
/// the object needs. Its phases are in its status, with their times.
async fn announce(
    ctx: &Ctx,
    nm: &NodeMaintenance,
    on_object: bool,
    severity: Severity,
    note: notes::Note,
) {
    let text = format!("NodeMaintenance {}: {}", nm.name_any(), note.note);
    if on_object {
        ctx.events
            .publish(nm, severity, note.reason, text.clone())
            .await;
    }
    let node = ctx.nodes.store().get(&ObjectRef::new(&nm.spec.node_name));
    if let Some(node) = node {
        ctx.events
            .publish(node.as_ref(), severity, note.reason, text)
            .await;
    }
}
