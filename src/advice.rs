//! What a failure means beyond its message: its exit code for scripts ([`Exit`]) and
//! what the user could decide to go on ([`Advice`]). A leaf, so every layer's error
//! can say both without importing the library's one error type above it.
use crate::classify::Refusal;
use crate::flag::Flag;
use crate::pod::PodKey;

/// What a failed command means to a script: its exit code (documented in docs/cli.md).
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
    /// Its name in an error document (`-o json`): the variant's.
    pub fn name(self) -> &'static str {
        match self {
            Self::Failed => "Failed",
            Self::Usage => "Usage",
            Self::Refused => "Refused",
            Self::TimedOut => "TimedOut",
            Self::Abandoned => "Abandoned",
            Self::Interrupted => "Interrupted",
        }
    }

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

/// Each refused pod and the decisions that would let it go.
pub fn decide(pods: &[(PodKey, Vec<Refusal>)]) -> Advice {
    Advice::Decide(
        pods.iter()
            .map(|(pod, reasons)| (pod.clone(), reasons.iter().map(Refusal::flag).collect()))
            .collect(),
    )
}
