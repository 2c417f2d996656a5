//! Before anything changes: which guard each evictable pod goes under, and which pods
//! no eviction could ever move within budget (those become refusals).
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::classify::{Refusal, Refusals, Replacement, Verdict};
use crate::flag::Flag;
use crate::guard;
use crate::pod::PodKey;
use crate::snapshot::Snapshot;
use crate::workload::Workload;

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

/// The flags that decide how evictions are paced.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardOptions {
    pub budget: BudgetMode,
    /// `--surge`: bring a replacement up before a pod that cannot go otherwise.
    pub surge: bool,
    /// `--allow-disruption`: accept that a workload may drop to zero Ready pods.
    pub allow_disruption: bool,
    /// `--disable-eviction`: pods are deleted, no budget applies.
    pub disable_eviction: bool,
}

/// How an evictable pod's eviction is paced.
#[derive(Debug, Clone)]
pub enum Guard {
    /// The Eviction API decides (PodDisruptionBudgets), or nothing limits it.
    Api,
    /// The workload's implicit budget (see [`crate::guard`]).
    Implicit(Workload),
    /// Bring a replacement up first by a rollout restart, then let the old pod go.
    Surge(Workload),
}

/// Assigns guards; turns `Evict` verdicts that can never fit their budget into
/// refusals naming the flag that would help.
pub fn assign(
    snapshot: &Snapshot,
    pods: &mut [(Pod, Verdict)],
    opts: GuardOptions,
) -> HashMap<PodKey, Guard> {
    let mut guards = HashMap::new();
    for (p, verdict) in pods.iter_mut() {
        let Verdict::Evict(eviction) = verdict else {
            continue;
        };
        if !matches!(eviction.replacement, Replacement::ByController { .. })
            || opts.disable_eviction
        {
            guards.insert(PodKey::of(p), Guard::Api);
            continue;
        }
        let covering = snapshot.budgets_covering(p);
        let workload = snapshot.workload_of(p);
        let replicas = workload.as_ref().map(|w| w.replicas);
        let surge =
            |w: &Option<Workload>| w.as_ref().filter(|w| opts.surge && w.can_surge).cloned();
        let surge_flag = |w: &Option<Workload>| {
            if w.as_ref().is_some_and(|w| w.can_surge) {
                Flag::Surge
            } else {
                Flag::DisableEviction
            }
        };

        // The disruption controller's count of the pods a budget expects, across every
        // workload it selects; before it has counted, the pod's own workload.
        let expected = |b: &PodDisruptionBudget| {
            b.status
                .as_ref()
                .map(|s| s.expected_pods)
                .filter(|n| *n > 0)
                .or(replicas)
        };
        let never = covering
            .iter()
            .find_map(|b| guard::budget_never_allows(b, expected(b)));
        let guard = if let Some(never) = never {
            match surge(&workload) {
                Some(w) => Guard::Surge(w),
                None => {
                    let flag = surge_flag(&workload);
                    *verdict = refuse(never, flag);
                    continue;
                }
            }
        } else if !covering.is_empty() || opts.budget == BudgetMode::PdbOnly {
            Guard::Api
        } else {
            match &workload {
                None => Guard::Api,
                Some(w) => match guard::lone_replica(w, opts.allow_disruption) {
                    None => Guard::Implicit(w.clone()),
                    Some(never) => match surge(&workload) {
                        Some(w) => Guard::Surge(w),
                        None => {
                            let flag = if w.can_surge {
                                Flag::Surge
                            } else {
                                Flag::AllowDisruption
                            };
                            *verdict = refuse(never, flag);
                            continue;
                        }
                    },
                },
            }
        };
        guards.insert(PodKey::of(p), guard);
    }
    guards
}

fn refuse(impossible: guard::Impossible, flag: Flag) -> Verdict {
    Verdict::Refuse {
        reasons: Refusals::one(Refusal::Budget { impossible, flag }),
    }
}
