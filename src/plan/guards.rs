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

use crate::policy::BudgetMode;

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
        let covering = snapshot.budgets_covering(p);
        if covering.len() > 1 && !opts.disable_eviction {
            let mut budgets: Vec<String> = covering
                .iter()
                .map(|b| b.metadata.name.clone().unwrap_or_default())
                .collect();
            budgets.sort();
            *verdict = refuse(
                guard::Impossible::SeveralBudgets { budgets },
                Flag::DisableEviction,
            );
            continue;
        }
        if !matches!(eviction.replacement, Replacement::ByController { .. })
            || opts.disable_eviction
        {
            guards.insert(PodKey::of(p), Guard::Api);
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{self, Permissions};
    use serde_json::json;

    fn web_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u1",
                "labels": { "app": "web" },
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-abc", "uid": "rs", "controller": true }],
            },
            "spec": { "nodeName": "node-2", "containers": [] },
            "status": { "phase": "Running" },
        }))
        .expect("pod")
    }

    fn budget(name: &str) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "app": "web" } } },
        }))
        .expect("pdb")
    }

    fn assigned(budgets: &[&str], opts: GuardOptions) -> (Verdict, Option<Guard>) {
        let mut snapshot = Snapshot::default();
        snapshot.budgets = budgets.iter().map(|b| budget(b)).collect();
        let p = web_pod();
        let mut pods = vec![(p.clone(), classify::classify(&p, Permissions::default()))];
        let guards = assign(&snapshot, &mut pods, opts);
        (pods.remove(0).1, guards.get(&PodKey::of(&p)).cloned())
    }

    #[test]
    fn a_pod_under_two_budgets_is_refused_before_anything_changes_naming_both() {
        let (verdict, guard) = assigned(&["web", "web-too"], GuardOptions::default());
        assert!(guard.is_none());
        let Verdict::Refuse { reasons } = verdict else {
            panic!("refused: {verdict:?}");
        };
        let reasons: Vec<Refusal> = reasons.iter().cloned().collect();
        assert_eq!(
            reasons,
            vec![Refusal::Budget {
                impossible: guard::Impossible::SeveralBudgets {
                    budgets: vec!["web".into(), "web-too".into()]
                },
                flag: Flag::DisableEviction,
            }]
        );
        // Deleting instead of evicting meets no budget at all.
        let delete = GuardOptions {
            disable_eviction: true,
            ..Default::default()
        };
        assert!(matches!(
            assigned(&["web", "web-too"], delete),
            (Verdict::Evict(_), Some(Guard::Api))
        ));
        // One budget is the Eviction API's to apply.
        assert!(matches!(
            assigned(&["web"], GuardOptions::default()),
            (Verdict::Evict(_), Some(Guard::Api))
        ));
    }
}
