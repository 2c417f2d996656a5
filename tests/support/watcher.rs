//! Independent observers for the zero-downtime claims: they watch the cluster
//! themselves (not through kordon) and remember an extreme they saw — the fewest Ready
//! pods of a workload, the most nodes unschedulable at once. Tests that use them run on
//! a multi-threaded runtime, so the watch keeps flowing while the test blocks on the
//! kordon process.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::pod_ready;

/// Counts the watched objects for which `counts` holds, and folds every count seen
/// once the first list is in into one number (`fold` is `fetch_min` or `fetch_max`).
struct Tally {
    value: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tally {
    /// Returns once the watch has the full list.
    async fn start<K>(
        api: Api<K>,
        selector: &str,
        initial: usize,
        counts: fn(&K) -> bool,
        fold: fn(&AtomicUsize, usize),
    ) -> Self
    where
        K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let value = Arc::new(AtomicUsize::new(initial));
        let synced = Arc::new(AtomicBool::new(false));
        let (value2, synced2) = (value.clone(), synced.clone());
        let stream = watcher(api, watcher::Config::default().labels(selector)).default_backoff();
        let task = tokio::spawn(async move {
            let mut seen: HashMap<String, bool> = HashMap::new();
            // A (re)list in progress: counted only once whole, so a relist after a 410
            // is never mistaken for pods gone.
            let mut listing: Option<HashMap<String, bool>> = None;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let key = |k: &K| k.meta().uid.clone().unwrap_or_default();
                match event {
                    watcher::Event::Init => listing = Some(HashMap::new()),
                    watcher::Event::InitApply(k) => {
                        listing.get_or_insert_default().insert(key(&k), counts(&k));
                    }
                    watcher::Event::InitDone => {
                        seen = listing.take().unwrap_or_default();
                        synced2.store(true, Ordering::SeqCst);
                    }
                    watcher::Event::Apply(k) => {
                        seen.insert(key(&k), counts(&k));
                    }
                    watcher::Event::Delete(k) => {
                        seen.remove(&key(&k));
                    }
                }
                if listing.is_none() && synced2.load(Ordering::SeqCst) {
                    fold(&value2, seen.values().filter(|c| **c).count());
                }
            }
        });
        while !synced.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { value, task }
    }

    fn get(&self) -> usize {
        self.value.load(Ordering::SeqCst)
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fewest Ready pods of a workload.
pub struct ReadyWatcher(Tally);

impl ReadyWatcher {
    /// Starts watching pods matching `selector` and returns once it has the full list.
    pub async fn start(pods: Api<Pod>, selector: &str) -> Self {
        let serving = |p: &Pod| pod_ready(p) && p.metadata.deletion_timestamp.is_none();
        let fold = |v: &AtomicUsize, n| {
            v.fetch_min(n, Ordering::SeqCst);
        };
        Self(Tally::start(pods, selector, usize::MAX, serving, fold).await)
    }

    /// The fewest Ready pods seen since the start.
    pub fn min_ready(&self) -> usize {
        self.0.get()
    }
}

/// The most nodes unschedulable at the same time: the independent check of
/// `--max-unavailable`.
pub struct CordonWatcher(Tally);

impl CordonWatcher {
    pub async fn start(nodes: Api<Node>, selector: &str) -> Self {
        let cordoned = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        let fold = |v: &AtomicUsize, n| {
            v.fetch_max(n, Ordering::SeqCst);
        };
        Self(Tally::start(nodes, selector, 0, cordoned, fold).await)
    }

    /// The most nodes seen unschedulable at once.
    pub fn max_cordoned(&self) -> usize {
        self.0.get()
    }
}

/// The zone label.
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// The most nodes cordoned at once, overall and in any one zone, from a watch of the
/// test's nodes.
pub struct ZoneWatcher {
    overall: Arc<AtomicUsize>,
    per_zone: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ZoneWatcher {
    pub fn start(nodes: Api<Node>, selector: &str) -> Self {
        let overall = Arc::new(AtomicUsize::new(0));
        let per_zone = Arc::new(AtomicUsize::new(0));
        let (o, z) = (overall.clone(), per_zone.clone());
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let seen: Mutex<BTreeMap<String, (String, bool)>> = Mutex::default();
            let mut events =
                std::pin::pin!(watcher(nodes, config).default_backoff().applied_objects());
            while let Some(Ok(node)) = events.next().await {
                let zone = node.labels().get(ZONE).cloned().unwrap_or_default();
                let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                let Ok(mut seen) = seen.lock() else { return };
                seen.insert(node.name_any(), (zone, cordoned));
                let out: Vec<&String> = seen.values().filter(|(_, c)| *c).map(|(z, _)| z).collect();
                o.fetch_max(out.len(), Ordering::SeqCst);
                let mut by_zone: BTreeMap<&String, usize> = BTreeMap::new();
                for zone in out {
                    *by_zone.entry(zone).or_default() += 1;
                }
                z.fetch_max(
                    by_zone.values().copied().max().unwrap_or(0),
                    Ordering::SeqCst,
                );
            }
        });
        Self {
            overall,
            per_zone,
            task,
        }
    }
}

impl ZoneWatcher {
    /// The most nodes seen cordoned at once.
    pub fn max_out(&self) -> usize {
        self.overall.load(Ordering::SeqCst)
    }

    /// The most nodes of one zone seen cordoned at once.
    pub fn max_out_per_zone(&self) -> usize {
        self.per_zone.load(Ordering::SeqCst)
    }
}

impl Drop for ZoneWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`Timeline`] saw, in the order it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moment {
    /// A pod appeared on the node (a new UID bound to it).
    Bound { pod: String },
    /// A pod on the node got its deletionTimestamp: an eviction was accepted.
    Leaving { pod: String },
    /// A pod of the node left the API.
    Gone { pod: String },
    /// The node's taints, by key, changed to these.
    Taints { keys: Vec<String> },
}

/// Where in the log the first moment `which` picks for `pod` is.
pub fn at(log: &[Moment], pod: &str, which: fn(&Moment) -> Option<&String>) -> Option<usize> {
    log.iter().position(|m| which(m).is_some_and(|p| p == pod))
}

/// The pod of a [`Moment::Leaving`].
pub fn leaving(m: &Moment) -> Option<&String> {
    match m {
        Moment::Leaving { pod } => Some(pod),
        _ => None,
    }
}

/// The pod of a [`Moment::Gone`].
pub fn gone(m: &Moment) -> Option<&String> {
    match m {
        Moment::Gone { pod } => Some(pod),
        _ => None,
    }
}

/// The pod of a [`Moment::Bound`].
pub fn bound(m: &Moment) -> Option<&String> {
    match m {
        Moment::Bound { pod } => Some(pod),
        _ => None,
    }
}

/// Everything that happens to one node's pods and taints, as two watches of the
/// test's own see it, in one log: the independent record that tiers, taints and
/// recreations came in the order kordon claims.
pub struct Timeline {
    log: Arc<Mutex<Vec<Moment>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Timeline {
    /// Starts both watches and returns once each has its first list.
    pub async fn start(pods: Api<Pod>, nodes: Api<Node>, node: &str) -> Self {
        let log: Arc<Mutex<Vec<Moment>>> = Arc::default();
        let synced = Arc::new(AtomicUsize::new(0));
        let push = |log: &Arc<Mutex<Vec<Moment>>>, m: Moment| {
            if let Ok(mut l) = log.lock() {
                l.push(m);
            }
        };
        let on_node = format!("spec.nodeName={node}");
        let pod_events = watcher(pods, watcher::Config::default().fields(&on_node));
        let (pod_log, pod_synced) = (log.clone(), synced.clone());
        let pod_task = tokio::spawn(async move {
            // UID -> (name, leaving) of the pods on the node.
            let mut known: HashMap<String, (String, bool)> = HashMap::new();
            let mut live = false;
            let mut stream = std::pin::pin!(pod_events.default_backoff());
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::InitDone => {
                        live = true;
                        pod_synced.fetch_add(1, Ordering::SeqCst);
                    }
                    watcher::Event::Init => {}
                    watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                        let uid = p.uid().unwrap_or_default();
                        let leaving = p.metadata.deletion_timestamp.is_some();
                        let before = known.insert(uid, (p.name_any(), leaving));
                        if live && before.is_none() {
                            push(&pod_log, Moment::Bound { pod: p.name_any() });
                        }
                        if live && leaving && !before.is_some_and(|(_, l)| l) {
                            push(&pod_log, Moment::Leaving { pod: p.name_any() });
                        }
                    }
                    watcher::Event::Delete(p) => {
                        known.remove(&p.uid().unwrap_or_default());
                        push(&pod_log, Moment::Gone { pod: p.name_any() });
                    }
                }
            }
        });
        let named = format!("metadata.name={node}");
        let node_events = watcher(nodes, watcher::Config::default().fields(&named));
        let (node_log, node_synced) = (log.clone(), synced.clone());
        let node_task = tokio::spawn(async move {
            let mut last: Option<Vec<String>> = None;
            let mut stream = std::pin::pin!(node_events.default_backoff());
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let n = match event {
                    watcher::Event::InitDone => {
                        node_synced.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    watcher::Event::InitApply(n) | watcher::Event::Apply(n) => n,
                    _ => continue,
                };
                let keys: Vec<String> = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .map(|ts| ts.iter().map(|t| t.key.clone()).collect())
                    .unwrap_or_default();
                if last.as_ref() != Some(&keys) {
                    push(&node_log, Moment::Taints { keys: keys.clone() });
                    last = Some(keys);
                }
            }
        });
        while synced.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            log,
            tasks: vec![pod_task, node_task],
        }
    }

    /// Everything seen so far.
    pub fn log(&self) -> Vec<Moment> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A change to one node, as a [`NodeLog`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// The node became unschedulable: a start of its maintenance.
    Cordoned,
    /// It became schedulable again.
    Uncordoned,
    /// Its `kordon.dev/phase` became `done`.
    Done,
}

/// One [`NodeChange`], with when the test's own watch saw it.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    pub node: String,
    pub change: NodeChange,
    pub at: std::time::Instant,
}

/// Every cordon, uncordon and `done` of the test's nodes, in the order one watch of the
/// test's own delivers them (the API server's order of the writes), each with the time
/// it arrived: the independent record of when nodes started and finished.
pub struct NodeLog {
    log: Arc<Mutex<Vec<NodeEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeLog {
    /// Starts the watch and returns once it has the first list (which it records as
    /// the state before, not as changes).
    pub async fn start(nodes: Api<Node>, selector: &str) -> Self {
        let log: Arc<Mutex<Vec<NodeEvent>>> = Arc::default();
        let synced = Arc::new(AtomicBool::new(false));
        let (log2, synced2) = (log.clone(), synced.clone());
        let events = watcher(nodes, watcher::Config::default().labels(selector));
        let task = tokio::spawn(async move {
            // Each node's (cordoned, done) as last seen.
            let mut known: HashMap<String, (bool, bool)> = HashMap::new();
            let mut stream = std::pin::pin!(events.default_backoff());
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let (node, live) = match event {
                    watcher::Event::InitDone => {
                        synced2.store(true, Ordering::SeqCst);
                        continue;
                    }
                    watcher::Event::InitApply(n) => (n, false),
                    watcher::Event::Apply(n) => (n, true),
                    _ => continue,
                };
                let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                let done = node
                    .annotations()
                    .get("kordon.dev/phase")
                    .map(String::as_str)
                    == Some("done");
                let name = node.name_any();
                let before = known.insert(name.clone(), (cordoned, done));
                let Some((was_cordoned, was_done)) = before.filter(|_| live) else {
                    continue;
                };
                let mut changes = Vec::new();
                if cordoned != was_cordoned {
                    changes.push(match cordoned {
                        true => NodeChange::Cordoned,
                        false => NodeChange::Uncordoned,
                    });
                }
                if done && !was_done {
                    changes.push(NodeChange::Done);
                }
                let Ok(mut log) = log2.lock() else { return };
                for change in changes {
                    log.push(NodeEvent {
                        node: name.clone(),
                        change,
                        at: std::time::Instant::now(),
                    });
                }
            }
        });
        while !synced.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { log, task }
    }

    /// Everything seen so far, in order.
    pub fn events(&self) -> Vec<NodeEvent> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// When each node was cordoned, in order: the starts.
    pub fn starts(&self) -> Vec<(String, std::time::Instant)> {
        self.events()
            .into_iter()
            .filter(|e| e.change == NodeChange::Cordoned)
            .map(|e| (e.node, e.at))
            .collect()
    }
}

impl Drop for NodeLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
