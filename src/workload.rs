//! The workload a pod belongs to (Deployment, StatefulSet or bare ReplicaSet) and the
//! numbers its implicit budget needs: desired replicas, how many may be unavailable,
//! whether a rollout can surge.
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// The workloads kordon keeps budgets for: what owns a pod, through its ReplicaSet
/// for a Deployment.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum WorkloadKind {
    Deployment,
    /// A ReplicaSet no Deployment owns.
    ReplicaSet,
    StatefulSet,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct WorkloadId {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub id: WorkloadId,
    /// Selects every pod of the workload, across a Deployment's ReplicaSets.
    pub selector: LabelSelector,
    pub replicas: i32,
    /// How many pods may be unavailable at once: a Deployment's rolling-update
    /// `maxUnavailable` resolved against its replicas (rounded down, as Kubernetes
    /// does), at least 1; 1 for StatefulSets and bare ReplicaSets.
    pub max_unavailable: i32,
    /// A rollout restart brings a new pod up before the old one goes (a Deployment
    /// with a RollingUpdate strategy whose `maxSurge` resolves above 0).
    pub can_surge: bool,
}

/// Resolves `IntOrString` against a total, as `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let percent: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = f64::from(total) * percent / 100.0;
            (if round_up {
                exact.ceil()
            } else {
                exact.floor()
            }) as i32
        }
    }
}

pub fn from_deployment(d: &Deployment) -> Option<Workload> {
    let spec = d.spec.as_ref()?;
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    let rolling = strategy.and_then(|s| s.type_.as_deref()) != Some("Recreate");
    let update = strategy.and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let max_unavailable = update
        .and_then(|u| u.max_unavailable.as_ref())
        .unwrap_or(&quarter);
    let max_surge = update
        .and_then(|u| u.max_surge.as_ref())
        .unwrap_or(&quarter);
    Some(Workload {
        id: id(WorkloadKind::Deployment, &d.metadata),
        selector: spec.selector.clone(),
        replicas,
        max_unavailable: scaled(max_unavailable, replicas, false).max(1),
        can_surge: rolling && scaled(max_surge, replicas, true) > 0,
    })
}

fn id(
    kind: WorkloadKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> WorkloadId {
    WorkloadId {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// A ReplicaSet no Deployment owns.
pub fn from_replica_set(rs: &ReplicaSet) -> Option<Workload> {
    rs.spec.as_ref().map(|spec| Workload {
        id: id(WorkloadKind::ReplicaSet, &rs.metadata),
        selector: spec.selector.clone(),
        replicas: spec.replicas.unwrap_or(1),
        max_unavailable: 1,
        can_surge: false,
    })
}

pub fn from_stateful_set(s: &StatefulSet) -> Option<Workload> {
    let spec = s.spec.as_ref()?;
    Some(Workload {
        id: id(WorkloadKind::StatefulSet, &s.metadata),
        selector: spec.selector.clone(),
        replicas: spec.replicas.unwrap_or(1),
        max_unavailable: 1,
        can_surge: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": strategy,
                "template": { "spec": { "containers": [] } },
            },
        }))
        .expect("deployment")
    }

    #[test]
    fn max_unavailable_resolves_like_kubernetes_and_is_at_least_one() {
        let d = |r, s| from_deployment(&deployment(r, s)).expect("workload");
        // Default 25%: 4 replicas -> 1; 10 -> 2 (rounded down); 2 -> 0, raised to 1.
        assert_eq!(d(4, json!({})).max_unavailable, 1);
        assert_eq!(d(10, json!({})).max_unavailable, 2);
        assert_eq!(d(2, json!({})).max_unavailable, 1);
        let fixed = json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 3 } });
        assert_eq!(d(10, fixed).max_unavailable, 3);
    }

    #[test]
    fn only_rolling_updates_with_surge_can_surge() {
        let d = |s| {
            from_deployment(&deployment(1, s))
                .expect("workload")
                .can_surge
        };
        assert!(d(json!({})), "default maxSurge 25% of 1 rounds up to 1");
        assert!(!d(
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 } })
        ));
        assert!(!d(json!({ "type": "Recreate" })));
    }
}
