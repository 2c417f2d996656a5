//! Watching instead of polling the API: watches on pods and PodDisruptionBudgets feed
//! in-memory stores, which answer "is the pod with this UID gone?", "where is its
//! replacement?" and "has a budget moved?", and wake whoever waits on a change.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;

use super::Event;
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::pod::{self, Lifecycle};
use crate::selector;
use crate::workload::Workload;

/// How often waiters look at the store. The store is local memory, kept current by
/// the watch; looking at it costs no API request.
const LOOK_EVERY: Duration = Duration::from_millis(100);

pub struct Watches {
    store: Store<Pod>,
    budgets: Store<PodDisruptionBudget>,
    /// Bumped on every watch event, pods or budgets: waiters wake on it.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// UIDs that existed when the watch started: a replacement is not among them.
    initial: HashSet<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watches {
    pub async fn start(conn: &Connection) -> Result<Self, ClusterError> {
        let changes = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (store, pods_task) = reflect::<Pod>(conn, &changes);
        let (budgets, budgets_task) = reflect::<PodDisruptionBudget>(conn, &changes);
        let tasks = vec![pods_task, budgets_task];
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            store.wait_until_ready().await.is_ok() && budgets.wait_until_ready().await.is_ok()
        })
        .await;
        if ready != Ok(true) {
            tasks.iter().for_each(|t| t.abort());
            return Err(ClusterError::Unreachable {
                server: conn.server.clone(),
                reason: "could not start watches on pods and PodDisruptionBudgets within 30s"
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
            budgets,
            changes,
            initial,
            tasks,
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

    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.store.state()
    }

    /// Returns once the budget allows a disruption again (as the disruption
    /// controller reports it), or it is gone. Waits on watch events, so a 429 is
    /// retried when the budget moves, not on a timer.
    pub async fn budget_allows(&self, namespace: &str, name: &str) {
        let key = ObjectRef::new(name).within(namespace);
        loop {
            let mut changes = self.subscribe();
            changes.borrow_and_update();
            let allowed = match self.budgets.get(&key) {
                None => true,
                Some(b) => b.status.as_ref().is_some_and(|s| s.disruptions_allowed > 0),
            };
            if allowed {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
        }
    }

    /// A receiver that has seen everything so far; `changed()` on it returns at the
    /// next event. Take it before looking at the stores, wait on it after.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Starts a cluster-wide reflector whose every event bumps `changes`.
fn reflect<K>(
    conn: &Connection,
    changes: &Arc<tokio::sync::watch::Sender<u64>>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::all(conn.client.clone());
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let changes = changes.clone();
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => changes.send_modify(|n| *n += 1),
                    Err(e) => tracing::warn!("watch: {e}"),
                }
                futures::future::ready(())
            })
            .await;
    });
    (store, task)
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
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

/// Which new pods can replace an evicted one.
pub enum Successor {
    /// Pods of the same controller (a ReplicaSet, a StatefulSet).
    SameController(String),
    /// Pods of the same workload, whatever ReplicaSet made them: after a `--surge`
    /// rollout restart the replacement comes from a new ReplicaSet.
    SameWorkload(Workload),
}

impl Successor {
    fn matches(&self, p: &Pod) -> bool {
        match self {
            Self::SameController(uid) => pod::controller(p).is_some_and(|c| &c.uid == uid),
            Self::SameWorkload(w) => {
                let empty = Default::default();
                p.metadata.namespace.as_deref() == Some(w.id.namespace.as_str())
                    && selector::matches(&w.selector, p.metadata.labels.as_ref().unwrap_or(&empty))
            }
        }
    }
}

struct Entry {
    successor: Successor,
    status: ReplacementStatus,
}

/// Pairs each evicted pod that has a controller with a new pod that replaces it,
/// first come first served, and follows it to Ready.
pub struct Replacements {
    drained: NodeName,
    entries: Mutex<Vec<Entry>>,
}

impl Replacements {
    /// `surged` gives the workload of pods that leave by a rollout restart.
    pub fn new(
        drained: &NodeName,
        evicted: &[&Pod],
        surged: impl Fn(&Pod) -> Option<Workload>,
    ) -> Self {
        let entries = evicted
            .iter()
            .filter(|p| pod::finished_phase(p).is_none())
            .filter_map(|p| {
                let successor = match surged(p) {
                    Some(w) => Successor::SameWorkload(w),
                    None => Successor::SameController(pod::controller(p)?.uid.clone()),
                };
                Some(Entry {
                    successor,
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
    pub async fn follow(&self, watch: &Watches, on_event: &(dyn Fn(Event) + Sync)) {
        loop {
            self.look(watch, on_event);
            tokio::time::sleep(LOOK_EVERY * 2).await;
        }
    }

    /// Follows replacements until every one is Ready.
    pub async fn until_ready(&self, watch: &Watches, on_event: &(dyn Fn(Event) + Sync)) {
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
    fn look(&self, watch: &Watches, on_event: &(dyn Fn(Event) + Sync)) -> bool {
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
                        && entry.successor.matches(p)
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
