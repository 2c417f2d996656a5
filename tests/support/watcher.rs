//! An independent observer for zero-downtime claims: it watches a workload's pods
//! itself (not through kordon) and remembers the fewest Ready pods it ever saw. Tests
//! that use it run on a multi-threaded runtime, so the watch keeps flowing while the
//! test blocks on the kordon process.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::pod_ready;

pub struct ReadyWatcher {
    min: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadyWatcher {
    /// Starts watching pods matching `selector` and returns once it has the full list.
    pub async fn start(pods: Api<Pod>, selector: &str) -> Self {
        let min = Arc::new(AtomicUsize::new(usize::MAX));
        let synced = Arc::new(AtomicBool::new(false));
        let (min2, synced2) = (min.clone(), synced.clone());
        let stream = watcher(pods, watcher::Config::default().labels(selector)).default_backoff();
        let task = tokio::spawn(async move {
            let mut serving: HashMap<String, bool> = HashMap::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let up = pod_ready(&p) && p.metadata.deletion_timestamp.is_none();
                        serving.insert(p.metadata.uid.unwrap_or_default(), up);
                    }
                    watcher::Event::Delete(p) => {
                        serving.remove(&p.metadata.uid.unwrap_or_default());
                    }
                    watcher::Event::Init => serving.clear(),
                    watcher::Event::InitDone => synced2.store(true, Ordering::SeqCst),
                }
                if synced2.load(Ordering::SeqCst) {
                    let now = serving.values().filter(|up| **up).count();
                    min2.fetch_min(now, Ordering::SeqCst);
                }
            }
        });
        while !synced.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { min, task }
    }

    /// The fewest Ready pods seen since the start.
    pub fn min_ready(&self) -> usize {
        self.min.load(Ordering::SeqCst)
    }
}

impl Drop for ReadyWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the test's nodes and remembers the most that were ever unschedulable at
/// the same time: the independent check of `--max-unavailable`.
pub struct CordonWatcher {
    max: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CordonWatcher {
    pub async fn start(nodes: Api<k8s_openapi::api::core::v1::Node>, selector: &str) -> Self {
        let max = Arc::new(AtomicUsize::new(0));
        let synced = Arc::new(AtomicBool::new(false));
        let (max2, synced2) = (max.clone(), synced.clone());
        let stream = watcher(nodes, watcher::Config::default().labels(selector)).default_backoff();
        let task = tokio::spawn(async move {
            let mut cordoned: HashMap<String, bool> = HashMap::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                match event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        let off = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
                        cordoned.insert(n.metadata.name.unwrap_or_default(), off);
                    }
                    watcher::Event::Delete(n) => {
                        cordoned.remove(&n.metadata.name.unwrap_or_default());
                    }
                    watcher::Event::Init => cordoned.clear(),
                    watcher::Event::InitDone => synced2.store(true, Ordering::SeqCst),
                }
                let now = cordoned.values().filter(|c| **c).count();
                max2.fetch_max(now, Ordering::SeqCst);
            }
        });
        while !synced.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { max, task }
    }

    /// The most nodes seen unschedulable at once.
    pub fn max_cordoned(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for CordonWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
