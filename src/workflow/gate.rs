//! Health gates, each waited for by watching:
//! - before uncordoning, the node's DaemonSet pods are Ready again (its own agents:
//!   network, logging, storage);
//! - before the next node starts, every workload the node's drain touched is back to
//!   its full Ready replicas, and the budgets covering it allow disruptions again;
//! - during the soak after it (`--pause-between`, `pauseBetween`), no pod on the node
//!   restarts or fails: a node that breaks what runs on it fails, and counts toward the
//!   roll's or plan's `maxFailures`.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::budget;
use crate::cluster::ClusterError;
use crate::cluster::changes::Changes;
use crate::cluster::view::{PodScope, View, Watched, WatchedWorkloads, WorkloadObject};
use crate::names::NodeName;
use crate::pod::{self, PodKey};
use crate::workload::{WorkloadId, WorkloadKind};

/// Which health gates a node's maintenance waits for, and how long each may take.
/// `maintain`, `roll` and the controller default to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    /// Before uncordoning: the node's DaemonSet pods are Ready again.
    pub daemon_sets: bool,
    /// Before the maintenance counts as done: every workload its drain touched is back.
    pub workloads: bool,
    pub timeout: Duration,
}

/// A gate `--skip-gate` leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Gate {
    /// The node's DaemonSet pods Ready before it is uncordoned.
    Daemonsets,
    /// The drained workloads back at full Ready, their budgets allowing disruptions.
    Workloads,
}

impl Gates {
    pub fn new(timeout: Duration, skip: &[Gate]) -> Self {
        Self {
            daemon_sets: !skip.contains(&Gate::Daemonsets),
            workloads: !skip.contains(&Gate::Workloads),
            timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("health gate not passed within {}: {waiting}", humantime::format_duration(*.timeout))]
    TimedOut { timeout: Duration, waiting: String },
    #[error("watching {what} failed: {message}")]
    Watch { what: String, message: String },
    #[error("during the {} soak, {what}", humantime::format_duration(*.soak))]
    Regressed { soak: Duration, what: String },
}

/// The soak: for `soak`, watches the pods on the node back in service; the first one
/// whose container restarts or that fails ends it with [`GateError::Regressed`].
pub async fn soak(view: &View, node: &NodeName, soak: Duration) -> Result<(), GateError> {
    let since = jiff::Timestamp::now();
    let pods = view
        .pods(&PodScope::Node(node.clone()))
        .await
        .map_err(|e| watch_error(format!("pods on node {node}"), e))?;
    let regressed = async {
        loop {
            let mut changes = Changes::of([pods.events()]);
            if let Some(what) = regressions(&pods.state(), since).into_iter().next() {
                return what;
            }
            let _ = changes.changed().await;
        }
    };
    match tokio::time::timeout(soak, regressed).await {
        Ok(what) => Err(GateError::Regressed { soak, what }),
        Err(_) => Ok(()),
    }
}

/// What went wrong on a node's pods since `since`: a container that terminated (and
/// restarted, or not) or a pod that failed. A pod deleted on purpose is not counted.
pub fn regressions(pods: &[Arc<Pod>], since: jiff::Timestamp) -> Vec<String> {
    let after = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.is_some_and(|t| t.0 >= since)
    };
    let mut found = Vec::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = PodKey::of(p);
        let Some(status) = p.status.as_ref() else {
            continue;
        };
        let containers = status.container_statuses.iter().flatten();
        for c in containers {
            let ended = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let ended = ended.or_else(|| c.state.as_ref().and_then(|s| s.terminated.as_ref()));
            if let Some(t) = ended.filter(|t| t.exit_code != 0 && after(t.finished_at.as_ref())) {
                let reason = t.reason.as_deref().unwrap_or("Error");
                found.push(format!(
                    "container {} of pod {name} exited with {} ({reason})",
                    c.name, t.exit_code
                ));
            }
        }
        let failed_at = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        if status.phase.as_deref() == Some("Failed")
            && after(failed_at.and_then(|c| c.last_transition_time.as_ref()))
        {
            let why = status.reason.as_deref().unwrap_or("Failed");
            found.push(format!("pod {name} failed ({why})"));
        }
    }
    found
}

/// Waits until every DaemonSet pod on the node is Ready.
pub async fn daemon_pods_ready(
    view: &View,
    node: &NodeName,
    timeout: Duration,
) -> Result<(), GateError> {
    let pods = view
        .pods(&PodScope::Node(node.clone()))
        .await
        .map_err(|e| watch_error(format!("pods on {node}"), e))?;
    let waiting = || {
        let mut names: Vec<String> = pods
            .state()
            .iter()
            .filter(|p| !daemon_pod_ready(p))
            .map(|p| PodKey::of(p).to_string())
            .collect();
        names.sort();
        names
    };
    let changes = || Changes::of([pods.events()]);
    until(changes, timeout, waiting, |names| {
        format!("DaemonSet pods not Ready on {node}: {}", names.join(", "))
    })
    .await
}

/// A pod that is not a live DaemonSet pod, or one that is Ready.
fn daemon_pod_ready(p: &Arc<Pod>) -> bool {
    !pod::is_daemon(p) || p.metadata.deletion_timestamp.is_some() || pod::is_ready(p)
}

/// Waits until each workload has all its replicas Ready (and, for Deployments, on the
/// current revision) and the budgets covering its pods allow a disruption, from the
/// view's watches of their namespaces (shared by every node of a roll).
pub async fn workloads_recovered(
    view: &View,
    workloads: &[WorkloadId],
    timeout: Duration,
) -> Result<(), GateError> {
    let mut kinds: BTreeMap<&str, Vec<WorkloadKind>> = BTreeMap::new();
    for w in workloads {
        kinds.entry(&w.namespace).or_default().push(w.kind);
    }
    let mut watched: BTreeMap<&str, Watches> = BTreeMap::new();
    for (namespace, kinds) in kinds {
        watched.insert(namespace, Watches::start(view, namespace, &kinds).await?);
    }
    let waiting = || {
        workloads
            .iter()
            .filter(|w| {
                !watched
                    .get(w.namespace.as_str())
                    .is_some_and(|n| n.recovered(w))
            })
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let changes = || Changes::of(watched.values().flat_map(Watches::events));
    until(changes, timeout, waiting, |names| {
        format!("workloads not recovered: {}", names.join(", "))
    })
    .await
}

/// Waits, waking on the watches `changes` names, until `waiting` names nothing.
async fn until(
    changes: impl Fn() -> Changes,
    timeout: Duration,
    waiting: impl Fn() -> Vec<String>,
    describe: impl Fn(&[String]) -> String,
) -> Result<(), GateError> {
    let wait = async {
        loop {
            let mut changes = changes();
            if waiting().is_empty() {
                return;
            }
            changes.changed().await;
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| GateError::TimedOut {
            timeout,
            waiting: describe(&waiting()),
        })
}

fn watch_error(what: String, e: ClusterError) -> GateError {
    GateError::Watch {
        what,
        message: e.to_string(),
    }
}

/// One namespace's workloads (of the kinds waited for) and budgets, as watched.
struct Watches {
    workloads: WatchedWorkloads,
    budgets: Arc<Watched<PodDisruptionBudget>>,
}

impl Watches {
    async fn start(
        view: &View,
        namespace: &str,
        kinds: &[WorkloadKind],
    ) -> Result<Self, GateError> {
        let (workloads, budgets) = futures::try_join!(
            view.workload_objects(namespace, kinds),
            view.objects(namespace),
        )
        .map_err(|e| watch_error(format!("workloads in {namespace}"), e))?;
        Ok(Self { workloads, budgets })
    }

    fn events(&self) -> impl Iterator<Item = tokio::sync::watch::Receiver<u64>> {
        self.workloads.events().chain([self.budgets.events()])
    }

    /// The workload is back (or gone), and every budget covering its pod template
    /// allows a disruption again.
    fn recovered(&self, w: &WorkloadId) -> bool {
        let (back, labels) = match self.workloads.get(w) {
            None => return true,
            Some(WorkloadObject::Deployment(d)) => (
                deployment_recovered(&d),
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref()?.labels.clone()),
            ),
            Some(WorkloadObject::StatefulSet(s)) => (
                all_ready(
                    s.spec.as_ref().and_then(|s| s.replicas),
                    s.status.as_ref().and_then(|s| s.ready_replicas),
                ),
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref()?.labels.clone()),
            ),
            Some(WorkloadObject::ReplicaSet(r)) => (
                all_ready(
                    r.spec.as_ref().and_then(|s| s.replicas),
                    r.status.as_ref().and_then(|s| s.ready_replicas),
                ),
                r.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref()?.metadata.as_ref()?.labels.clone()),
            ),
        };
        if !back {
            return false;
        }
        let Some(labels) = labels else {
            return true;
        };
        let template = Pod {
            metadata: ObjectMeta {
                namespace: Some(w.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        self.budgets
            .state()
            .iter()
            .filter(|b| budget::covers(b, &template))
            .all(|b| budget_recovered(b))
    }
}

fn all_ready(want: Option<i32>, ready: Option<i32>) -> bool {
    ready.unwrap_or(0) >= want.unwrap_or(1)
}

/// The rollout is through (as `kubectl rollout status` says it): as observed for the
/// current generation, every replica is on the current revision, no old one is left,
/// and all are Ready and available. Counting Ready replicas alone would pass mid-rollout,
/// with old pods Ready and new ones not.
fn deployment_recovered(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return want == 0;
    };
    let observed = status.observed_generation >= d.metadata.generation;
    let updated = status.updated_replicas.unwrap_or(0);
    observed
        && updated >= want
        && status.replicas.unwrap_or(0) <= updated
        && status.ready_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= updated
}

/// A budget that allows a disruption again, or has every pod it expects healthy (one
/// that never allows any, like `maxUnavailable: 0`, cannot do better than that).
fn budget_recovered(b: &PodDisruptionBudget) -> bool {
    b.status.as_ref().is_some_and(|s| {
        s.observed_generation >= b.metadata.generation
            && (s.disruptions_allowed > 0 || s.current_healthy >= s.expected_pods)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn pod(name: &str, status: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": name, "namespace": "shop" },
                "status": status
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn a_soak_counts_crashes_and_failures_after_it_began_and_nothing_else() {
        let since: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().expect("time");
        let crashed = |at: &str, code: i32| {
            serde_json::json!({ "containerStatuses": [{
                "name": "web", "image": "web", "imageID": "", "ready": true, "restartCount": 1,
                "lastState": { "terminated": { "exitCode": code, "reason": "OOMKilled", "finishedAt": at } }
            }] })
        };
        let pods = [
            pod("before", crashed("2026-12-06T09:59:00Z", 137)),
            pod("done", crashed("2026-12-06T10:01:00Z", 0)),
            pod("oom", crashed("2026-12-06T10:01:00Z", 137)),
            pod(
                "evicted",
                serde_json::json!({ "phase": "Failed", "reason": "Evicted", "conditions": [
                    { "type": "Ready", "status": "False", "lastTransitionTime": "2026-12-06T10:02:00Z" }
                ] }),
            ),
            pod("fine", serde_json::json!({ "phase": "Running" })),
        ];
        assert_eq!(
            regressions(&pods, since),
            vec![
                "container web of pod shop/oom exited with 137 (OOMKilled)".to_string(),
                "pod shop/evicted failed (Evicted)".to_string(),
            ]
        );
    }
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;

    fn deployment(want: i32, ready: i32, updated: i32, observed: i64) -> Deployment {
        rollout(want, want.max(updated), ready, updated, observed)
    }

    /// `replicas` counts old and new pods; `ready` across both.
    fn rollout(want: i32, replicas: i32, ready: i32, updated: i32, observed: i64) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(want),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                available_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_deployment_recovers_with_all_replicas_ready_on_the_current_revision() {
        assert!(deployment_recovered(&deployment(4, 4, 4, 2)));
        assert!(!deployment_recovered(&deployment(4, 3, 4, 2)));
        // Mid-rollout (e.g. after --surge): old pods Ready, new ones not yet.
        assert!(!deployment_recovered(&deployment(4, 4, 2, 2)));
        // The controller has not seen the latest spec yet.
        assert!(!deployment_recovered(&deployment(4, 4, 4, 1)));
        // Surging: two new pods, one Ready, and the old one still Ready counts 2 Ready.
        assert!(!deployment_recovered(&rollout(2, 3, 2, 2, 2)));
        assert!(deployment_recovered(&rollout(2, 2, 2, 2, 2)));
    }

    fn pdb(allowed: i32, healthy: i32, expected: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: allowed,
                current_healthy: healthy,
                expected_pods: expected,
                desired_healthy: expected - 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_budget_recovers_when_it_allows_a_disruption_or_all_pods_are_healthy() {
        assert!(budget_recovered(&pdb(1, 4, 4)));
        assert!(!budget_recovered(&pdb(0, 3, 4)));
        assert!(budget_recovered(&pdb(0, 4, 4)));
        assert!(!budget_recovered(&PodDisruptionBudget::default()));
    }
}
