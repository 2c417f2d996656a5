//! One node of a roll, phase by phase, each phase recorded on the node before the next
//! begins. A node resumed from a mark continues from its phase; a failure is recorded
//! on the node (which stays cordoned) and ends this node's part of the roll.
use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::mark::{Mark, Phase};
use super::{Job, RollProgress, hold, name_of};
use crate::cluster::events::Severity;
use crate::cluster::nodes::{self, Annotations, DryRun};
use crate::cluster::{ClusterError, Connection};
use crate::drain::{self, DrainError};
use crate::fence;
use crate::names::NodeName;
use crate::node_state::LeftAs;
use crate::snapshot::Reach;
use crate::workflow::driver::{self, Ending, Executor, Failure, Observed, Policy, Record, Task};
use crate::workflow::{StepError, ready};
use crate::workflow::{detach, gate, notes};

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
    /// When this run started it; `None` when it did not.
    pub started_at: Option<jiff::Timestamp>,
    pub duration_seconds: f64,
    /// How long each phase this run entered took, in order: where a roll's time goes.
    pub phases: Vec<PhaseTime>,
    /// What held it up or made it fail.
    pub blockers: Vec<String>,
    /// The node at the end.
    pub state: LeftAs,
}

/// One phase of a node's maintenance and how long it took.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTime {
    pub phase: Phase,
    pub seconds: f64,
}

impl NodeResult {
    /// It failed, or its drain was abandoned.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed | Outcome::Abandoned)
    }

    pub fn untouched(node: NodeName, outcome: Outcome, mark: Option<&Mark>, state: LeftAs) -> Self {
        Self {
            node,
            outcome,
            phase: mark.map(|m| m.phase),
            evicted: mark.map_or(0, |m| m.evicted),
            started_at: None,
            duration_seconds: 0.0,
            phases: Vec::new(),
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
    #[error(transparent)]
    Detach(#[from] crate::cluster::attachments::DetachError),
}

/// Runs the node from its mark (or from the start) to done, a failure or a stop.
pub(super) async fn maintain(
    job: &Job<'_>,
    node: &Node,
    previous: Option<Mark>,
    fresh: Mark,
) -> NodeResult {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let name = name_of(node);
    let first = match previous {
        Some(_) => Observed::Resume,
        None => Observed::Start,
    };
    let mut mark = previous.unwrap_or(fresh);
    // A node an earlier run left behind is continued, and from now on is this run's.
    mark.run = job.run.clone();
    let record = Record {
        phase: (first == Observed::Resume).then_some(mark.phase),
        was_unschedulable: mark.was_unschedulable,
    };
    let policy = Policy::new(&job.options.gates, false);
    let mut roll_node = RollNode {
        job,
        node,
        name: name.clone(),
        mark,
        entered: Vec::new(),
        seen: node.metadata.annotations.clone().unwrap_or_default(),
    };
    let (_, ending) = {
        let work = driver::drive(&mut roll_node, record, policy, first);
        tokio::pin!(work);
        tokio::select! {
            ending = &mut work => ending,
            // The hold watches until dropped; should its watch end, the work goes on.
            () = hold::keep_cordoned(job, &name) => work.await,
        }
    };
    let (outcome, blockers) = match ending {
        Ending::Done => (Outcome::Done, Vec::new()),
        Ending::Stopped => (Outcome::Stopped, Vec::new()),
        Ending::Failed(e) => (Outcome::Failed, vec![e.to_string()]),
        Ending::PutBack(e) => (Outcome::Abandoned, vec![e.to_string()]),
    };
    let phases = roll_node.phase_times();
    let mark = roll_node.mark;
    NodeResult {
        node: name.clone(),
        outcome,
        phase: Some(mark.phase),
        evicted: mark.evicted,
        started_at: Some(started_at),
        duration_seconds: started.elapsed().as_secs_f64(),
        phases,
        blockers,
        state: crate::workflow::current_state(job.conn, &name).await,
    }
}

/// One node of a roll, carrying out the driver's commands; its record is the node's
/// mark.
struct RollNode<'j, 'a> {
    job: &'j Job<'a>,
    node: &'j Node,
    name: NodeName,
    mark: Mark,
    /// The phases entered, with when.
    entered: Vec<(Phase, Instant)>,
    /// The node's annotations as the last patch left them: what the fence records.
    seen: BTreeMap<String, String>,
}

impl RollNode<'_, '_> {
    /// Each phase entered and how long it lasted (the last, until now).
    fn phase_times(&self) -> Vec<PhaseTime> {
        let ends = self
            .entered
            .iter()
            .skip(1)
            .map(|(_, at)| *at)
            .chain(std::iter::once(Instant::now()));
        self.entered
            .iter()
            .zip(ends)
            .map(|((phase, from), to)| PhaseTime {
                phase: *phase,
                seconds: to.duration_since(*from).as_secs_f64(),
            })
            .collect()
    }
}

impl Executor for RollNode<'_, '_> {
    type Error = PhaseError;

    async fn record(
        &mut self,
        phase: Phase,
        cordon: Option<bool>,
        entered: bool,
    ) -> Result<(), PhaseError> {
        if entered {
            self.mark.enter(phase);
            self.entered.push((phase, Instant::now()));
        }
        self.mark.error = None;
        if phase == Phase::Done {
            self.mark.boot_id_before = None;
            self.mark.heartbeat_before = None;
        }
        self.seen = record(self.job.conn, &self.name, &self.mark, cordon, &self.seen).await?;
        if entered {
            announce(self.job, self.node, &self.name, &self.mark).await;
        }
        Ok(())
    }

    async fn run(&mut self, task: Task) -> Result<(), PhaseError> {
        let (job, name) = (self.job, &self.name);
        let opts = job.options;
        match task {
            Task::Drain => {
                // The fleet plan has forecast placement already.
                let plan = drain::plan(job.ctx, name, &opts.drain, Reach::Targets).await?;
                let on_event = |e| {
                    (job.on_progress)(RollProgress::Drain {
                        node: name.clone(),
                        event: e,
                    })
                };
                let report = drain::execute(job.ctx, plan, &opts.drain, &on_event).await?;
                self.mark.evicted += report.evicted.len();
                let before = ready::Snapshot::of(&nodes::get(job.conn, name).await?);
                self.mark.boot_id_before = before.boot_id;
                self.mark.heartbeat_before = before.heartbeat;
            }
            Task::Detach => {
                let outcome = detach::wait(job.conn, name, opts.detach).await?;
                if let detach::Outcome::Proceeded(what) = &outcome {
                    let note = detach::proceeded(what);
                    job.events
                        .publish(self.node, Severity::Warning, note.reason, note.note)
                        .await;
                }
                (job.on_progress)(RollProgress::Volumes {
                    node: name.clone(),
                    outcome,
                });
            }
            Task::Work => {
                let prompt = |p| {
                    if let crate::workflow::Progress::Prompt(text) = p {
                        (job.on_progress)(RollProgress::Prompt {
                            node: name.clone(),
                            text,
                        });
                    }
                };
                crate::workflow::run_work(name, &opts.work, true, &prompt).await?;
            }
            Task::Ready => {
                let before = ready::Snapshot {
                    heartbeat: self.mark.heartbeat_before,
                    boot_id: self.mark.boot_id_before.clone(),
                };
                ready::wait(job.conn, name, &before, opts.ready, opts.ready_timeout).await?;
            }
            Task::DaemonSets => {
                gate::daemon_pods_ready(&job.ctx.view, name, opts.gates.timeout).await?;
            }
            Task::Workloads => {
                gate::workloads_recovered(&job.ctx.view, &self.mark.workloads, opts.gates.timeout)
                    .await?;
            }
        }
        Ok(())
    }

    fn failure(&self, error: &PhaseError) -> Failure {
        match error {
            PhaseError::Drain(DrainError::Abandoned { .. }) => Failure::Abandoned,
            PhaseError::Drain(
                DrainError::Interrupted { .. } | DrainError::InterruptedBefore { .. },
            ) => Failure::Stopped,
            _ => Failure::Failed,
        }
    }

    fn stopping(&self) -> bool {
        self.job.stop.borrow().is_some()
    }

    /// The failure goes into the mark; the node stays cordoned.
    async fn fail(&mut self, phase: Phase, cordon: Option<bool>, error: PhaseError) -> PhaseError {
        let (job, name) = (self.job, &self.name);
        let message = error.to_string();
        (job.on_progress)(RollProgress::Failed {
            node: name.clone(),
            phase,
            error: message.clone(),
        });
        self.mark.error = Some(message.clone());
        match record(job.conn, name, &self.mark, cordon, &self.seen).await {
            Ok(seen) => self.seen = seen,
            Err(e) => tracing::warn!("cannot record the failure on node {name}: {e}"),
        }
        let note = notes::failed(phase, &message, cordon);
        job.events
            .publish(self.node, Severity::Warning, note.reason, note.note)
            .await;
        error
    }

    /// Back as before the roll touched it: its cordon (if the roll's) and its mark go in
    /// one request.
    async fn put_back(&mut self, cordon: Option<bool>, error: PhaseError) -> PhaseError {
        let (job, name) = (self.job, &self.name);
        let mut unmark: Annotations = self
            .mark
            .annotations()
            .into_keys()
            .map(|k| (k, None))
            .collect();
        unmark.extend(fence::lower(&self.seen));
        let restored = nodes::patch(job.conn, name, cordon, &unmark, DryRun::None).await;
        if let Err(e) = &restored {
            tracing::warn!("cannot put abandoned node {name} back: {e}");
        }
        let error = match error {
            PhaseError::Drain(e) => {
                PhaseError::Drain(e.uncordoned(restored.is_ok() && cordon.is_some()))
            }
            other => other,
        };
        let message = error.to_string();
        (job.on_progress)(RollProgress::Failed {
            node: name.clone(),
            phase: self.mark.phase,
            error: message.clone(),
        });
        job.events
            .publish(
                self.node,
                Severity::Warning,
                "MaintenanceAbandoned",
                message,
            )
            .await;
        error
    }
}

/// Writes the mark, with the cordon change and the fence that go with it (up while the
/// phase is out of service), in one request; returns the annotations it left.
async fn record(
    conn: &Connection,
    name: &NodeName,
    mark: &Mark,
    unschedulable: Option<bool>,
    seen: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ClusterError> {
    let mut changes = mark.annotations();
    changes.extend(fence::follow(mark.phase.out_of_service(), seen));
    nodes::patch(conn, name, unschedulable, &changes, DryRun::None)
        .await
        .map(|n| n.metadata.annotations.unwrap_or_default())
}

/// Tells the terminal and the cluster (an Event on the node) that a phase began.
async fn announce(job: &Job<'_>, node: &Node, name: &NodeName, mark: &Mark) {
    (job.on_progress)(RollProgress::Phase {
        node: name.clone(),
        phase: mark.phase,
    });
    let note = notes::entered(mark.phase, mark.was_unschedulable, mark.evicted);
    let text = format!("kordon run {}: {}", mark.run, note.note);
    job.events
        .publish(node, Severity::Normal, note.reason, text)
        .await;
}
