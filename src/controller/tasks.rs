//! The driver's tasks as the controller carries them out, one look per reconcile: the
//! drain and the health gates run as tasks of this process ([`super::runs`]); the step
//! and "Ready again" are conditions looked at again.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Ctx;
use super::job::JobState;
use super::options::drain_options;
use super::reconcile::{LOOK_AGAIN, ReconcileError, node_of, watched_node};
use super::runs::Ended;
use super::status::{self, Hold};
use crate::api::node_maintenance::{HostStep, NodeMaintenanceStatus};
use crate::api::{NodeMaintenance, duration};
use crate::cluster::ClusterError;
use crate::cluster::attachments::{self, DetachError};
use crate::cluster::events::{Events, Severity};
use crate::cluster::nodes;
use crate::policy::Detach;
use crate::workflow::driver::Task;
use crate::workflow::{detach, gate, ready};

/// What a task of the driver came to in this reconcile.
pub(super) enum Look {
    /// Finished well.
    Did,
    /// Still under way: the status says what it waits for, and the object is looked at
    /// again after the action.
    Wait(Option<Hold>, Action),
    Failed(String),
    Abandoned(String),
}

/// One task of the driver, looked at once: started when it is a task that runs in the
/// background (the drain, the gates), checked when it is a condition (the step, Ready).
pub(super) async fn run(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &mut NodeMaintenanceStatus,
    task: Task,
) -> Result<Look, ReconcileError> {
    let name = nm.name_any();
    let node = node_of(nm);
    Ok(match task {
        Task::Drain => draining(nm, ctx, status).await?,
        Task::Detach => detaching(nm, ctx, status).await,
        Task::Work => maintaining(nm, ctx, status).await?,
        Task::Ready => {
            let before = ready::Snapshot {
                heartbeat: status.heartbeat_before.as_ref().map(|t| t.0),
                boot_id: status.boot_id_before.clone(),
            };
            let criteria = ready::ReadyCriteria {
                expect_reboot: nm.spec.step.reboot.is_some(),
            };
            let watched = node.clone();
            // The DaemonSet gate that follows in the same phase runs: Ready passed.
            let back = match ctx.runs.running(&name) {
                Some(Task::DaemonSets) => Ok(true),
                _ => {
                    awaited(nm, ctx, Task::Ready, |kordon, _| async move {
                        ready::wait(&kordon.conn, &watched, &before, criteria, NO_LIMIT).await
                    })
                    .await
                }
            };
            gated_look(back, || {
                waiting(
                    "AwaitingReady",
                    format!(
                        "waiting for node {node} to be Ready with a fresh heartbeat or a renewed Lease"
                    ),
                )
            })
        }
        Task::DaemonSets => {
            let gated = awaited(nm, ctx, Task::DaemonSets, |kordon, timeout| async move {
                gate::daemon_pods_ready(&kordon.view, &node, timeout).await
            })
            .await;
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
            let gated = awaited(nm, ctx, Task::Workloads, |kordon, timeout| async move {
                gate::workloads_recovered(&kordon.view, &workloads, timeout).await
            })
            .await;
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
    let Some((progress, ended)) = ctx.runs.state(&name, Task::Drain) else {
        let options = match drain_options(&nm.spec.drain) {
            Ok(o) => o,
            Err(message) => return Ok(Look::Failed(message)),
        };
        let earlier = status.drain.as_ref();
        ctx.runs
            .start(&name, ctx.kordon.clone(), node_of(nm), options, earlier);
        return Ok(Look::Wait(None, Action::requeue(LOOK_AGAIN)));
    };
    let Some(ended) = ended else {
        if status.drain.is_none() || ctx.runs.report_due(&name) {
            status.drain = Some(progress);
        }
        return Ok(Look::Wait(None, Action::requeue(LOOK_AGAIN)));
    };
    status.drain = Some(progress);
    // The ended drain stays known until the next task's run replaces it: should this
    // pass's status write be refused (a conflict), the pass again from "Draining" goes
    // on from here instead of draining again, which would evict the pod of the Job the
    // pass has just created.
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

/// The wait for the node's volumes, by a task of this process. Passed once (the
/// status records when), it is never waited for again, so a step that attaches volumes
/// again (a reboot's DaemonSet pods) does not hold itself up.
async fn detaching(nm: &NodeMaintenance, ctx: &Ctx, status: &mut NodeMaintenanceStatus) -> Look {
    if status.volumes_detached_at.is_some() {
        return Look::Did;
    }
    let policy = match volume_detach(nm) {
        Ok(p) => p,
        Err(message) => return Look::Failed(message),
    };
    let node = node_of(nm);
    // None attached, as the watch of them shows, and no wait under way: nothing to
    // wait for (a wait started already goes on to its end).
    let free = ctx
        .attachments
        .as_ref()
        .is_some_and(|watched| !watched.state().iter().any(|a| attachments::names(a, &node)));
    if policy.timeout.is_zero() || (free && ctx.runs.state(&nm.name_any(), Task::Detach).is_none())
    {
        status.volumes_detached_at = Some(status::now());
        return Look::Did;
    }
    let waiting_for = format!(
        "drained; waiting until no VolumeAttachment names node {node} (at most {})",
        humantime::format_duration(policy.timeout)
    );
    let instance = format!("kordon-controller-{}", ctx.kordon.run);
    let waited = awaited(nm, ctx, Task::Detach, |kordon, _| async move {
        let outcome = detach::wait(&kordon.conn, &node, policy).await?;
        // Going on with volumes attached is told on the node, where people look.
        if let detach::Outcome::Proceeded(what) = &outcome
            && let Ok(found) = nodes::get(&kordon.conn, &node).await
        {
            let note = detach::proceeded(what);
            Events::new(&kordon.conn, &instance)
                .publish(&found, Severity::Warning, note.reason, note.note)
                .await;
        }
        Ok::<_, DetachError>(())
    })
    .await;
    let look = gated_look(waited, || waiting("AwaitingVolumeDetach", waiting_for));
    if matches!(look, Look::Did) {
        status.volumes_detached_at = Some(status::now());
    }
    look
}

/// `spec.volumeDetach` as the wait takes it.
pub(super) fn volume_detach(nm: &NodeMaintenance) -> Result<Detach, String> {
    let spec = &nm.spec.volume_detach;
    let timeout =
        duration::parse(&spec.timeout).map_err(|e| format!("spec.volumeDetach.timeout: {e}"))?;
    Ok(Detach {
        timeout,
        on_timeout: spec.on_timeout,
    })
}

/// The maintenance step: `hold` waits for the object's deletion, `job` for its Job,
/// `reboot` for a new bootID, `command` for the node agent's record of it, `external`
/// for its condition.
async fn maintaining(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    status: &mut NodeMaintenanceStatus,
) -> Result<Look, ReconcileError> {
    let step = &nm.spec.step;
    let hold = |reason, message: &str, action| {
        let message = message.to_string();
        Ok(Look::Wait(Some(Hold { reason, message }), action))
    };
    if let Some(job) = &step.job {
        return match super::job::ensure(&ctx.kordon.conn, &ctx.jobs, nm, job).await {
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
    if let Some(command) = &step.command {
        let node = watched_node(ctx, nm).await?;
        let record = HostStep::on(&node, &nm.uid().unwrap_or_default());
        status.host_step.clone_from(&record);
        return match record.as_ref().map(HostStep::outcome) {
            Some(Some(Ok(()))) => Ok(Look::Did),
            Some(Some(Err(why))) => Ok(Look::Failed(format!(
                "the command on node {} {why}",
                node_of(nm)
            ))),
            Some(None) => {
                let message = format!(
                    "kordon's agent on the node runs `{}` (at most {})",
                    command.command.join(" "),
                    command.timeout
                );
                hold("RunningCommand", &message, Action::requeue(LOOK_AGAIN))
            }
            None => {
                let message = "waiting for kordon's agent on the node to run the command \
                    (is the agent DaemonSet installed, and does it run there?)";
                hold("AwaitingAgent", message, Action::requeue(LOOK_AGAIN))
            }
        };
    }
    if step.reboot.is_some() {
        let node = watched_node(ctx, nm).await?;
        // The agent, where it runs, says what it did; and when its reboot command failed,
        // so there is no need to wait for the timeout.
        let record = HostStep::on(&node, &nm.uid().unwrap_or_default());
        if record.is_some() {
            status.host_step.clone_from(&record);
        }
        let boot = ready::Snapshot::of(&node).boot_id;
        if boot.is_some() && boot != status.boot_id_before {
            return Ok(Look::Did);
        }
        if let Some(Some(Err(why))) = record.as_ref().map(HostStep::outcome) {
            return Ok(Look::Failed(format!(
                "the reboot command on node {} {why}",
                node_of(nm)
            )));
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

/// "Ready again" (with no time limit: a node may be down for as long as its repair
/// takes; a year bounds the timer).
const NO_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a pass gives a task it just started to end at once.
const AT_ONCE: Duration = Duration::from_secs(1);

/// The phase's condition ("Ready again", a health gate), waited for by a task (started
/// here when none runs), whose end wakes the object's reconcile: `Ok(true)` passed,
/// `Ok(false)` still waiting, `Err` why it failed.
async fn awaited<F, E>(
    nm: &NodeMaintenance,
    ctx: &Ctx,
    task: Task,
    wait: impl FnOnce(Arc<crate::context::Context>, Duration) -> F,
) -> Result<bool, String>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let name = nm.name_any();
    let timeout = gate_timeout(nm)?;
    if ctx.runs.state(&name, task).is_none() {
        let ends = ctx
            .runs
            .wait(&name, task, wait(ctx.kordon.clone(), timeout));
        // A condition that holds already (no DaemonSet pods, the workloads back) passes
        // in this pass: no wait written, no second pass.
        let _ = tokio::time::timeout(AT_ONCE, ends).await;
    }
    match ctx.runs.state(&name, task) {
        None | Some((_, None)) => Ok(false),
        Some((_, Some(ended))) => {
            ctx.runs.stop(&name);
            match ended {
                Ended::Done => Ok(true),
                Ended::Failed(message) | Ended::Abandoned(message) => Err(message),
            }
        }
    }
}

pub(super) fn gate_timeout(nm: &NodeMaintenance) -> Result<Duration, String> {
    duration::parse(&nm.spec.gate_timeout).map_err(|e| format!("spec.gateTimeout: {e}"))
}

pub(super) fn reboot_timeout(nm: &NodeMaintenance) -> Result<Option<Duration>, String> {
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
