//! The workload a pod belongs to (Deployment, StatefulSet or bare ReplicaSet) and the
//! numbers its implicit budget needs: desired replicas, how many may be unavailable,
//! whether a rollout can surge.
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
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

/// A change of a workload's pods that its own controller is carrying out. A
/// PodDisruptionBudget cannot stop a controller, so a pod evicted now would go down on
/// top of those the rollout takes down itself (both react to the same pod turning
/// Ready): a drain leaves such a workload's pods until the rollout is through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Its spec changed (a new template, a new replica count) and its controller has
    /// not acted on it yet (`status.observedGeneration` behind `metadata.generation`).
    Unobserved,
    /// Its live pods come from several revisions: its controller is replacing them.
    Revisions(usize),
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unobserved => {
                f.write_str("its controller has not yet acted on a change of its spec")
            }
            Self::Revisions(n) => write!(f, "it is rolling out: its pods are of {n} revisions"),
        }
    }
}

/// The label that names a pod's revision: a Deployment's ReplicaSet template hash.
const TEMPLATE_HASH: &str = "pod-template-hash";
/// A StatefulSet pod's revision.
const REVISION_HASH: &str = "controller-revision-hash";

/// Whether a Deployment is rolling out, from the Deployment and its pods. Counting the
/// revisions of live pods (not `status.updatedReplicas`) keeps an eviction's own
/// replacement, which its ReplicaSet reports late, from reading as a rollout. A paused
/// rollout replaces nothing, so it does not count.
pub fn deployment_rollout(d: &Deployment, pods: &[std::sync::Arc<Pod>]) -> Option<Rollout> {
    let observed = d.status.as_ref().and_then(|s| s.observed_generation);
    if unobserved(&d.metadata, observed) {
        return Some(Rollout::Unobserved);
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    (!paused).then(|| revisions(pods, TEMPLATE_HASH)).flatten()
}

/// Whether a StatefulSet is rolling out. Under `OnDelete` its controller replaces
/// nothing by itself, so several revisions are no rollout.
pub fn stateful_set_rollout(s: &StatefulSet, pods: &[std::sync::Arc<Pod>]) -> Option<Rollout> {
    let observed = s.status.as_ref().and_then(|s| s.observed_generation);
    if unobserved(&s.metadata, observed) {
        return Some(Rollout::Unobserved);
    }
    let strategy = s.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete");
    (!on_delete)
        .then(|| revisions(pods, REVISION_HASH))
        .flatten()
}

/// Whether a ReplicaSet's controller has yet to act on a change (a scale).
pub fn replica_set_rollout(rs: &ReplicaSet) -> Option<Rollout> {
    let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
    unobserved(&rs.metadata, observed).then_some(Rollout::Unobserved)
}

fn unobserved(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    observed: Option<i64>,
) -> bool {
    meta.generation
        .is_some_and(|g| observed.is_none_or(|o| o < g))
}

/// Several revisions among the pods that are not terminating.
fn revisions(pods: &[std::sync::Arc<Pod>], label: &str) -> Option<Rollout> {
    let live: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.labels.as_ref()?.get(label).map(String::as_str))
        .collect();
    (live.len() > 1).then_some(Rollout::Revisions(live.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(hash: &str, terminating: bool) -> Arc<Pod> {
        let mut meta = json!({ "name": format!("web-{hash}"), "labels": { TEMPLATE_HASH: hash } });
        if terminating {
            meta["deletionTimestamp"] = json!("2026-12-05T12:00:00Z");
        }
        Arc::new(serde_json::from_value(json!({ "metadata": meta })).expect("pod"))
    }

    fn observed(generation: i64, observed: i64, paused: bool) -> Deployment {
        let mut d = deployment(4, json!({}));
        d.metadata.generation = Some(generation);
        d.spec.as_mut().expect("spec").paused = Some(paused);
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(observed),
            ..Default::default()
        });
        d
    }

    #[test]
    fn a_deployment_rolls_out_while_its_live_pods_are_of_several_revisions() {
        let settled = observed(2, 2, false);
        let one = [pod("a", false), pod("a", false)];
        assert_eq!(deployment_rollout(&settled, &one), None);
        let two = [pod("a", false), pod("b", false)];
        assert_eq!(
            deployment_rollout(&settled, &two),
            Some(Rollout::Revisions(2))
        );
        // The old revision's last pod terminating: the rollout is through.
        let done = [pod("a", true), pod("b", false)];
        assert_eq!(deployment_rollout(&settled, &done), None);
        // A paused rollout replaces nothing.
        assert_eq!(deployment_rollout(&observed(2, 2, true), &two), None);
    }

    #[test]
    fn a_spec_change_not_yet_observed_is_a_rollout_about_to_start() {
        let one = [pod("a", false)];
        assert_eq!(
            deployment_rollout(&observed(3, 2, false), &one),
            Some(Rollout::Unobserved)
        );
        assert_eq!(
            deployment_rollout(&observed(3, 2, true), &one),
            Some(Rollout::Unobserved)
        );
    }

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
