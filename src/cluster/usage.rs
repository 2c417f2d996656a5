//! What every pod holds on its node, kept by one cluster-wide watch: the controller's
//! answer to "how full is each node" for placement forecasts. Each pod is reduced, as
//! its event arrives, to its node and the requests it holds there (about a hundred
//! bytes), so a NodeMaintenance's start reads memory instead of paging through every
//! pod in the cluster, and the process does not keep the pods themselves.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::{ClusterError, Connection};
use crate::placement::{self, Resources};

/// A pod as placement sees it from another node.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    node: Box<str>,
    requests: Resources,
}

/// The pods that hold something on a node, by `namespace/name`.
#[derive(Debug, Default)]
struct Pods {
    live: HashMap<String, Held>,
    /// A relist in progress, swapped in whole when it is done.
    relist: Option<HashMap<String, Held>>,
    /// Counts changes: each node's pods last changed at `changed[node]`, and every
    /// node's may have at `floor` (a relist swapped in).
    tick: u64,
    changed: HashMap<Box<str>, u64>,
    floor: u64,
}

impl Pods {
    /// Applies one watch event; true once the first list is complete.
    fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(relist), Some((key, held))) = (self.relist.as_mut(), held(&p)) {
                    relist.insert(key, held);
                }
            }
            watcher::Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.tick += 1;
                self.floor = self.tick;
                return true;
            }
            watcher::Event::Apply(p) => {
                let (key, now) = match held(&p) {
                    Some((key, held)) => (key, Some(held)),
                    None => (key_of(&p), None),
                };
                let before = match &now {
                    Some(held) => self.live.insert(key, held.clone()),
                    None => self.live.remove(&key),
                };
                if before != now {
                    self.touch(before.as_ref());
                    self.touch(now.as_ref());
                }
            }
            watcher::Event::Delete(p) => {
                let before = self.live.remove(&key_of(&p));
                self.touch(before.as_ref());
            }
        }
        false
    }

    /// Notes that the pods of `held`'s node changed.
    fn touch(&mut self, held: Option<&Held>) {
        if let Some(held) = held {
            self.tick += 1;
            self.changed.insert(held.node.clone(), self.tick);
        }
    }

    fn changed_since(&self, node: &str, tick: u64) -> bool {
        self.floor.max(self.changed.get(node).copied().unwrap_or(0)) > tick
    }

    fn by_node(&self) -> HashMap<String, Resources> {
        let mut usage: HashMap<String, Resources> = HashMap::new();
        for held in self.live.values() {
            let used = usage.entry(held.node.to_string()).or_default();
            *used = used.plus(&held.requests);
        }
        usage
    }
}

fn key_of(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The pod's node and what it holds there; `None` for a pod not bound to a node or
/// one that has finished.
fn held(p: &Pod) -> Option<(String, Held)> {
    let node = p.spec.as_ref()?.node_name.as_deref()?;
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if !placement::holds(phase) {
        return None;
    }
    Some((
        key_of(p),
        Held {
            node: node.into(),
            requests: placement::requests(p),
        },
    ))
}

/// The watch and what it has seen; the watch stops when this is dropped.
pub struct PodUsage {
    pods: Arc<Mutex<Pods>>,
    ready: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PodUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodUsage")
    }
}

impl Drop for PodUsage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodUsage {
    /// Starts watching every pod; returns once the first list is in, or fails after
    /// `within`.
    pub async fn watch(conn: &Connection, within: Duration) -> Result<Self, ClusterError> {
        let api: Api<Pod> = Api::all(conn.client.clone());
        // The first list (and each relist) comes from the API server's watch cache.
        let config = watcher::Config::default().any_semantic();
        let pods = Arc::new(Mutex::new(Pods::default()));
        let (listed, ready) = tokio::sync::watch::channel(false);
        let kept = pods.clone();
        let outage = conn.outage.clone();
        let stream = watcher(api, config).backoff(super::connect::Reconnect::default());
        let task = tokio::spawn(stream.for_each(move |event| {
            match event {
                Ok(event) => {
                    outage.back();
                    let done = kept.lock().map(|mut p| p.apply(event)).unwrap_or(false);
                    if done {
                        listed.send_replace(true);
                    }
                }
                Err(e) => tracing::debug!("watch of every pod: {e}"),
            }
            futures::future::ready(())
        }));
        let usage = Self { pods, ready, task };
        let mut ready = usage.ready.clone();
        match tokio::time::timeout(within, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(usage),
            _ => Err(ClusterError::Unreachable {
                server: conn.server.clone(),
                reason: format!(
                    "could not list every pod within {}",
                    humantime::format_duration(within)
                ),
            }),
        }
    }

    /// What the pods on each node hold, as of the watch's last event.
    pub fn by_node(&self) -> HashMap<String, Resources> {
        self.pods.lock().map(|p| p.by_node()).unwrap_or_default()
    }

    /// A mark of the index's state now, for [`Self::changed_since`].
    pub fn tick(&self) -> u64 {
        self.pods.lock().map(|p| p.tick).unwrap_or(0)
    }

    /// Whether a pod came to, left or changed what it holds on the node after `tick`:
    /// what was read of the node before then may be out of date.
    pub fn changed_since(&self, node: &str, tick: u64) -> bool {
        self.pods
            .lock()
            .map(|p| p.changed_since(node, tick))
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns" },
            "spec": {
                "nodeName": node,
                "containers": [{ "name": "c", "resources": { "requests": { "cpu": cpu, "memory": "1Mi" } } }]
            },
            "status": { "phase": phase }
        }))
        .unwrap()
    }

    fn cpu_on(pods: &Pods, node: &str) -> f64 {
        pods.by_node().get(node).map_or(0.0, |r| r.cpu_milli)
    }

    #[test]
    fn each_node_holds_what_its_running_pods_request_as_events_arrive() {
        let mut pods = Pods::default();
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(pod(
            "a",
            Some("n1"),
            "Running",
            "100m",
        )));
        pods.apply(watcher::Event::InitApply(pod(
            "b",
            Some("n1"),
            "Running",
            "200m",
        )));
        // Not bound yet, and finished: neither holds anything.
        pods.apply(watcher::Event::InitApply(pod("c", None, "Pending", "1")));
        pods.apply(watcher::Event::InitApply(pod(
            "d",
            Some("n1"),
            "Succeeded",
            "1",
        )));
        assert!(
            pods.by_node().is_empty(),
            "nothing counts before the list is done"
        );
        assert!(pods.apply(watcher::Event::InitDone));
        assert_eq!(cpu_on(&pods, "n1"), 300.0);
        assert_eq!(pods.live.len(), 2);

        let tick = pods.tick;
        pods.apply(watcher::Event::Apply(pod("c", Some("n2"), "Pending", "1")));
        assert_eq!(cpu_on(&pods, "n2"), 1000.0);
        assert!(pods.changed_since("n2", tick) && !pods.changed_since("n1", tick));
        // The same pod again (say, Ready now) changes nothing placement reads.
        let tick = pods.tick;
        pods.apply(watcher::Event::Apply(pod("c", Some("n2"), "Running", "1")));
        assert!(!pods.changed_since("n2", tick));
        // A pod that finishes frees its requests; one deleted too.
        pods.apply(watcher::Event::Apply(pod(
            "a",
            Some("n1"),
            "Failed",
            "100m",
        )));
        pods.apply(watcher::Event::Delete(pod(
            "b",
            Some("n1"),
            "Running",
            "200m",
        )));
        assert_eq!(cpu_on(&pods, "n1"), 0.0);

        // A relist replaces everything at once, so pods deleted meanwhile go.
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(pod(
            "e",
            Some("n3"),
            "Running",
            "50m",
        )));
        assert_eq!(
            cpu_on(&pods, "n2"),
            1000.0,
            "the old state serves until the relist ends"
        );
        let tick = pods.tick;
        pods.apply(watcher::Event::InitDone);
        assert!(
            pods.changed_since("n9", tick),
            "after a relist, any node may have changed"
        );
        assert_eq!(cpu_on(&pods, "n2"), 0.0);
        assert_eq!(cpu_on(&pods, "n3"), 50.0);
    }
}
