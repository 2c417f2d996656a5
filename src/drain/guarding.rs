//! Before anything changes: which guard each evictable pod goes under, and which pods
//! no eviction could ever move within budget (those become refusals).
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

use super::{BudgetMode, DrainOptions};
use crate::classify::{Refusal, Refusals, Replacement, Verdict};
use crate::cluster::{ClusterError, Connection};
use crate::guard;
use crate::pod;
use crate::selector;
use crate::workload::{Resolver, Workload};

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
pub async fn assign(
    conn: &Connection,
    pods: &mut [(Pod, Verdict)],
    opts: &DrainOptions,
) -> Result<HashMap<String, Guard>, ClusterError> {
    let mut guards = HashMap::new();
    let mut workloads = Resolver::default();
    let mut budgets: HashMap<String, Vec<PodDisruptionBudget>> = HashMap::new();
    for (p, verdict) in pods.iter_mut() {
        let Verdict::Evict(eviction) = verdict else {
            continue;
        };
        if !matches!(eviction.replacement, Replacement::ByController { .. })
            || opts.disable_eviction
        {
            guards.insert(pod::key(p), Guard::Api);
            continue;
        }
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        if !budgets.contains_key(&namespace) {
            budgets.insert(namespace.clone(), list_budgets(conn, &namespace).await?);
        }
        let covering: Vec<&PodDisruptionBudget> = budgets[&namespace]
            .iter()
            .filter(|b| covers(b, p))
            .collect();
        let workload = workloads.resolve(conn, p).await?;
        let replicas = workload.as_ref().map(|w| w.replicas);
        let surge =
            |w: &Option<Workload>| w.as_ref().filter(|w| opts.surge && w.can_surge).cloned();
        let surge_flag = |w: &Option<Workload>| {
            if w.as_ref().is_some_and(|w| w.can_surge) {
                "--surge"
            } else {
                "--disable-eviction"
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
                                "--surge"
                            } else {
                                "--allow-disruption"
                            };
                            *verdict = refuse(never, flag);
                            continue;
                        }
                    },
                },
            }
        };
        guards.insert(pod::key(p), guard);
    }
    Ok(guards)
}

fn refuse(impossible: guard::Impossible, flag: &'static str) -> Verdict {
    Verdict::Refuse {
        reasons: Refusals::one(Refusal::Budget { impossible, flag }),
    }
}

fn covers(budget: &PodDisruptionBudget, p: &Pod) -> bool {
    let empty = Default::default();
    let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
    budget
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|sel| selector::matches(sel, labels))
}

async fn list_budgets(
    conn: &Connection,
    namespace: &str,
) -> Result<Vec<PodDisruptionBudget>, ClusterError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(conn.client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| conn.error(format!("list PodDisruptionBudgets in {namespace}"), e))
}
