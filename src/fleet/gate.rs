//! Health gates, each waited for by watching:
//! - before uncordoning, the node's DaemonSet pods are Ready again (its own agents:
//!   network, logging, storage);
//! - before the next node starts, every workload the node's drain touched is back to
//!   its full Ready replicas, and the budgets covering it allow disruptions again.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::budget;
use crate::cluster::Connection;
use crate::names::NodeName;
use crate::pod;
use crate::workload::WorkloadId;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("health gate not passed within {timeout:?}: {waiting}")]
    TimedOut { timeout: Duration, waiting: String },
    #[error("watching {what} failed: {message}")]
    Watch { what: String, message: String },
}

/// Waits until every DaemonSet pod on the node is Ready.
pub async fn daemon_pods_ready(
    conn: &Connection,
    node: &NodeName,
    timeout: Duration,
) -> Result<(), GateError> {
    let api: Api<Pod> = Api::all(conn.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (reader, writer) = reflector::store();
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff().reflect(writer));
    let waiting = || {
        let mut names: Vec<String> = reader
            .state()
            .iter()
            .filter(|p| !daemon_pod_ready(p))
            .map(|p| pod::key(p))
            .collect();
        names.sort();
        names
    };
    let watched = async {
        let mut listed = false;
        while let Some(event) = stream.next().await {
            // An empty node sends no object at all: the end of the first list counts.
            listed |= matches!(event, Ok(watcher::Event::InitDone));
            if listed && waiting().is_empty() {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, watched)
        .await
        .map_err(|_| GateError::TimedOut {
            timeout,
            waiting: format!(
                "DaemonSet pods not Ready on {node}: {}",
                waiting().join(", ")
            ),
        })
}

/// A pod that is not a live DaemonSet pod, or one that is Ready.
fn daemon_pod_ready(p: &Arc<Pod>) -> bool {
    let daemon = pod::controller(p).is_some_and(|o| o.kind == "DaemonSet");
    !daemon || p.metadata.deletion_timestamp.is_some() || pod::is_ready(p)
}

/// Waits until each workload has all its replicas Ready (and, for Deployments, on the
/// current revision), then until the budgets covering its pods allow a disruption.
pub async fn workloads_recovered(
    conn: &Connection,
    workloads: &[WorkloadId],
    timeout: Duration,
) -> Result<(), GateError> {
    let all = futures::future::try_join_all(workloads.iter().map(|w| recovered(conn, w)));
    match tokio::time::timeout(timeout, all).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(GateError::TimedOut {
            timeout,
            waiting: format!(
                "workloads not recovered: {}",
                workloads
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

async fn recovered(conn: &Connection, w: &WorkloadId) -> Result<(), GateError> {
    match w.kind.as_str() {
        "Deployment" => {
            recovered_as::<Deployment>(conn, w, deployment_recovered, |d| {
                d.spec.as_ref()?.template.metadata.as_ref()?.labels.clone()
            })
            .await
        }
        "StatefulSet" => {
            let back = |s: &StatefulSet| {
                all_ready(
                    s.spec.as_ref().and_then(|s| s.replicas),
                    s.status.as_ref().and_then(|s| s.ready_replicas),
                )
            };
            recovered_as(conn, w, back, |s| {
                s.spec.as_ref()?.template.metadata.as_ref()?.labels.clone()
            })
            .await
        }
        "ReplicaSet" => {
            let back = |r: &ReplicaSet| {
                all_ready(
                    r.spec.as_ref().and_then(|s| s.replicas),
                    r.status.as_ref().and_then(|s| s.ready_replicas),
                )
            };
            recovered_as(conn, w, back, |r| {
                r.spec
                    .as_ref()?
                    .template
                    .as_ref()?
                    .metadata
                    .as_ref()?
                    .labels
                    .clone()
            })
            .await
        }
        _ => Ok(()),
    }
}

/// Waits until the workload is back, then until each budget covering its pod
/// template (as the watch last saw it) allows a disruption.
async fn recovered_as<K>(
    conn: &Connection,
    w: &WorkloadId,
    back: impl Fn(&K) -> bool + Send + 'static,
    template_labels: impl Fn(&K) -> Option<BTreeMap<String, String>>,
) -> Result<(), GateError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let watch_error = |message: String| GateError::Watch {
        what: w.to_string(),
        message,
    };
    let api = Api::<K>::namespaced(conn.client.clone(), &w.namespace);
    let seen = await_condition(api, &w.name, move |k: Option<&K>| k.is_none_or(&back))
        .await
        .map_err(|e| watch_error(e.to_string()))?;
    let Some(labels) = seen.as_ref().and_then(template_labels) else {
        return Ok(());
    };
    let template = Pod {
        metadata: ObjectMeta {
            namespace: Some(w.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    let budgets = budget::covering(conn, &template)
        .await
        .map_err(|e| watch_error(e.to_string()))?;
    for pdb in budgets {
        budget_allows(conn, w, &pdb).await?;
    }
    Ok(())
}

fn all_ready(want: Option<i32>, ready: Option<i32>) -> bool {
    ready.unwrap_or(0) >= want.unwrap_or(1)
}

/// All replicas Ready and updated, as observed for the current generation.
fn deployment_recovered(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return want == 0;
    };
    let observed = status.observed_generation >= d.metadata.generation;
    observed
        && status.ready_replicas.unwrap_or(0) >= want
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
}

async fn budget_allows(conn: &Connection, w: &WorkloadId, pdb: &str) -> Result<(), GateError> {
    let api = Api::<PodDisruptionBudget>::namespaced(conn.client.clone(), &w.namespace);
    await_condition(api, pdb, |b: Option<&PodDisruptionBudget>| {
        b.is_none_or(budget_recovered)
    })
    .await
    .map(|_| ())
    .map_err(|e| GateError::Watch {
        what: format!("PodDisruptionBudget {}/{pdb}", w.namespace),
        message: e.to_string(),
    })
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
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus;

    fn deployment(want: i32, ready: i32, updated: i32, observed: i64) -> Deployment {
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
