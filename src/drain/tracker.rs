//! Watching instead of polling the API: one watch on pods feeds an in-memory store,
//! which answers "is the pod with this UID gone?" and "where is its replacement?".
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use super::Event;
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::pod::{self, Lifecycle};

/// How often waiters look at the store. The store is local memory, kept current by
/// the watch; looking at it costs no API request.
const LOOK_EVERY: Duration = Duration::from_millis(100);

pub struct PodWatch {
    store: Store<Pod>,
    /// UIDs that existed when the watch started: a replacement is not among them.
    initial: HashSet<String>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    pub async fn start(conn: &Connection) -> Result<Self, ClusterError> {
        let api: Api<Pod> = Api::all(conn.client.clone());
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        let task = tokio::spawn(async move {
            stream
                .for_each(|event| async move {
                    if let Err(e) = event {
                        tracing::warn!("pod watch: {e}");
                    }
                })
                .await;
        });
        let ready = tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            task.abort();
            return Err(ClusterError::Unreachable {
                server: conn.server.clone(),
                reason: "could not start a watch on pods within 30s (is `watch pods` allowed?)"
                    .into(),
            });
        }
        let initial = store
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        Ok(Self {
            store,
            initial,
            task,
        })
    }

    /// Returns once no pod with this pod's UID exists. A new pod with the same name
    /// (a StatefulSet's replacement) has another UID and does not count.
    pub async fn gone(&self, target: &Pod) {
        let key = ObjectRef::from_obj(target);
        while self
            .store
            .get(&key)
            .is_some_and(|p| p.metadata.uid == target.metadata.uid)
        {
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    fn pods(&self) -> Vec<std::sync::Arc<Pod>> {
        self.store.state()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An evicted pod's replacement as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct ReplacementStatus {
    pub replaces: String,
    pub pod: Option<String>,
    pub node: Option<String>,
    pub stage: Option<Lifecycle>,
}

struct Entry {
    controller_uid: String,
    status: ReplacementStatus,
}

/// Pairs each evicted pod that has a controller with the new pod that controller
/// creates, first come first served, and follows it to Ready.
pub struct Replacements {
    drained: NodeName,
    entries: Mutex<Vec<Entry>>,
}

impl Replacements {
    pub fn new(drained: &NodeName, evicted: &[&Pod]) -> Self {
        let entries = evicted
            .iter()
            .filter(|p| pod::finished_phase(p).is_none())
            .filter_map(|p| {
                pod::controller(p).map(|c| Entry {
                    controller_uid: c.uid.clone(),
                    status: ReplacementStatus {
                        replaces: pod::key(p),
                        pod: None,
                        node: None,
                        stage: None,
                    },
                })
            })
            .collect();
        Self {
            drained: drained.clone(),
            entries: Mutex::new(entries),
        }
    }

    /// Follows replacements until cancelled.
    pub async fn follow(&self, watch: &PodWatch, on_event: &(dyn Fn(Event) + Sync)) {
        loop {
            self.look(watch, on_event);
            tokio::time::sleep(LOOK_EVERY * 2).await;
        }
    }

    /// Follows replacements until every one is Ready.
    pub async fn until_ready(&self, watch: &PodWatch, on_event: &(dyn Fn(Event) + Sync)) {
        while !self.look(watch, on_event) {
            tokio::time::sleep(LOOK_EVERY * 2).await;
        }
    }

    pub fn statuses(&self) -> Vec<ReplacementStatus> {
        self.entries
            .lock()
            .map(|e| e.iter().map(|e| e.status.clone()).collect())
            .unwrap_or_default()
    }

    /// One look at the store; true when every replacement is Ready.
    fn look(&self, watch: &PodWatch, on_event: &(dyn Fn(Event) + Sync)) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let pods = watch.pods();
        let mut claimed: HashSet<String> = entries
            .iter()
            .filter_map(|e| e.status.pod.clone())
            .collect();
        for entry in entries.iter_mut() {
            let current = match &entry.status.pod {
                Some(key) => pods
                    .iter()
                    .find(|p| &pod::key(p) == key && !watch.initial.contains(uid(p))),
                None => pods.iter().find(|p| {
                    !watch.initial.contains(uid(p))
                        && !claimed.contains(&pod::key(p))
                        && pod::controller(p).is_some_and(|c| c.uid == entry.controller_uid)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            != Some(self.drained.as_str())
                }),
            };
            let Some(p) = current else { continue };
            let key = pod::key(p);
            claimed.insert(key.clone());
            let stage = Lifecycle::of(p);
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            if entry.status.stage != Some(stage) || entry.status.node != node {
                entry.status = ReplacementStatus {
                    replaces: entry.status.replaces.clone(),
                    pod: Some(key.clone()),
                    node: node.clone(),
                    stage: Some(stage),
                };
                on_event(Event::Replacement {
                    replaces: entry.status.replaces.clone(),
                    pod: key,
                    stage,
                    node,
                });
            }
        }
        entries
            .iter()
            .all(|e| e.status.stage == Some(Lifecycle::Ready))
    }
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or_default()
}
