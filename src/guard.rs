//! The availability guard: may this pod be evicted now without taking its workload
//! below budget? Pure decisions over counts the watches keep current.
//!
//! The rules, in one place:
//! - A pod covered by a PodDisruptionBudget obeys it: the Eviction API enforces it,
//!   kordon waits on the budget's status. A budget that can never allow a disruption
//!   (`maxUnavailable: 0`, `minAvailable` at or above the replicas) is reported before
//!   anything changes.
//! - A pod covered by none gets an implicit budget from its workload: after the
//!   eviction at least `replicas - U` pods stay Ready, where U is
//!   [`Workload::max_unavailable`], and never fewer than one. So a workload's pods go
//!   only as fast as their replacements become Ready.
//! - A lone replica cannot go without an outage: `--surge` brings its replacement up
//!   first (Deployments), `--allow-disruption` accepts the outage.
//! - `--budget=pdb-only` turns the implicit budgets off, as `kubectl drain` behaves.
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;

use crate::workload::{Workload, scaled};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Not now: `ready` pods are Ready and at least `floor` must stay.
    Wait {
        ready: i32,
        floor: i32,
    },
}

/// Decides one eviction of a workload's pod under the implicit budget. `ready` counts
/// the workload's Ready pods that are not terminating and not already evicted.
pub fn admit(w: &Workload, ready: i32, target_ready: bool, allow_disruption: bool) -> Admission {
    if !target_ready {
        // Evicting a pod that serves nothing takes no availability away.
        return Admission::Go;
    }
    let never_zero = if allow_disruption { 0 } else { 1 };
    let floor = (w.replicas - w.max_unavailable).max(never_zero);
    // After this eviction, ready - 1 pods serve; that must not go below the floor.
    if ready > floor {
        Admission::Go
    } else {
        Admission::Wait { ready, floor }
    }
}

/// Why a pod can never be evicted within its budget, found before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "impossible", rename_all = "camelCase")]
pub enum Impossible {
    /// The workload has one replica and no budget allows it to be down.
    LoneReplica { workload: String },
    /// The PodDisruptionBudget allows no disruption, whatever happens.
    Budget { budget: String, why: String },
    /// Several PodDisruptionBudgets cover the pod: the Eviction API refuses to evict it
    /// whatever they allow ("more than one PodDisruptionBudget"), so a drain would stop
    /// at it with the node cordoned.
    SeveralBudgets { budgets: Vec<String> },
}

impl Impossible {
    pub fn explain(&self) -> String {
        match self {
            Self::LoneReplica { workload } => {
                format!("{workload} has a single replica, so evicting it is an outage")
            }
            Self::Budget { budget, why } => {
                format!("PodDisruptionBudget {budget} never allows an eviction ({why})")
            }
            Self::SeveralBudgets { budgets } => format!(
                "is covered by several PodDisruptionBudgets ({}), and the Eviction API refuses such pods",
                budgets.join(", ")
            ),
        }
    }
}

/// Whether a lone replica blocks: a workload of one, no PDB, no `--allow-disruption`.
pub fn lone_replica(w: &Workload, allow_disruption: bool) -> Option<Impossible> {
    (w.replicas <= 1 && !allow_disruption).then(|| Impossible::LoneReplica {
        workload: w.id.to_string(),
    })
}

/// Whether a PDB can never allow a disruption of a workload of `replicas` pods.
pub fn budget_never_allows(pdb: &PodDisruptionBudget, replicas: Option<i32>) -> Option<Impossible> {
    let spec = pdb.spec.as_ref()?;
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let never = |why: String| {
        Some(Impossible::Budget {
            budget: name.clone(),
            why,
        })
    };
    if let Some(max) = &spec.max_unavailable {
        let allowed = scaled(max, replicas.unwrap_or(1), true);
        if allowed <= 0 {
            return never("maxUnavailable is 0".into());
        }
    }
    if let (Some(min), Some(replicas)) = (&spec.min_available, replicas) {
        let needed = scaled(min, replicas, true);
        if needed >= replicas {
            return never(format!("minAvailable {needed} with {replicas} replica(s)"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadId;
    use serde_json::json;

    fn web(replicas: i32, max_unavailable: i32) -> Workload {
        Workload {
            id: WorkloadId {
                kind: crate::workload::WorkloadKind::Deployment,
                namespace: "ns".into(),
                name: "web".into(),
            },
            selector: Default::default(),
            replicas,
            max_unavailable,
            can_surge: true,
        }
    }

    #[test]
    fn co_located_replicas_go_one_at_a_time_as_replacements_become_ready() {
        let w = web(4, 1);
        assert_eq!(admit(&w, 4, true, false), Admission::Go);
        assert_eq!(
            admit(&w, 3, true, false),
            Admission::Wait { ready: 3, floor: 3 }
        );
        assert_eq!(
            admit(&w, 3, false, false),
            Admission::Go,
            "an unready pod may always go"
        );
    }

    #[test]
    fn never_zero_ready_unless_disruption_is_allowed() {
        let w = web(2, 2);
        assert_eq!(admit(&w, 2, true, false), Admission::Go);
        assert_eq!(
            admit(&w, 1, true, false),
            Admission::Wait { ready: 1, floor: 1 }
        );
        assert_eq!(admit(&w, 1, true, true), Admission::Go);
        assert!(lone_replica(&web(1, 1), false).is_some());
        assert!(lone_replica(&web(1, 1), true).is_none());
    }

    #[test]
    fn budgets_that_can_never_allow_are_found_up_front() {
        let pdb = |spec: serde_json::Value| -> PodDisruptionBudget {
            serde_json::from_value(json!({ "metadata": { "name": "b" }, "spec": spec }))
                .expect("pdb")
        };
        assert!(budget_never_allows(&pdb(json!({ "maxUnavailable": 0 })), Some(3)).is_some());
        assert!(budget_never_allows(&pdb(json!({ "maxUnavailable": "0%" })), Some(3)).is_some());
        assert!(budget_never_allows(&pdb(json!({ "minAvailable": 1 })), Some(1)).is_some());
        assert!(budget_never_allows(&pdb(json!({ "minAvailable": "100%" })), Some(3)).is_some());
        assert!(budget_never_allows(&pdb(json!({ "minAvailable": 2 })), Some(3)).is_none());
        assert!(budget_never_allows(&pdb(json!({ "maxUnavailable": 1 })), Some(1)).is_none());
    }
}
