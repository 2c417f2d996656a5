//! Facts about a single pod that several parts of kordon read: who controls it,
//! whether it is Ready, where it is in its lifecycle.
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;

/// `namespace/name`, how kubectl and kordon name a pod to people, and the key under
/// which a drain or a plan keeps what it knows of each pod. Serialized as that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PodKey(String);

impl PodKey {
    pub fn of(pod: &Pod) -> Self {
        Self(format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ))
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tests name their pods `namespace/name` directly.
#[cfg(test)]
impl From<&str> for PodKey {
    fn from(key: &str) -> Self {
        Self(key.to_string())
    }
}

/// An object's `metadata.uid`: unlike its name, never reused, so a pod that replaced
/// another under the same name (a StatefulSet's) is told apart by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uid(String);

impl Uid {
    /// The pod's UID; `None` only for a pod the API server has not stored.
    pub fn of(pod: &Pod) -> Option<Self> {
        pod.metadata.uid.clone().map(Self)
    }

    /// The UID of the pod's [`controller`].
    pub fn of_controller(pod: &Pod) -> Option<Self> {
        controller(pod).map(|c| Self(c.uid.clone()))
    }
}

/// The owner reference with `controller: true`: the object that recreates the pod.
pub fn controller(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A DaemonSet's pod: its controller would recreate it on the same node.
pub fn is_daemon(pod: &Pod) -> bool {
    controller(pod).is_some_and(|o| o.kind == "DaemonSet")
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How long the pod has been Ready (zero if it is not, or the time is unknown).
pub fn ready_for(pod: &Pod) -> std::time::Duration {
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref());
    since
        .and_then(|t| jiff::Timestamp::now().duration_since(t.0).try_into().ok())
        .unwrap_or_default()
}

/// Every container has stopped: with no container left to serve, whatever still
/// routes to the pod fails.
pub fn stopped(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        })
}

/// When the last of its containers stopped, by the kubelet's clock (whole seconds), once
/// every container has.
pub fn stopped_at(pod: &Pod) -> Option<jiff::Timestamp> {
    if !stopped(pod) {
        return None;
    }
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .map(|c| {
            let terminated = c.state.as_ref()?.terminated.as_ref()?;
            terminated.finished_at.as_ref().map(|t| t.0)
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// Succeeded or Failed: nothing runs any more and nothing will restart it.
pub fn finished_phase(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .filter(|p| *p == "Succeeded" || *p == "Failed")
}

/// Names of the pod's emptyDir volumes, whose data lives on the node.
pub fn empty_dir_volumes(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|vs| {
            vs.iter()
                .filter(|v| v.empty_dir.is_some())
                .map(|v| v.name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The stages a replacement pod goes through, as the seed article names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Lifecycle {
    /// Created, not yet scheduled or not yet started by the kubelet.
    Pending,
    /// Scheduled; the kubelet is pulling images and creating containers.
    ContainerCreating,
    /// Containers run, readiness not yet confirmed.
    Running,
    Ready,
    /// Succeeded, Failed or being deleted.
    Terminated,
}

impl Lifecycle {
    pub fn of(pod: &Pod) -> Self {
        if pod.metadata.deletion_timestamp.is_some() || finished_phase(pod).is_some() {
            return Self::Terminated;
        }
        if is_ready(pod) {
            return Self::Ready;
        }
        let status = pod.status.as_ref();
        if status.and_then(|s| s.phase.as_deref()) == Some("Running") {
            return Self::Running;
        }
        let creating = status
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("ContainerCreating")
                })
            });
        if creating {
            Self::ContainerCreating
        } else {
            Self::Pending
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_containers(states: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-1", "namespace": "shop" },
            "status": { "containerStatuses": states },
        }))
        .expect("pod")
    }

    fn container(state: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": state,
        })
    }

    #[test]
    fn a_pod_stopped_when_its_last_container_did() {
        let done = |at: &str| {
            container(serde_json::json!({ "terminated": { "exitCode": 0, "finishedAt": at } }))
        };
        let both = with_containers(serde_json::json!([
            done("2026-12-05T10:00:01Z"),
            done("2026-12-05T10:00:03Z"),
        ]));
        assert_eq!(
            stopped_at(&both),
            Some("2026-12-05T10:00:03Z".parse().expect("time"))
        );
        let running = container(serde_json::json!({ "running": {} }));
        let one_left = with_containers(serde_json::json!([done("2026-12-05T10:00:01Z"), running]));
        assert_eq!(stopped_at(&one_left), None);
    }
}
