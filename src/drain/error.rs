//! What a drain fails with, each error naming the node and the pods or workloads
//! concerned, with its exit code and what the user could decide.
use std::time::Duration;

use serde::Serialize;

use super::{Recovery, WorkloadRecovery};
use crate::advice::{Advice, Exit};
use crate::classify::Refusal;
use crate::cluster::ClusterError;
use crate::evict::{Blocked, EvictError};
use crate::flag::Flag;
use crate::names::NodeName;
use crate::node_state::NodeState;
use crate::pod::PodKey;

/// Pods still on the node when the drain stopped, with the budget that held each.
#[derive(Debug, Clone, Serialize)]
pub struct Remaining {
    pub pod: PodKey,
    pub blocked_by: Option<Blocked>,
    /// Not Ready: it serves nothing and a budget holds it only because the budget is
    /// short already (`--delete-unhealthy-past-budget` allows it after the deadline).
    pub unhealthy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(
        "node {node} is {state}: its kubelet would not confirm pods leaving; fix the node first (kordon refuses to drain a node that is not Ready)"
    )]
    NotReady { node: NodeName, state: NodeState },
    #[error(
        "node {node} is {state}, but its kubelet reported {} ago, less than the {} it must be silent to count as down: it may still run its pods; nothing was changed", humantime::format_duration(*.silent), humantime::format_duration(*.after)
    )]
    NotDownLongEnough {
        node: NodeName,
        state: NodeState,
        silent: Duration,
        after: Duration,
    },
    #[error(
        "node {node} is Ready: only a node that is down is drained as down; nothing was changed"
    )]
    NotDown { node: NodeName },
    #[error("cannot drain node {node}: {} pod(s) need a decision ({}); nothing was changed", .pods.len(), explain(.pods))]
    Refused {
        node: NodeName,
        pods: Vec<(PodKey, Vec<Refusal>)>,
    },
    #[error("cannot drain node {node}: no other node can take the replacement of {}; they would stay Pending and their workloads lose availability. Nothing was changed: free capacity (or uncordon a node) first", .pods.join("; "))]
    WouldStrand { node: NodeName, pods: Vec<String> },
    #[error("drain of node {node} timed out after {} with {} pod(s) left: {}; the node stays cordoned", humantime::format_duration(*.timeout), .remaining.len(), describe(.remaining))]
    TimedOut {
        node: NodeName,
        timeout: Duration,
        remaining: Vec<Remaining>,
    },
    #[error("drain of node {node} abandoned at its {} deadline with {} pod(s) still held by their budgets: {}; nothing was deleted past a budget, and the node {}", humantime::format_duration(*.deadline), .remaining.len(), describe(.remaining), if *.uncordoned { "is uncordoned again" } else { "stays cordoned (kordon did not cordon it here)" })]
    Abandoned {
        node: NodeName,
        deadline: Duration,
        remaining: Vec<Remaining>,
        uncordoned: bool,
    },
    #[error("node {node} is drained, but {} later {} still below its budget: {}; the node stays cordoned", humantime::format_duration(*.waited), if .short.len() == 1 { "this workload is" } else { "these workloads are" }, short_of(.short))]
    NotRecovered {
        node: NodeName,
        waited: Duration,
        short: Vec<WorkloadRecovery>,
    },
    #[error("invalid delete-past-budget rule {rule}: {message}")]
    InvalidRule { rule: String, message: String },
    #[error("interrupted: stopped issuing evictions with {} pod(s) left on node {node}, which stays cordoned", .remaining.len())]
    Interrupted {
        node: NodeName,
        remaining: Vec<Remaining>,
    },
    #[error("interrupted before node {node} was drained: none of its pods was evicted")]
    InterruptedBefore { node: NodeName },
    #[error("invalid pod selector \"{selector}\": {message}")]
    InvalidPodSelector { selector: String, message: String },
    #[error(transparent)]
    Evict(#[from] EvictError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl DrainError {
    /// An abandoned drain, saying whether its node was uncordoned again (by whoever
    /// put it back); any other error as it is.
    pub fn uncordoned(self, lifted: bool) -> Self {
        match self {
            Self::Abandoned {
                node,
                deadline,
                remaining,
                uncordoned: _,
            } => Self::Abandoned {
                node,
                deadline,
                remaining,
                uncordoned: lifted,
            },
            other => other,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Refused { .. } | Self::WouldStrand { .. } => Exit::Refused,
            Self::TimedOut { .. } | Self::NotRecovered { .. } => Exit::TimedOut,
            Self::Abandoned { .. } => Exit::Abandoned,
            Self::Interrupted { .. } | Self::InterruptedBefore { .. } => Exit::Interrupted,
            Self::InvalidRule { .. } | Self::InvalidPodSelector { .. } => Exit::Usage,
            Self::Cluster(ClusterError::InvalidSelector { .. }) => Exit::Usage,
            _ => Exit::Failed,
        }
    }

    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::NotReady { .. } => vec![Advice::Give(
                Flag::NodeDown,
                "move its workloads through Kubernetes' non-graceful shutdown (the out-of-service taint) if it is down for good",
            )],
            Self::NotDown { .. } => vec![Advice::Omit(Flag::NodeDown)],
            Self::Refused { pods, .. } => vec![crate::advice::decide(pods)],
            Self::WouldStrand { .. } => vec![Advice::Give(Flag::AllowPending, "drain anyway")],
            Self::Cluster(e) | Self::Evict(EvictError::Cluster(e)) => e.advice(),
            _ => Vec::new(),
        }
    }
}

/// "default/a has no controller, so nothing would recreate it".
fn explain(pods: &[(PodKey, Vec<Refusal>)]) -> String {
    pods.iter()
        .map(|(pod, reasons)| {
            let why: Vec<String> = reasons.iter().map(Refusal::explain).collect();
            format!("{pod} {}", why.join(" and "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "Deployment shop/web (2 Ready, needs 3)".
fn short_of(short: &[WorkloadRecovery]) -> String {
    short
        .iter()
        .map(|w| match &w.recovery {
            Recovery::Short {
                serving,
                needs,
                budget,
            } => {
                let by = budget
                    .as_ref()
                    .map(|b| format!(" by PodDisruptionBudget {b}"))
                    .unwrap_or_default();
                format!(
                    "{} ({} Ready, needs {needs}{by})",
                    w.workload,
                    serving.len()
                )
            }
            _ => w.workload.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(remaining: &[Remaining]) -> String {
    remaining
        .iter()
        .map(|r| {
            let unhealthy = if r.unhealthy { "not Ready, " } else { "" };
            match &r.blocked_by {
                Some(b) => format!("{} ({unhealthy}held by {})", r.pod, b.detail),
                None if r.unhealthy => format!("{} (not Ready)", r.pod),
                None => r.pod.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
