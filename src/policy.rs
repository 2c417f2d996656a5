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
