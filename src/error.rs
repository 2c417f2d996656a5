//! The library's one error type. Each message says what failed on which object; what
//! the failure means to a script ([`Exit`]) and what the user could decide to go on
//! ([`Advice`]) are asked of it here, and said by the edge in its own words: the CLI
//! names flags, the controller names spec fields.
use crate::classify::Refusal;
use crate::cluster::ClusterError;
use crate::cluster::lease::LockError;
use crate::controller::ControllerError;
use crate::drain::DrainError;
use crate::flag::Flag;
use crate::fleet::{RollError, RunState};
use crate::names::InvalidName;
use crate::plan::PlanError;
use crate::pod::PodKey;
use crate::snapshot::SnapshotError;
use crate::workflow::{MaintainError, StepError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Drain(#[from] DrainError),
    #[error(transparent)]
    Maintain(#[from] MaintainError),
    #[error(transparent)]
    Roll(#[from] RollError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// A plan that would refuse pods or strand them (the report says which).
    #[error(
        "the plan is unsafe: see the pods refused or fitting nowhere above; nothing was changed"
    )]
    UnsafePlan,
    /// A roll that stopped before every node was done (the report says where each stands).
    #[error("{why}")]
    RollStopped { state: RunState, why: String },
}

/// What a failed command means to a script: its exit code (documented in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else: the cluster, a failed step.
    Failed,
    /// Bad input: a value the command cannot use, wherever it was found out.
    Usage,
    /// Refused before changing anything: a decision is needed, or something else holds
    /// the nodes.
    Refused,
    /// A drain past its `--timeout`.
    TimedOut,
    /// A drain abandoned at its deadline with pods its budgets still hold.
    Abandoned,
    /// Stopped by Ctrl-C.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Refused => 3,
            Self::TimedOut => 4,
            Self::Abandoned => 5,
            Self::Interrupted => 130,
        }
    }
}

/// What the user could decide to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advice {
    /// Each pod, and the decisions that would let it go.
    Decide(Vec<(PodKey, Vec<Flag>)>),
    /// Give the flag, which would then do `to`.
    Give(Flag, &'static str),
    /// Leave the flag out.
    Omit(Flag),
    /// Raise the flag's value.
    Raise(Flag),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Drain(e) => e.exit(),
            Self::Maintain(e) => match &e.cause {
                StepError::Drain(e) => e.exit(),
                StepError::HeldByNodeMaintenance(_) => Exit::Refused,
                _ => Exit::Failed,
            },
            Self::Roll(
                RollError::Unsafe { .. }
                | RollError::Unfinished { .. }
                | RollError::Held { .. }
                | RollError::NoRoom { .. }
                | RollError::Lock(LockError::Held { .. }),
            )
            | Self::Lock(LockError::Held { .. })
            | Self::UnsafePlan => Exit::Refused,
            Self::Cluster(ClusterError::InvalidSelector { .. })
            | Self::Roll(RollError::MaxUnavailable(_))
            | Self::Controller(ControllerError::InvalidSelector(_))
            | Self::Name(_) => Exit::Usage,
            Self::RollStopped {
                state: RunState::Interrupted,
                ..
            } => Exit::Interrupted,
            _ => Exit::Failed,
        }
    }

    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::Cluster(e) => e.advice(),
            Self::Drain(e) => e.advice(),
            Self::Maintain(MaintainError {
                cause: StepError::Drain(e),
                ..
            }) => e.advice(),
            Self::Maintain(MaintainError {
                cause: StepError::Cluster(e),
                ..
            }) => e.advice(),
            Self::Roll(e) => e.advice(),
            Self::Lock(e) => e.advice(),
            Self::Snapshot(SnapshotError::Cluster(e))
            | Self::Controller(ControllerError::Cluster(e)) => e.advice(),
            _ => Vec::new(),
        }
    }
}

/// Each refused pod and the decisions that would let it go.
pub fn decide(pods: &[(PodKey, Vec<Refusal>)]) -> Advice {
    Advice::Decide(
        pods.iter()
            .map(|(pod, reasons)| (pod.clone(), reasons.iter().map(Refusal::flag).collect()))
            .collect(),
    )
}
