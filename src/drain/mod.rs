//! Draining one node: look at every pod first, refuse before changing anything if a pod
//! needs a flag, then cordon, evict with bounded concurrency, and confirm each pod gone
//! by its UID while following its replacement on another node.
//!
//! `plan` reads and classifies (nothing changes); `access` asks for the rights first;
//! `run` carries the plan out with the `engine` (one task per pod, deciding by
//! `step`), the `tracker`'s watches, `shared` budgets and the deadline's `ladder`
//! (`escalate` deletes past a budget); `error` is what it fails with. This file holds
//! the options, the events and the report.
mod access;
mod down;
mod engine;
mod error;
mod escalate;
pub mod ladder;
mod plan;
mod run;
pub mod shared;
mod step;
mod tracker;

use std::time::Duration;

use serde::Serialize;

pub use error::{DrainError, Remaining};
pub use escalate::{DELETED_PAST_BUDGET, Escalation};
pub use plan::{Plan, PodVerdict, plan};
use run::Progress;
pub use run::execute;
pub use step::Recovery;
pub use tracker::ReplacementStatus;

use crate::classify::Permissions;
use crate::cluster::nodes::DryRun;
use crate::evict::Blocked;
use crate::names::NodeName;
use crate::node_state::NodeState;
use crate::plan::guards::GuardOptions;
use crate::pod::{Lifecycle, PodKey};
use crate::workload::WorkloadId;

#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub permissions: Permissions,
    /// Only pods matching this label selector are drained (`--pod-selector`).
    pub pod_selector: Option<String>,
    /// `--drain-order`: with pod type and priority, the tiers pods are evicted in.
    pub drain_order: crate::tiers::DrainOrder,
    pub grace_period: Option<u32>,
    pub disable_eviction: bool,
    pub dry_run: DryRun,
    /// Give up after this long, naming what still blocks.
    pub timeout: Option<Duration>,
    /// Evictions in flight at once.
    pub concurrency: usize,
    /// How evictions are paced (see [`crate::guard`]).
    pub guards: GuardOptions,
    /// Drain even when the forecast finds replacements that no other node can take.
    pub allow_pending: bool,
    /// Make implicit budgets real PodDisruptionBudgets while the drain runs (see
    /// [`shared`]), held by a Lease of this duration: what a killed drain left expires
    /// this long after it stopped renewing.
    pub shared_budgets: Option<Duration>,
    /// What happens to pods a budget still holds at the deadline (see [`ladder`]).
    pub ladder: ladder::Ladder,
    /// The node is down (`--node-down`): when it has not been Ready and its kubelet
    /// silent for at least this long, taint it out of service and let the control plane
    /// delete its pods, instead of evicting.
    pub node_down: Option<Duration>,
    /// Ctrl-C at the edge: the drain stops between evictions.
    pub interrupt: crate::interrupt::Interrupt,
    /// Fence the node against other disruptors with the cordon ([`crate::fence`]):
    /// `maintain`, whose drain cordons. A roll and the controller cordon, and fence,
    /// with their own mark; a drain alone leaves a node that may be meant to go.
    pub fence: bool,
    /// Take the node out of external load balancers with the cordon, and give them this
    /// long to deregister it before the first eviction ([`crate::exclusion`]); `None`
    /// leaves it in them.
    pub load_balancers: Option<Duration>,
}

/// What the drain waits for after it took the node out of external load balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistration {
    /// The load balancers' deregistration delay, or what is left of it.
    Waiting(Duration),
    /// Nothing: no Service of type LoadBalancer is there to deregister it.
    NoLoadBalancers,
    /// Nothing: someone else's label had it out of them before.
    ExcludedBefore,
}

impl std::fmt::Display for Deregistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = crate::exclusion::LABEL;
        match self {
            Self::Waiting(d) if d.is_zero() => {
                write!(f, "out of external load balancers ({label})")
            }
            Self::Waiting(d) => write!(
                f,
                "out of external load balancers ({label}); waiting {} for them to deregister the node before evicting",
                humantime::format_duration(*d)
            ),
            Self::NoLoadBalancers => write!(
                f,
                "out of external load balancers ({label}); no Service of type LoadBalancer to deregister it from"
            ),
            Self::ExcludedBefore => write!(
                f,
                "out of external load balancers already by someone else's {label}"
            ),
        }
    }
}

/// Progress as it happens, for the output layer.
#[derive(Debug, Clone)]
pub enum Event {
    Cordoned {
        node: NodeName,
        before: NodeState,
        after: NodeState,
    },
    Evicting {
        pod: PodKey,
    },
    /// A budget holds the pod; repeated while it keeps holding, with how long so far.
    Blocked {
        pod: PodKey,
        blocked: Blocked,
        waited: Duration,
    },
    Gone {
        pod: PodKey,
    },
    /// A rollout restart brings this workload's replacement up first (`--surge`).
    Surged {
        workload: String,
    },
    /// The deadline passed and the ladder deleted this pod past its budget.
    DeletedPastBudget(Escalation),
    /// The node is down: tainted out of service, so the control plane deletes its pods.
    OutOfService {
        node: NodeName,
    },
    /// Out of external load balancers, and what the drain waits for before it evicts.
    ExcludedFromLoadBalancers {
        node: NodeName,
        deregistration: Deregistration,
    },
    /// Tainted `kordon.dev/draining:NoSchedule` before its DaemonSet pods are evicted,
    /// so their DaemonSets do not put them back until the uncordon.
    Tainted {
        node: NodeName,
    },
    /// A tier's evictions start: every pod of the tiers before it is gone.
    Tier {
        number: usize,
        of: usize,
        tier: crate::tiers::Tier,
    },
    Replacement {
        replaces: PodKey,
        pod: PodKey,
        stage: Lifecycle,
        node: Option<String>,
    },
    /// An evicted pod stopped while its Services could still route to it.
    StoppedEarly(EarlyStop),
}

/// A pod that stopped within [`crate::endpoints::EARLY_STOP`] of its eviction while it
/// was a ready endpoint of `services`: requests sent to it until every kube-proxy had
/// dropped it failed. The fix is the pod's: a `preStop` hook, or serving on through
/// SIGTERM for a few seconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStop {
    pub pod: PodKey,
    pub after_seconds: f64,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub node: NodeName,
    pub pods: Vec<PodVerdict>,
    /// The tiers the pods were evicted in, first first.
    pub tiers: Vec<crate::tiers::Tier>,
    pub evicted: Vec<PodKey>,
    pub replacements: Vec<ReplacementStatus>,
    /// Each workload the drain touched, and whether it is back at its budget.
    pub workloads: Vec<WorkloadRecovery>,
    /// Pods deleted past their budgets after the deadline, and by which rule.
    pub deleted_past_budget: Vec<Escalation>,
    /// Evicted pods that stopped while their Services still routed to them.
    pub stopped_early: Vec<EarlyStop>,
    pub elapsed_seconds: f64,
    pub dry_run: bool,
}

/// A workload the drain touched, and the pods that serve it now.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRecovery {
    pub workload: WorkloadId,
    #[serde(flatten)]
    pub recovery: Recovery,
}

impl WorkloadRecovery {
    pub fn is_short(&self) -> bool {
        matches!(self.recovery, Recovery::Short { .. })
    }
}
