//! One node of a roll, phase by phase, each phase recorded on the node before the next
//! begins. A node resumed from a mark continues from its phase; a failure is recorded
//! on the node (which stays cordoned) and ends this node's part of the roll.
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::mark::{Mark, Phase};
use super::{Job, RollProgress, hold, name_of};
use crate::cluster::events::Severity;
use crate::cluster::nodes::{self, DryRun};
use crate::cluster::{ClusterError, Connection};
use crate::drain::{self, DrainError};
use crate::names::NodeName;
use crate::node_state::LeftAs;
use crate::snapshot::Reach;
use crate::workflow::gate;
use crate::workflow::machine::{self, Observed};
use crate::workflow::{StepError, ready};

/// How a node's part of the roll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// All four steps and the health gate passed.
    Done,
    /// A previous attempt of this run had finished it.
    AlreadyDone,
    /// A phase failed; the node stays cordoned with the error in its annotations.
    Failed,
    /// Its drain's deadline passed with pods no ladder rule allows: the drain was
    /// abandoned and the node put back as it was (uncordoned, mark removed).
    Abandoned,
    /// Ctrl-C or a lost lock stopped it at a safe point; a re-run continues it.
    Stopped,
    /// The roll ended (halted, interrupted, window) before it started.
    NotStarted,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    pub node: NodeName,
    pub outcome: Outcome,
    /// The furthest phase reached, if the node was touched.
    pub phase: Option<Phase>,
    pub evicted: usize,
    pub duration_seconds: f64,
    /// What held it up or made it fail.
    pub blockers: Vec<String>,
    /// The node at the end.
    pub state: LeftAs,
}

impl NodeResult {
    pub fn untouched(node: NodeName, outcome: Outcome, mark: Option<&Mark>, state: LeftAs) -> Self {
        Self {
            node,
            outcome,
            phase: mark.map(|m| m.phase),
            evicted: mark.map_or(0, |m| m.evicted),
            duration_seconds: 0.0,
            blockers: mark.and_then(|m| m.error.clone()).into_iter().collect(),
            state,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PhaseError {
    #[error(transparent)]
    Drain(#[from] DrainError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Gate(#[from] gate::GateError),
}

enum Flow {
    Finished,
    Stopped,
}

/// Runs the node from its mark (or from the start) to done, a failure or a stop.
pub(super) async fn maintain(
    job: &Job<'_>,
    node: &Node,
    previous: Option<Mark>,
    fresh: Mark,
) -> NodeResult {
    let started = Instant::now();
    let name = name_of(node);
    let resumed = previous.is_some();
    let mut mark = previous.unwrap_or(fresh);
    // A node an earlier run left behind is continued, and from now on is this run's.
    mark.run = job.run.clone();
    let flow = {
        let work = advance(job, node, &name, &mut mark, resumed);
        tokio::pin!(work);
        tokio::select! {
            flow = &mut work => flow,
            // The hold watches until dropped; should its watch end, the work goes on.
            () = hold::keep_cordoned(job, &name) => work.await,
        }
    };
    let (outcome, blockers) = match flow {
        Ok(Flow::Finished) => (Outcome::Done, Vec::new()),
        Ok(Flow::Stopped) => (Outcome::Stopped, Vec::new()),
        Err(PhaseError::Drain(DrainError::Abandoned {
            node: _,
            deadline,
            remaining,
            uncordoned: _,
        })) => {
            // Back as before the roll touched it: its cordon (if the roll's) and its mark
            // go in one request.
            let back = machine::next(
                Some(mark.phase),
                mark.was_unschedulable,
                Observed::Abandoned,
            );
            let lift = back.cordon;
            let unmark = mark.annotations().into_keys().map(|k| (k, None)).collect();
            let restored = nodes::patch(job.conn, &name, lift, &unmark, DryRun::None).await;
            if let Err(e) = &restored {
                tracing::warn!("cannot put abandoned node {name} back: {e}");
            }
            let message = DrainError::Abandoned {
                node: name.clone(),
                deadline,
                remaining,
                uncordoned: restored.is_ok() && lift.is_some(),
            }
            .to_string();
            (job.on_progress)(RollProgress::Failed {
                node: name.clone(),
                phase: mark.phase,
                error: message.clone(),
            });
            job.events
                .publish(
                    node,
                    Severity::Warning,
                    "MaintenanceAbandoned",
                    message.clone(),
                )
                .await;
            (Outcome::Abandoned, vec![message])
        }
        Err(e) => {
            let message = e.to_string();
            (job.on_progress)(RollProgress::Failed {
                node: name.clone(),
                phase: mark.phase,
                error: message.clone(),
            });
            mark.error = Some(message.clone());
            if let Err(e) = record(job.conn, &name, &mark, None).await {
                tracing::warn!("cannot record the failure on node {name}: {e}");
            }
            job.events
                .publish(
                    node,
                    Severity::Warning,
                    "MaintenanceFailed",
                    format!("{} failed: {message}; the node stays cordoned", mark.phase),
                )
                .await;
            (Outcome::Failed, vec![message])
        }
    };
    NodeResult {
        node: name.clone(),
        outcome,
        phase: Some(mark.phase),
        evicted: mark.evicted,
        duration_seconds: started.elapsed().as_secs_f64(),
        blockers,
        state: crate::workflow::current_state(job.conn, &name).await,
    }
}

async fn advance(
    job: &Job<'_>,
    node: &Node,
    name: &NodeName,
    mark: &mut Mark,
    resumed: bool,
) -> Result<Flow, PhaseError> {
    let conn = job.conn;
    let opts = job.options;
    // The cordon and the record of it are one request. A resumed node retries its
    // phase, and until uncordoned it must stay cordoned.
    let (current, observed) = if resumed {
        (Some(mark.phase), Observed::Resume)
    } else {
        (None, Observed::Start)
    };
    let entry = machine::next(current, mark.was_unschedulable, observed);
    mark.error = None;
    record(conn, name, mark, entry.cordon).await?;
    if !resumed {
        entered(job, node, name, mark).await;
    }
    loop {
        match mark.phase {
            Phase::Draining => {
                // The fleet plan has forecast placement already.
                let plan = drain::plan(job.ctx, name, &opts.drain, Reach::Targets).await?;
                let on_event = |e| {
                    (job.on_progress)(RollProgress::Drain {
                        node: name.clone(),
                        event: e,
                    })
                };
                let report = match drain::execute(job.ctx, plan, &opts.drain, &on_event).await {
                    Ok(report) => report,
                    Err(DrainError::Interrupted { .. } | DrainError::InterruptedBefore { .. }) => {
                        return Ok(Flow::Stopped);
                    }
                    Err(e) => return Err(e.into()),
                };
                mark.evicted += report.evicted.len();
                let before = ready::Snapshot::of(&nodes::get(conn, name).await?);
                mark.boot_id_before = before.boot_id;
                mark.heartbeat_before = before.heartbeat;
                complete(conn, name, mark).await?;
            }
            Phase::Maintaining => {
                let prompt = |p| {
                    if let crate::workflow::Progress::Prompt(text) = p {
                        (job.on_progress)(RollProgress::Prompt {
                            node: name.clone(),
                            text,
                        });
                    }
                };
                crate::workflow::run_work(name, &opts.work, true, &prompt).await?;
                complete(conn, name, mark).await?;
            }
            Phase::AwaitingReady => {
                let before = ready::Snapshot {
                    heartbeat: mark.heartbeat_before,
                    boot_id: mark.boot_id_before.clone(),
                };
                ready::wait(conn, name, &before, opts.ready, opts.ready_timeout).await?;
                if opts.gates.daemon_sets {
                    gate::daemon_pods_ready(&job.ctx.view, name, opts.gates.timeout).await?;
                }
                complete(conn, name, mark).await?;
            }
            Phase::Verifying => {
                if opts.gates.workloads {
                    gate::workloads_recovered(&job.ctx.view, &mark.workloads, opts.gates.timeout)
                        .await?;
                }
                mark.boot_id_before = None;
                mark.heartbeat_before = None;
                complete(conn, name, mark).await?;
                entered(job, node, name, mark).await;
                return Ok(Flow::Finished);
            }
            Phase::Done => return Ok(Flow::Finished),
        }
        entered(job, node, name, mark).await;
        if job.stop.borrow().is_some() {
            return Ok(Flow::Stopped);
        }
    }
}

/// The phase's work is complete: records the next phase with the cordon change the
/// machine makes with it.
async fn complete(conn: &Connection, name: &NodeName, mark: &mut Mark) -> Result<(), ClusterError> {
    let t = machine::next(
        Some(mark.phase),
        mark.was_unschedulable,
        Observed::Completed,
    );
    mark.enter(t.phase.unwrap_or(Phase::Done));
    record(conn, name, mark, t.cordon).await
}

/// Writes the mark, with the cordon change that goes with it.
async fn record(
    conn: &Connection,
    name: &NodeName,
    mark: &Mark,
    unschedulable: Option<bool>,
) -> Result<(), ClusterError> {
    nodes::patch(conn, name, unschedulable, &mark.annotations(), DryRun::None)
        .await
        .map(|_| ())
}

/// Tells the terminal and the cluster (an Event on the node) that a phase began.
async fn entered(job: &Job<'_>, node: &Node, name: &NodeName, mark: &Mark) {
    (job.on_progress)(RollProgress::Phase {
        node: name.clone(),
        phase: mark.phase,
    });
    let (reason, note) = match mark.phase {
        Phase::Draining if mark.was_unschedulable => (
            "Draining",
            "already cordoned by someone else; evicting its pods".to_string(),
        ),
        Phase::Draining => ("Draining", "cordoned; evicting its pods".to_string()),
        Phase::Maintaining => (
            "Maintaining",
            format!(
                "drained ({} pods evicted); maintenance running",
                mark.evicted
            ),
        ),
        Phase::AwaitingReady => (
            "AwaitingReady",
            "maintenance done; waiting for the node and its DaemonSet pods to be Ready".into(),
        ),
        Phase::Verifying if mark.was_unschedulable => (
            "Verifying",
            "Ready; left cordoned as it was before; waiting for its workloads to recover".into(),
        ),
        Phase::Verifying => (
            "Uncordoned",
            "Ready and uncordoned; waiting for its workloads to recover".into(),
        ),
        Phase::Done => (
            "MaintenanceDone",
            "maintenance done and workloads recovered".into(),
        ),
    };
    job.events
        .publish(
            node,
            Severity::Normal,
            reason,
            format!("kordon run {}: {note}", mark.run),
        )
        .await;
}
