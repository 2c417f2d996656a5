//! The library's one error type. Each message says what failed on which object; what
//! the failure means to a script ([`Exit`]) and what the user could decide to go on
//! ([`Advice`]) are asked of it here, and said by the edge in its own words: the CLI
//! names flags, the controller names spec fields.
pub use crate::advice::{Advice, Exit, decide};
use crate::cluster::ClusterError;
use crate::cluster::lease::LockError;
use crate::controller::ControllerError;
use crate::drain::DrainError;
use crate::fleet::{RollError, RunState};
use crate::names::InvalidName;
use crate::plan::PlanError;
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
