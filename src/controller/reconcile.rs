//! One NodeMaintenance, one step at a time: start when the node is free and the plan is
//! safe, drain, run the maintenance step, wait for Ready, bring the node back. Every
//! cordon change comes from the state machine and goes to the node before the status
//! records it, so a restart (or a new leader) resumes from the status and the node's
//! kordon mark says whose cordon it is.
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, ResourceExt};

use super::Ctx;
use super::job::JobState;
use super::options::drain_options;
use super::runs::Ended;
use super::status::{self, Hold};
use crate::api::node_maintenance::{HELD_BY, NodeMaintenanceStatus, StatusPhase, holder_of};
use crate::api::{NodeMaintenance, duration};
use crate::cluster::ClusterError;
use crate::cluster::events::Severity;
use crate::cluster::nodes::{self, Annotations, DryRun};
use crate::drain::{self, DrainError};
use crate::names::NodeName;
use crate::snapshot::Reach;
use crate::workflow::driver::{self, Command, Observed, Phase, Policy, Record, Task};
use crate::workflow::gate;
use crate::workflow::notes;
use crate::workflow::ready;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Keeps a NodeMaintenance until the node is put back.
pub const FINALIZER: &str = "kordon.dev/node-maintenance";

/// How often a running phase looks again (drain progress, reboot, Ready).
const LOOK_AGAIN: Duration = Duration::from_secs(5);

/// How long a blocked start waits before it looks again.
const RETRY_START: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("write status: {0}")]
    Status(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<ReconcileError>>),
    /// The controller's watch ended: it is shutting down.
    #[error("the controller is stopping")]
    Stopping,
}

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

/// When a failed reconcile runs again. A conflict means another writer was first (a
/// status written with a stale resourceVersion, a finalizer patch whose test failed):
/// the object is read again and the reconcile retried at once, with the cause at debug.
/// Anything else is logged with its cause and retried after a pause.
pub fn retry(kind: &str, name: &str, error: &ReconcileError) -> Action {
    if error.is_conflict() {
        tracing::debug!("{kind} {name}: {error}; retrying on the fresh object");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!("{kind} {name}: {error}");
    Action::requeue(Duration::from_secs(5))
}

impl ReconcileError {
    fn is_conflict(&self) -> bool {
        let api = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        // The finalizer is added by a JSON patch whose test of the old value fails
        // (422) when the object changed in between.
        let patched =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 422);
        match self {
            Self::Status(e) => api(e),
            Self::Cluster(_) | Self::Stopping => false,
            Self::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_conflict()
                }
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    patched(e)
                }
                _ => false,
            },
        }
    }
}

async fn apply(nm: &NodeMaintenance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let status = nm.status.clone().unwrap_or_default();
    tracing::debug!("NodeMaintenance {}: {:?}", nm.name_any(), status.phase);
    match status.phase.unwrap_or(StatusPhase::Pending) {
        StatusPhase::Pending => start(nm, ctx).await,
        phase if phase.finished() => Ok(Action::await_change()),
        phase => {
            // A drain started by an earlier process (or leader) goes on from what is
            // left, on a node that must still be cordoned.
            let resumed = phase == StatusPhase::Draining
                && ctx.runs.state(&nm.name_any(), Phase::Draining).is_none();
            let first = if resumed {
                Observed::Resume
            } else {
                Observed::Recorded
            };
            drive(nm.clone(), ctx, status, first).await
        }
    }
}

fn node_of(nm: &NodeMaintenance) -> NodeName {
    NodeName::from(nm.spec.node_name.as_str())
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
            status::write(&ctx.kordon.conn, nm, pending, Some(&hold)).await?;
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

/// What a maintenance that may start records.
struct Start {
    /// Someone else had cordoned the node.
    was_unschedulable: bool,
    /// What the drain touches, for the last gate.
    workloads: Vec<crate::workload::WorkloadId>,
}

/// The start when the maintenance may start, or what holds it (with, for a refused
/// drain, what would let each pod go: `status.refused`).
async fn may_start(
    nm: &NodeMaintenance,
    ctx: &Ctx,
) -> Result<Result<Start, (Hold, Vec<String>)>, ReconcileError> {
    let hold = |reason, message: String| Ok(Err((Hold { reason, message }, Vec::new())));
    // Every duration of the spec is read here, once, before anything changes.
    let options = match drain_options(&nm.spec.drain)
        .and_then(|o| gate_timeout(nm).map(|_| o))
        .and_then(|o| reboot_timeout(nm).map(|_| o))
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
    let found = match nodes::get(&ctx.kordon.conn, &node).await {
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

/// What a task of the driver came to in this reconcile.
enum Look {
    /// Finished well.
    Did,
    /// Still under way: the status says what it waits for, and the object is looked at
    /// again after the action.
    Wait(Option<Hold>, Action),
    Failed(String),
    Abandoned(String),
}

/// Carries out the driver's commands until one has to wait: each written to the node
/// first (cordon and kordon's mark), then to the status, so a restart resumes from
/// the status.
async fn drive(
    mut nm: NodeMaintenance,
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
                nm = status::write(&ctx.kordon.conn, &nm, status.clone(), None).await?;
                if entered {
                    let evicted = status.drain.as_ref().map_or(0, |d| d.evicted as usize);
                    let note = notes::entered(phase, record.was_unschedulable, evicted);
                    announce(ctx, &nm, Severity::Normal, note).await;
                }
                observed = Observed::Recorded;
            }
            Command::Run(task) => {
                observed = match run(&nm, ctx, &mut status, task).await? {
                    Look::Did => Observed::Did(task),
                    Look::Wait(hold, action) => {
                        status::write(&ctx.kordon.conn, &nm, status, hold.as_ref()).await?;
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
                status::write(&ctx.kordon.conn, &nm, status, None).await?;
                announce(ctx, &nm, Severity::Warning, notes::abandoned(&failure)).await;
                return Ok(Action::await_change());
            }
            Command::Finish => return Ok(Action::await_change()),
        }
    }
}

/// One task of the driver, looked at once: started when it is a task that runs in the
/// background (the drain, the gates), checked when it is a condition (the step, Ready).
async fn run(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &mut NodeMaintenanceStatus,
    task: Task,
) -> Result<Look, ReconcileError> {
    let name = nm.name_any();
    let node = node_of(nm);
    Ok(match task {
        Task::Drain => draining(nm, ctx, status).await?,
        Task::Work => maintaining(nm, ctx, status).await?,
        Task::Ready => {
            if is_back(nm, ctx, status).await? {
                Look::Did
            } else {
                waiting(
                    "AwaitingReady",
                    format!(
                        "waiting for node {node} to be Ready with a fresh heartbeat or a renewed Lease"
                    ),
                )
            }
        }
        Task::DaemonSets => {
            let gated = gate(
                nm,
                ctx,
                Phase::AwaitingReady,
                |kordon, timeout| async move {
                    gate::daemon_pods_ready(&kordon.view, &node, timeout).await
                },
            );
            gated_look(gated, || {
                waiting(
                    "AwaitingDaemonSets",
                    "Ready; waiting for its DaemonSet pods to be Ready".into(),
                )
            })
        }
        Task::Workloads => {
            let workloads = status.workloads.clone();
            let count = workloads.len();
            let gated = gate(nm, ctx, Phase::Verifying, |kordon, timeout| async move {
                gate::workloads_recovered(&kordon.view, &workloads, timeout).await
            });
            tracing::trace!("NodeMaintenance {name}: workloads gate");
            gated_look(gated, || {
                waiting(
                    "AwaitingWorkloads",
                    format!(
                        "back in service; waiting for {count} workload(s) it held to be back at full Ready"
                    ),
                )
            })
        }
    })
}

fn waiting(reason: &'static str, message: String) -> Look {
    Look::Wait(Some(Hold { reason, message }), Action::requeue(LOOK_AGAIN))
}

fn gated_look(gated: Result<bool, String>, wait: impl FnOnce() -> Look) -> Look {
    match gated {
        Ok(true) => Look::Did,
        Ok(false) => wait(),
        Err(message) => Look::Failed(message),
    }
}

/// The drain, run by a task of this process: started (again, after a restart, from
/// what is left), followed, and once it ended, the node's boot and heartbeat recorded
/// for "Ready again".
async fn draining(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &mut NodeMaintenanceStatus,
) -> Result<Look, ReconcileError> {
    let name = nm.name_any();
    let Some((progress, ended)) = ctx.runs.state(&name, Phase::Draining) else {
        let options = match drain_options(&nm.spec.drain) {
            Ok(o) => o,
            Err(message) => return Ok(Look::Failed(message)),
        };
        let earlier = status.drain.as_ref();
        ctx.runs
            .start(&name, ctx.kordon.clone(), node_of(nm), options, earlier);
        return Ok(Look::Wait(None, Action::requeue(LOOK_AGAIN)));
    };
    status.drain = Some(progress);
    let Some(ended) = ended else {
        return Ok(Look::Wait(None, Action::requeue(LOOK_AGAIN)));
    };
    ctx.runs.stop(&name);
    Ok(match ended {
        Ended::Done => {
            let node = nodes::get(&ctx.kordon.conn, &node_of(nm)).await?;
            let before = ready::Snapshot::of(&node);
            status.boot_id_before = before.boot_id;
            status.heartbeat_before = before.heartbeat.map(Time);
            Look::Did
        }
        Ended::Abandoned(message) => Look::Abandoned(message),
        Ended::Failed(message) => Look::Failed(message),
    })
}

/// The maintenance step: `hold` waits for the object's deletion, `job` for its Job,
/// `reboot` for a new bootID, `external` for its condition.
async fn maintaining(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &NodeMaintenanceStatus,
) -> Result<Look, ReconcileError> {
    let step = &nm.spec.step;
    let hold = |reason, message: &str, action| {
        let message = message.to_string();
        Ok(Look::Wait(Some(Hold { reason, message }), action))
    };
    if let Some(job) = &step.job {
        return match super::job::ensure(&ctx.kordon.conn, nm, job).await {
            Ok(JobState::Succeeded) => Ok(Look::Did),
            Ok(JobState::Failed(message)) => Ok(Look::Failed(message)),
            Ok(JobState::Running(message)) => {
                hold("AwaitingJob", &message, Action::requeue(LOOK_AGAIN))
            }
            // The API refuses the Job as written: retrying cannot help; the spec must
            // change.
            Err(
                e @ ClusterError::Api {
                    code: 400 | 422, ..
                },
            ) => Ok(Look::Failed(e.to_string())),
            Err(e) => Err(e.into()),
        };
    }
    if let Some(external) = &step.external {
        if status::is_true(status, &external.condition_type) {
            return Ok(Look::Did);
        }
        let message = format!(
            "waiting for condition {} to be True",
            external.condition_type
        );
        return hold("AwaitingExternal", &message, Action::await_change());
    }
    if step.reboot.is_some() {
        let node = nodes::get(&ctx.kordon.conn, &node_of(nm)).await?;
        let boot = ready::Snapshot::of(&node).boot_id;
        if boot.is_some() && boot != status.boot_id_before {
            return Ok(Look::Did);
        }
        // Checked before the maintenance started (see `may_start`).
        if let Ok(Some(limit)) = reboot_timeout(nm)
            && elapsed(status) > limit
        {
            return Ok(Look::Failed(format!(
                "node {} did not reboot within {}",
                node_of(nm),
                humantime::format_duration(limit)
            )));
        }
        let message = "waiting for the node to reboot (a new bootID)";
        return hold("AwaitingReboot", message, Action::requeue(LOOK_AGAIN));
    }
    // hold: the node stays out until the object is deleted.
    let message = "drained and held until this NodeMaintenance is deleted";
    hold("Held", message, Action::await_change())
}

/// The node is back by the rule `maintain` and `roll` use ([`ready::is_back`]: Ready,
/// its kubelet alive since the step by a newer heartbeat or a Lease renewed since this
/// phase began, rebooted if the step was a reboot).
async fn is_back(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &NodeMaintenanceStatus,
) -> Result<bool, ReconcileError> {
    let node = node_of(nm);
    let found = nodes::get(&ctx.kordon.conn, &node).await?;
    let before = ready::Snapshot {
        heartbeat: status.heartbeat_before.as_ref().map(|t| t.0),
        boot_id: status.boot_id_before.clone(),
    };
    let criteria = ready::ReadyCriteria {
        expect_reboot: nm.spec.step.reboot.is_some(),
    };
    // A Lease read that fails leaves the heartbeat to show the kubelet alive.
    let renewed = nodes::lease_renewed(&ctx.kordon.conn, &node)
        .await
        .inspect_err(|e| tracing::debug!("{e}"))
        .ok()
        .flatten();
    let alive = match (renewed, status.phase_since.as_ref()) {
        (Some(renewed), Some(since)) if renewed > since.0 => ready::Alive::ByLease,
        _ => ready::Alive::ByHeartbeat,
    };
    Ok(ready::is_back(&found, &before, criteria, alive))
}

/// The phase's health gate, waited for by a task (started here when none runs):
/// `Ok(true)` passed, `Ok(false)` still waiting, `Err` why it failed.
fn gate<F>(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    phase: Phase,
    wait: impl FnOnce(Arc<crate::context::Context>, Duration) -> F,
) -> Result<bool, String>
where
    F: Future<Output = Result<(), gate::GateError>> + Send + 'static,
{
    let name = nm.name_any();
    let timeout = gate_timeout(nm)?;
    match ctx.runs.state(&name, phase) {
        None => {
            ctx.runs
                .gate(&name, phase, wait(ctx.kordon.clone(), timeout));
            Ok(false)
        }
        Some((_, None)) => Ok(false),
        Some((_, Some(ended))) => {
            ctx.runs.stop(&name);
            match ended {
                Ended::Done => Ok(true),
                Ended::Failed(message) | Ended::Abandoned(message) => Err(message),
            }
        }
    }
}

fn gate_timeout(nm: &NodeMaintenance) -> Result<Duration, String> {
    duration::parse(&nm.spec.gate_timeout).map_err(|e| format!("spec.gateTimeout: {e}"))
}

fn reboot_timeout(nm: &NodeMaintenance) -> Result<Option<Duration>, String> {
    let timeout = nm
        .spec
        .step
        .reboot
        .as_ref()
        .and_then(|r| r.timeout.as_deref());
    timeout
        .map(|t| duration::parse(t).map_err(|e| format!("spec.step.reboot.timeout: {e}")))
        .transpose()
}

/// The object is deleted: no eviction goes out any more, and the node is put back
/// (uncordoned if this maintenance cordoned it).
async fn withdraw(nm: &NodeMaintenance, ctx: &Ctx) -> Result<Action, ReconcileError> {
    ctx.runs.stop(&nm.name_any());
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
    announce(ctx, nm, Severity::Normal, note).await;
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
    status::write(&ctx.kordon.conn, nm, status, None).await?;
    let out = at.out_of_service() && cordon != Some(false);
    announce(ctx, nm, Severity::Warning, notes::failed(at, &message, out)).await;
    Ok(Action::await_change())
}

/// One patch: the cordon change and whether the node carries this object's name.
async fn put_node(
    ctx: &Ctx,
    nm: &NodeMaintenance,
    cordon: Option<bool>,
    held: bool,
) -> Result<(), ReconcileError> {
    let mark: Annotations = [(HELD_BY.to_string(), held.then(|| nm.name_any()))].into();
    nodes::patch(&ctx.kordon.conn, &node_of(nm), cordon, &mark, DryRun::None).await?;
    Ok(())
}

fn elapsed(status: &NodeMaintenanceStatus) -> Duration {
    status
        .phase_since
        .as_ref()
        .and_then(|t| {
            let since = jiff::Timestamp::now().duration_since(t.0);
            Duration::try_from(since).ok()
        })
        .unwrap_or_default()
}

/// An Event on the object and on its node.
async fn announce(ctx: &Ctx, nm: &NodeMaintenance, severity: Severity, note: notes::Note) {
    let text = format!("NodeMaintenance {}: {}", nm.name_any(), note.note);
    ctx.events
        .publish(nm, severity, note.reason, text.clone())
        .await;
    if let Ok(node) = nodes::get(&ctx.kordon.conn, &node_of(nm)).await {
        ctx.events.publish(&node, severity, note.reason, text).await;
    }
}
