//! The four steps of node maintenance — cordon, drain, maintenance, uncordon — run in
//! order; a failure stops the run and says which step failed and what state the node
//! is left in.
pub mod gate;
pub mod machine;
pub(crate) mod ready;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::nodes::{self, DryRun};
use crate::cluster::{ClusterError, Connection};
use crate::context::Context;
use crate::drain::{self, DrainError, DrainOptions, DrainReport, Event};
use crate::names::NodeName;
use crate::node_state::{LeftAs, NodeState};
use crate::snapshot::Reach;

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
    let conn = &ctx.conn;
    let found = nodes::get(conn, node)
        .await
        .map_err(|e| fail_unchanged(node, Step::Cordon, e.into()))?;
    if let Some(holder) = crate::api::node_maintenance::holder_of(&found) {
        let held = StepError::HeldByNodeMaintenance(holder.to_string());
        return Err(fail_unchanged(node, Step::Cordon, held));
    }
    let ready_before = ready::Snapshot::of(&found);
    let plan = drain::plan(ctx, node, &opts.drain, Reach::Placement)
        .await
        .map_err(|e| fail_unchanged(node, Step::Cordon, e.into()))?;
    // Someone else's cordon is theirs to lift; a cordon kordon left behind is not.
    let cordoned_before = plan.cordoned_by_someone_else;
    if let Some(forecast) = &plan.forecast {
        on_progress(Progress::Planned(forecast.clone()));
    }

    let result = empty_and_work(ctx, node, plan, opts, &ready_before, on_progress).await;
    match result {
        Ok(report) => back_in_service(ctx, node, report, cordoned_before, opts, on_progress).await,
        Err((step, cause)) => Err(failed(ctx, node, step, cause, cordoned_before, opts).await),
    }
}

/// Steps 1-3: cordon and drain, the work, and the node back Ready with its DaemonSet
/// pods; a failure names its step.
async fn empty_and_work(
    ctx: &Context,
    node: &NodeName,
    plan: drain::Plan,
    opts: &MaintainOptions,
    ready_before: &ready::Snapshot,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<DrainReport, (Step, StepError)> {
    on_progress(Progress::Step(Step::Cordon));
    on_progress(Progress::Step(Step::Drain));
    let report = drain::execute(ctx, plan, &opts.drain, &|e| on_progress(Progress::Drain(e)))
        .await
        .map_err(|e| (Step::Drain, StepError::from(e)))?;
    on_progress(Progress::Drained(report.clone()));

    on_progress(Progress::Step(Step::Maintenance));
    run_work(node, &opts.work, false, on_progress)
        .await
        .map_err(|e| (Step::Maintenance, e))?;
    on_progress(Progress::WaitingForReady);
    ready::wait(
        &ctx.conn,
        node,
        ready_before,
        opts.ready,
        opts.ready_timeout,
    )
    .await
    .map_err(|e| (Step::Maintenance, e))?;
    if opts.gates.daemon_sets {
        on_progress(Progress::WaitingForDaemonSets);
        gate::daemon_pods_ready(&ctx.view, node, opts.gates.timeout)
            .await
            .map_err(|e| (Step::Maintenance, e.into()))?;
    }
    Ok(report)
}

/// Step 4: the uncordon (unless someone else's cordon stays), then the drained
/// workloads back.
async fn back_in_service(
    ctx: &Context,
    node: &NodeName,
    report: DrainReport,
    cordoned_before: bool,
    opts: &MaintainOptions,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<MaintainReport, MaintainError> {
    let conn = &ctx.conn;
    on_progress(Progress::Step(Step::Uncordon));
    let back = machine::next(
        Some(machine::Phase::AwaitingReady),
        cordoned_before,
        machine::Observed::Completed,
    );
    let fail = |state, cause| MaintainError {
        step: Step::Uncordon,
        node: node.clone(),
        state,
        cause,
    };
    let state = if back.cordon.is_none() {
        on_progress(Progress::LeftCordoned);
        current_state(conn, node).await
    } else {
        let after = nodes::set_unschedulable(conn, node, false, DryRun::None)
            .await
            .map_err(|e| fail(LeftAs::Cordoned, e.into()))?;
        LeftAs::Is(NodeState::of(&after))
    };
    if opts.gates.workloads {
        on_progress(Progress::WaitingForWorkloads);
        let touched: Vec<_> = report
            .workloads
            .iter()
            .map(|w| w.workload.clone())
            .collect();
        gate::workloads_recovered(&ctx.view, &touched, opts.gates.timeout)
            .await
            .map_err(|e| fail(state, e.into()))?;
    }
    Ok(MaintainReport {
        node: node.clone(),
        drain: report,
        final_state: state,
    })
}

/// A failed step: the node is put back as the state machine says (a refused drain
/// changed nothing), and the error says where it was left.
async fn failed(
    ctx: &Context,
    node: &NodeName,
    step: Step,
    cause: StepError,
    cordoned_before: bool,
    opts: &MaintainOptions,
) -> MaintainError {
    let conn = &ctx.conn;
    let refused = matches!(
        cause,
        StepError::Drain(DrainError::Refused { .. } | DrainError::NotReady { .. })
    );
    let phase = match step {
        Step::Cordon | Step::Drain => machine::Phase::Draining,
        Step::Maintenance => machine::Phase::Maintaining,
        Step::Uncordon => machine::Phase::AwaitingReady,
    };
    let failed = machine::Observed::Failed {
        uncordon: opts.uncordon_on_failure,
    };
    if !refused
        && machine::next(Some(phase), cordoned_before, failed).cordon == Some(false)
        && let Err(e) = nodes::set_unschedulable(conn, node, false, DryRun::None).await
    {
        tracing::warn!("cannot uncordon {node} after the failed {step}: {e}");
    }
    MaintainError {
        step,
        node: node.clone(),
        state: current_state(conn, node).await,
        cause,
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
