//! The user's choices that several layers read: the CLI's flags, the controller's
//! spec fields (`api`), and the drain and plan that act on them. A leaf, so the API
//! types need not import the code that carries them out.

/// `--budget`: PodDisruptionBudgets plus implicit budgets for uncovered workloads
/// (default), or PodDisruptionBudgets only, as `kubectl drain` behaves.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum BudgetMode {
    #[default]
    Implicit,
    PdbOnly,
}

/// What happens to what still blocks after the deadline, past the delete rules.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum AfterDeadline {
    /// Keep waiting (until `--timeout`, if any).
    #[default]
    Wait,
    /// Stop, uncordon the node if kordon cordoned it, and report what blocked.
    Abandon,
}

/// What happens when volumes are still attached to a node at the end of the wait for
/// them (`--on-detach-timeout`, `spec.volumeDetach.onTimeout`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum OnDetachTimeout {
    /// The maintenance fails before its work; the node stays cordoned.
    #[default]
    Fail,
    /// Warn (and tell it in an Event) and run the maintenance anyway.
    Proceed,
}

/// The wait, after the drain, until no VolumeAttachment names the node: a reboot or an
/// upgrade with a volume still attached can corrupt it or strand it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detach {
    /// Zero: no wait.
    pub timeout: std::time::Duration,
    pub on_timeout: OnDetachTimeout,
}

impl Default for Detach {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(300),
            on_timeout: OnDetachTimeout::Fail,
        }
    }
}
