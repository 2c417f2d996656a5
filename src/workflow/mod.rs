//! The four steps of node maintenance — cordon, drain, maintenance, uncordon — run in
//! order; a failure stops the run and says which step failed and what state the node
//! is left in.
pub mod detach;
pub mod driver;
pub mod gate;
pub mod notes;
pub(crate) mod ready;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use k8s_openapi::api::core::v1::Node;

use crate::cluster::events::{Events, Severity};
use crate::cluster::nodes::{self, DryRun};
use crate::cluster::{ClusterError, Connection};
use crate::context::Context;
use crate::drain::{self, DrainError, DrainOptions, DrainReport, Event};
use crate::names::NodeName;
use crate::node_state::{LeftAs, NodeState};
use crate::snapshot::Reach;
use driver::{Ending, Executor, Failure, Observed, Phase, Policy, Record, Task};

pub use ready::ReadyCriteria;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    Cordon,
    Drain,
    Maintenance,
    Uncordon,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, name) = match self {
            Step::Cordon => (1, "cordon"),
            Step::Drain => (2, "drain"),
            Step::Maintenance => (3, "maintenance"),
            Step::Uncordon => (4, "uncordon"),
        };
        write!(f, "step {n}/4 ({name})")
    }
}

impl Step {
    /// The article's step a task of the driver belongs to.
    fn of(task: Task) -> Self {
        match task {
            Task::Drain => Step::Drain,
            Task::Detach | Task::Work | Task::Ready | Task::DaemonSets => Step::Maintenance,
            Task::Workloads => Step::Uncordon,
        }
    }
}

/// What runs while the node is empty.
#[derive(Debug, Clone)]
pub enum Work {
    /// A program with arguments, never a shell string. It gets `KORDON_NODE` (and
    /// `KORDON_STEP=maintenance`) in its environment.
    Command { program: String, args: Vec<String> },
    /// Wait until the person at the terminal says the work is done.
    Manual,
}

#[derive(Debug, Clone)]
pub struct MaintainOptions {
    pub drain: DrainOptions,
    pub work: Work,
    pub ready: ReadyCriteria,
    /// How long the node may take to be Ready again after the work.
    pub ready_timeout: Duration,
    /// The health gates: DaemonSet pods before the uncordon, workloads after it.
    pub gates: gate::Gates,
    /// The wait for the node's volumes to detach before the work.
    pub detach: crate::policy::Detach,
    /// Uncordon even when a step failed (default: leave the node cordoned).
    pub uncordon_on_failure: bool,
}

/// Progress, step by step.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The pre-flight plan, before anything changes.
    Planned(crate::plan::PlanReport),
    Step(Step),
    Drain(Event),
    Drained(DrainReport),
    /// Asking the person at the terminal to do the work and press Enter.
    Prompt(String),
    WaitingForReady,
    /// Waiting for the node's VolumeAttachments to go before the work.
    WaitingForVolumes,
    /// The wait for the volumes ended: how long it took, or what was left when it gave
    /// up and the maintenance went on (`--on-detach-timeout proceed`).
    Volumes(detach::Outcome),
    /// Waiting for the node's DaemonSet pods to be Ready before the uncordon.
    WaitingForDaemonSets,
    /// Uncordoned; waiting for the workloads the drain touched to be back.
    WaitingForWorkloads,
    /// The node had been cordoned before kordon started: it stays cordoned.
    LeftCordoned,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintainReport {
    pub node: NodeName,
    pub drain: DrainReport,
    pub final_state: LeftAs,
}

#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {cause}; node {node} is left {state}")]
pub struct MaintainError {
    pub step: Step,
    pub node: NodeName,
    /// The node's state when the run stopped.
    pub state: LeftAs,
    pub cause: StepError,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Drain(#[from] DrainError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Work(String),
    #[error(
        "NodeMaintenance {0} holds the node: the controller carries it out; delete that NodeMaintenance first"
    )]
    HeldByNodeMaintenance(String),
    #[error("node did not become Ready within {}", humantime::format_duration(*.0))]
    NotReadyInTime(Duration),
    #[error(transparent)]
    Gate(#[from] gate::GateError),
    #[error(transparent)]
    Detach(#[from] crate::cluster::attachments::DetachError),
}

impl MaintainError {
    /// The drain was refused before anything changed.
    pub fn drain_error(&self) -> Option<&DrainError> {
        match &self.cause {
            StepError::Drain(e) => Some(e),
            _ => None,
        }
    }
}

pub async fn maintain(
    ctx: &Context,
    node: &NodeName,
    opts: &MaintainOptions,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<MaintainReport, MaintainError> {
    let found = nodes::get(&ctx.conn, node)
        .await
        .map_err(|e| fail_unchanged(node, Step::Cordon, e.into()))?;
    if let Some(holder) = crate::api::node_maintenance::holder_of(&found) {
        let held = StepError::HeldByNodeMaintenance(holder.to_string());
        return Err(fail_unchanged(node, Step::Cordon, held));
    }
    let plan = drain::plan(ctx, node, &opts.drain, Reach::Room)
        .await
        .map_err(|e| fail_unchanged(node, Step::Cordon, e.into()))?;
    if let Some(forecast) = &plan.forecast {
        on_progress(Progress::Planned(forecast.clone()));
    }
    if let Some(refusal) = plan.refusal(opts.drain.allow_pending) {
        return Err(fail_unchanged(node, Step::Drain, refusal.into()));
    }
    let record = Record {
        phase: None,
        // Someone else's cordon is theirs to lift; a cordon kordon left behind is not.
        was_unschedulable: plan.cordoned_by_someone_else,
    };
    let policy = Policy::new(&opts.gates, opts.uncordon_on_failure);
    let mut run = Maintenance {
        ctx,
        node,
        opts,
        plan: Some(plan),
        report: None,
        ready_before: ready::Snapshot::of(&found),
        events: Events::new(&ctx.conn, &format!("kordon-{}", ctx.run)),
        was_unschedulable: record.was_unschedulable,
        found,
        on_progress,
    };
    let (_, ending) = driver::drive(&mut run, record, policy, Observed::Start).await;
    let state = current_state(&ctx.conn, node).await;
    let failed = |(step, cause)| MaintainError {
        step,
        node: node.clone(),
        state,
        cause,
    };
    match (ending, run.report) {
        (Ending::Done, Some(report)) => Ok(MaintainReport {
            node: node.clone(),
            drain: report,
            final_state: state,
        }),
        (Ending::Failed(e) | Ending::PutBack(e), _) => Err(failed(e)),
        // `maintain` neither stops between phases nor finishes without its drain.
        (Ending::Stopped | Ending::Done, _) => Err(failed((
            Step::Drain,
            StepError::Work("the maintenance stopped before its drain finished".into()),
        ))),
    }
}

/// One node's maintenance at the terminal: the driver's commands carried out in this
/// process, the record kept in memory (the node's cordon is its only trace).
struct Maintenance<'a> {
    ctx: &'a Context,
    node: &'a NodeName,
    opts: &'a MaintainOptions,
    /// The pre-flight plan, until the drain takes it.
    plan: Option<drain::Plan>,
    report: Option<DrainReport>,
    ready_before: ready::Snapshot,
    /// The node's story as Events on it, as a roll and the controller tell it.
    events: Events,
    was_unschedulable: bool,
    found: Node,
    on_progress: &'a (dyn Fn(Progress) + Sync),
}

impl Maintenance<'_> {
    /// What takes down the fence, and the exclusion from load balancers, the drain put
    /// up with its cordon (see [`DrainOptions::fence`]): known from the node as found,
    /// so it rides on the put-back, whoever's the cordon.
    fn unfence(&self) -> nodes::Annotations {
        let found = self.found.metadata.annotations.clone().unwrap_or_default();
        let mut up = crate::fence::applied(&found, &crate::fence::raise(&found));
        let labels = self.found.metadata.labels.clone().unwrap_or_default();
        if self.opts.drain.load_balancers.is_some() {
            let excluded = crate::exclusion::Exclusion::of(&labels, &found);
            let now = jiff::Timestamp::now();
            up = crate::fence::applied(&up, &crate::exclusion::exclude(excluded, now));
        }
        crate::fence::lower(&up)
    }

    async fn announce(&self, severity: Severity, note: notes::Note) {
        let text = format!("kordon maintain: {}", note.note);
        self.events
            .publish(&self.found, severity, note.reason, text)
            .await;
    }
}

impl Executor for Maintenance<'_> {
    type Error = (Step, StepError);

    async fn record(
        &mut self,
        phase: Phase,
        cordon: Option<bool>,
        entered: bool,
    ) -> Result<(), (Step, StepError)> {
        let on_progress = self.on_progress;
        if !entered {
            return Ok(());
        }
        match phase {
            // The drain cordons the node as its first change, after its checks, so a
            // refused drain changes nothing.
            Phase::Draining => {
                on_progress(Progress::Step(Step::Cordon));
                on_progress(Progress::Step(Step::Drain));
            }
            Phase::Maintaining => on_progress(Progress::Step(Step::Maintenance)),
            Phase::Verifying => {
                on_progress(Progress::Step(Step::Uncordon));
                if cordon.is_none() {
                    on_progress(Progress::LeftCordoned);
                }
                restore(&self.ctx.conn, self.node, cordon, &self.unfence())
                    .await
                    .map_err(|e| (Step::Uncordon, e.into()))?;
            }
            Phase::AwaitingReady | Phase::Done => {}
        }
        let evicted = self.report.as_ref().map_or(0, |r| r.evicted.len());
        let note = notes::entered(phase, self.was_unschedulable, evicted);
        self.announce(Severity::Normal, note).await;
        Ok(())
    }

    async fn run(&mut self, task: Task) -> Result<(), (Step, StepError)> {
        let (ctx, node, opts, on_progress) = (self.ctx, self.node, self.opts, self.on_progress);
        let step = Step::of(task);
        let failed = |e: StepError| (step, e);
        match task {
            Task::Drain => {
                let plan = match self.plan.take() {
                    Some(plan) => plan,
                    None => drain::plan(ctx, node, &opts.drain, Reach::Targets)
                        .await
                        .map_err(|e| failed(e.into()))?,
                };
                let on_event = |e| on_progress(Progress::Drain(e));
                let fenced = DrainOptions {
                    fence: true,
                    ..opts.drain.clone()
                };
                let report = drain::execute(ctx, plan, &fenced, &on_event)
                    .await
                    .map_err(|e| failed(e.into()))?;
                on_progress(Progress::Drained(report.clone()));
                self.report = Some(report);
            }
            Task::Detach => {
                on_progress(Progress::WaitingForVolumes);
                let outcome = detach::wait(&ctx.conn, node, opts.detach)
                    .await
                    .map_err(|e| failed(e.into()))?;
                if let detach::Outcome::Proceeded(e) = &outcome {
                    let note = detach::proceeded(e);
                    self.announce(Severity::Warning, note).await;
                }
                on_progress(Progress::Volumes(outcome));
            }
            Task::Work => run_work(node, &opts.work, false, on_progress)
                .await
                .map_err(failed)?,
            Task::Ready => {
                on_progress(Progress::WaitingForReady);
                let timeout = opts.ready_timeout;
                ready::wait(&ctx.conn, node, &self.ready_before, opts.ready, timeout)
                    .await
                    .map_err(failed)?;
            }
            Task::DaemonSets => {
                on_progress(Progress::WaitingForDaemonSets);
                gate::daemon_pods_ready(&ctx.view, node, opts.gates.timeout)
                    .await
                    .map_err(|e| failed(e.into()))?;
            }
            Task::Workloads => {
                on_progress(Progress::WaitingForWorkloads);
                let touched: Vec<_> = self
                    .report
                    .iter()
                    .flat_map(|r| r.workloads.iter().map(|w| w.workload.clone()))
                    .collect();
                gate::workloads_recovered(&ctx.view, &touched, opts.gates.timeout)
                    .await
                    .map_err(|e| failed(e.into()))?;
            }
        }
        Ok(())
    }

    fn failure(&self, (_, cause): &(Step, StepError)) -> Failure {
        match cause {
            StepError::Drain(DrainError::Abandoned { .. }) => Failure::Abandoned,
            _ => Failure::Failed,
        }
    }

    /// The node stays as it is unless the driver lifts the cordon; a refused drain
    /// changed nothing, so there is nothing to lift.
    async fn fail(
        &mut self,
        phase: Phase,
        cordon: Option<bool>,
        (step, cause): (Step, StepError),
    ) -> (Step, StepError) {
        let refused = matches!(
            cause,
            StepError::Drain(DrainError::Refused { .. } | DrainError::NotReady { .. })
        );
        if let (false, Some(_)) = (refused, cordon)
            && let Err(e) = restore(&self.ctx.conn, self.node, cordon, &self.unfence()).await
        {
            tracing::warn!("cannot uncordon {} after the failed {step}: {e}", self.node);
        }
        if !refused {
            let note = notes::failed(phase, &cause.to_string(), cordon);
            self.announce(Severity::Warning, note).await;
        }
        (step, cause)
    }

    /// An abandoned drain: the node is uncordoned if kordon cordoned it, and the error
    /// says whether it could be.
    async fn put_back(
        &mut self,
        cordon: Option<bool>,
        (step, cause): (Step, StepError),
    ) -> (Step, StepError) {
        let cause = match cause {
            StepError::Drain(e) => {
                StepError::Drain(put_back(&self.ctx.conn, cordon, &self.unfence(), e).await)
            }
            other => other,
        };
        let note = notes::abandoned(&cause.to_string());
        self.announce(Severity::Warning, note).await;
        (step, cause)
    }
}

/// `kordon drain` on its own abandoned at its deadline: the node back as the driver
/// says (uncordoned unless someone else had cordoned it).
pub async fn abandoned_drain(
    conn: &Connection,
    was_unschedulable: bool,
    abandoned: DrainError,
) -> DrainError {
    let record = Record {
        phase: Some(Phase::Draining),
        was_unschedulable,
    };
    match driver::next(record, Policy::default(), Observed::Abandoned) {
        // A drain alone puts up no fence.
        driver::Command::PutBack { cordon } => {
            put_back(conn, cordon, &nodes::Annotations::new(), abandoned).await
        }
        _ => abandoned,
    }
}

/// Carries out the driver's put-back of an abandoned drain whose only record is the
/// cordon (and a fence): lifts it if asked, and the error says whether it could.
async fn put_back(
    conn: &Connection,
    cordon: Option<bool>,
    unfence: &nodes::Annotations,
    error: DrainError,
) -> DrainError {
    let DrainError::Abandoned { node, .. } = &error else {
        return error;
    };
    let restored = restore(conn, node, cordon, unfence)
        .await
        .inspect_err(|e| tracing::warn!("cannot put abandoned node {node} back: {e}"))
        .is_ok();
    error.uncordoned(restored && cordon.is_some())
}

/// The driver's cordon change with the fence's annotations in the same request; with
/// no cordon change (someone else's cordon) the annotations alone, and nothing when
/// there are none.
async fn restore(
    conn: &Connection,
    node: &NodeName,
    cordon: Option<bool>,
    annotations: &nodes::Annotations,
) -> Result<(), ClusterError> {
    match cordon {
        Some(c) => nodes::set_unschedulable_with(conn, node, c, annotations, DryRun::None)
            .await
            .map(|_| ()),
        // Nothing of the node's is kordon's to change but a draining taint.
        None if annotations.is_empty() => nodes::lift_draining(conn, node).await,
        None => nodes::patch(conn, node, None, annotations, DryRun::None)
            .await
            .map(|_| ()),
    }
}

fn fail_unchanged(node: &NodeName, step: Step, cause: StepError) -> MaintainError {
    MaintainError {
        step,
        node: node.clone(),
        state: LeftAs::Unchanged,
        cause,
    }
}

/// The node's state now, for reports.
pub(crate) async fn current_state(conn: &Connection, node: &NodeName) -> LeftAs {
    match nodes::get(conn, node).await {
        Ok(n) => LeftAs::Is(NodeState::of(&n)),
        Err(_) => LeftAs::Unknown,
    }
}

/// With `own_group`, the command runs in its own process group, so a Ctrl-C meant for
/// kordon (which then stops at a safe point) does not kill the maintenance midway.
pub(crate) async fn run_work(
    node: &NodeName,
    work: &Work,
    own_group: bool,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), StepError> {
    match work {
        Work::Command { program, args } => {
            let mut command = tokio::process::Command::new(program);
            if own_group {
                command.process_group(0);
            }
            let status = command
                .args(args)
                .env("KORDON_NODE", node.as_str())
                .env("KORDON_STEP", "maintenance")
                .status()
                .await
                .map_err(|e| StepError::Work(format!("cannot run {program}: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(StepError::Work(format!(
                    "command {program} exited with {status}"
                )))
            }
        }
        Work::Manual => {
            on_progress(Progress::Prompt(format!(
                "node {node} is drained: do the maintenance, then press Enter to bring it back (Ctrl-C leaves it cordoned)"
            )));
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|n| (n, line))
            })
            .await
            .map_err(|e| StepError::Work(format!("prompt failed: {e}")))?;
            match line {
                Ok((0, _)) => Err(StepError::Work(
                    "standard input closed before confirmation".into(),
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(StepError::Work(format!("cannot read confirmation: {e}"))),
            }
        }
    }
}
