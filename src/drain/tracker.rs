//! Watching instead of polling the API: the view's scoped watches (the drained node's
//! pods, the pods of each workload involved, the budgets of each namespace involved)
//! answer "is the pod with this UID gone?", "where is its replacement?" and "has a
//! budget moved?", and every waiter wakes on the view's change signal.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;

use super::Event;
use crate::budget::BudgetKey;
use crate::cluster::ClusterError;
use crate::cluster::view::{PodScope, View, Watched};
use crate::names::NodeName;
use crate::pod::{self, Lifecycle, PodKey, Uid};
use crate::workload::{Workload, WorkloadId};

/// The watches one drain holds; dropping them lets the view stop what no one else uses.
pub struct Watches<'a> {
    view: &'a View,
    node: Arc<Watched<Pod>>,
    /// Each workload's pods: a watch that may cover other workloads too, and the
    /// selector that picks its own. A workload whose selector kube cannot convert is left
    /// out: an invalid selector selects no pods, as the API server's controllers treat it.
    workloads: HashMap<WorkloadId, (Arc<Watched<Pod>>, Selector)>,
    budgets: HashMap<String, Arc<Watched<PodDisruptionBudget>>>,
    /// UIDs of the workloads' pods when the drain began: a replacement is not among them.
    initial: HashSet<Uid>,
}

impl<'a> Watches<'a> {
    /// Starts every watch at once: a drain waits for the slowest first list, not
    /// for the sum of them.
    pub async fn start(
        view: &'a View,
        node: &NodeName,
        workloads: &[&Workload],
        namespaces: &[String],
    ) -> Result<Self, ClusterError> {
        let node_scope = PodScope::Node(node.clone());
        let budget_watches = try_join_all(namespaces.iter().map(|ns| view.budgets(ns)));
        let (node, pods, budget_watches) = futures::try_join!(
            view.pods(&node_scope),
            view.pods_of_workloads(workloads),
            budget_watches
        )?;
        let initial = pods
            .iter()
            .flat_map(|(w, _)| w.state())
            .filter_map(|p| Uid::of(&p))
            .collect();
        let mut watched = HashMap::new();
        for (pods, covered) in &pods {
            for w in covered {
                if let Ok(selector) = Selector::try_from(w.selector.clone()) {
                    watched.insert(w.id.clone(), (pods.clone(), selector));
                }
            }
        }
        Ok(Self {
            view,
            node,
            workloads: watched,
            budgets: namespaces.iter().cloned().zip(budget_watches).collect(),
            initial,
        })
    }

    /// The pod as the view has it now; `None` once no pod with its UID is on the node.
    /// A new pod with the same name (a StatefulSet's replacement) has another UID and
    /// does not count.
    pub fn current(&self, target: &Pod) -> Option<Arc<Pod>> {
        self.node
            .store()
            .get(&ObjectRef::from_obj(target))
            .filter(|p| p.metadata.uid == target.metadata.uid)
    }

    /// Whether the pod was among the workloads' pods when the drain began (and so
    /// replaces no evicted one).
    fn was_there(&self, p: &Pod) -> bool {
        Uid::of(p).is_some_and(|u| self.initial.contains(&u))
    }

    /// The workload's pods as last seen (empty if its pods are not watched).
    pub fn pods_of(&self, w: &WorkloadId) -> Vec<Arc<Pod>> {
        let Some((pods, selector)) = self.workloads.get(w) else {
            return Vec::new();
        };
        let empty = Default::default();
        pods.state()
            .into_iter()
            .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
            .collect()
    }

    /// Whether the budget allows a disruption now (as the disruption controller
    /// reports it), or is gone.
    pub fn budget_allows(&self, namespace: &str, name: &str) -> bool {
        let key = ObjectRef::new(name).within(namespace);
        self.budgets
            .get(namespace)
            .and_then(|b| b.store().get(&key))
            .is_none_or(|b| b.status.as_ref().is_some_and(|s| s.disruptions_allowed > 0))
    }

    /// The budgets of a namespace as last seen.
    pub fn budgets_in(&self, namespace: &str) -> Vec<Arc<PodDisruptionBudget>> {
        self.budgets
            .get(namespace)
            .map(|b| b.state())
            .unwrap_or_default()
    }

    /// Whether the disruption controller has counted the budget as it is now (or it is
    /// gone).
    pub fn budget_counted(&self, budget: &BudgetKey) -> bool {
        let key = ObjectRef::new(&budget.name).within(&budget.namespace);
        self.budgets
            .get(&budget.namespace)
            .and_then(|b| b.store().get(&key))
            .is_none_or(|b| {
                b.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation >= b.metadata.generation)
            })
    }

    /// A receiver that has seen everything so far; `changed()` on it returns at the
    /// next event. Take it before looking at the stores, wait on it after.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.view.subscribe()
    }
}

/// An evicted pod's replacement as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct ReplacementStatus {
    pub replaces: PodKey,
    pub pod: Option<PodKey>,
    pub node: Option<String>,
    pub stage: Option<Lifecycle>,
}

/// Which new pods (of the evicted pod's workload) can replace an evicted one.
pub enum Successor {
    /// Pods of the same controller (a ReplicaSet, a StatefulSet).
    SameController(Uid),
    /// Any pod of the workload, whatever ReplicaSet made it: after a `--surge`
    /// rollout restart the replacement comes from a new ReplicaSet.
    SameWorkload,
}

impl Successor {
    fn matches(&self, p: &Pod) -> bool {
        match self {
            Self::SameController(uid) => Uid::of_controller(p).as_ref() == Some(uid),
            Self::SameWorkload => true,
        }
    }
}

struct Entry {
    workload: WorkloadId,
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
    /// `workload` gives each pod's workload (pods without one are not followed), and
    /// whether it leaves by a rollout restart.
    pub fn new(
        drained: &NodeName,
        evicted: &[&Pod],
        workload: impl Fn(&Pod) -> Option<(WorkloadId, bool)>,
    ) -> Self {
        let entries = evicted
            .iter()
            .filter(|p| pod::finished_phase(p).is_none())
            .filter_map(|p| {
                let (id, surged) = workload(p)?;
                let successor = if surged {
                    Successor::SameWorkload
                } else {
                    Successor::SameController(Uid::of_controller(p)?)
                };
                Some(Entry {
                    workload: id,
                    successor,
                    status: ReplacementStatus {
                        replaces: PodKey::of(p),
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
    pub async fn follow(&self, watch: &Watches<'_>, on_event: &(dyn Fn(Event) + Sync)) {
        loop {
            let mut changes = watch.subscribe();
            self.look(watch, on_event);
            let _ = changes.changed().await;
        }
    }

    /// Follows replacements until every one is Ready.
    pub async fn until_ready(&self, watch: &Watches<'_>, on_event: &(dyn Fn(Event) + Sync)) {
        loop {
            let mut changes = watch.subscribe();
            if self.look(watch, on_event) {
                return;
            }
            let _ = changes.changed().await;
        }
    }

    pub fn statuses(&self) -> Vec<ReplacementStatus> {
        self.entries
            .lock()
            .map(|e| e.iter().map(|e| e.status.clone()).collect())
            .unwrap_or_default()
    }

    /// One look at the store; true when every replacement is Ready.
    fn look(&self, watch: &Watches<'_>, on_event: &(dyn Fn(Event) + Sync)) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let mut claimed: HashSet<PodKey> = entries
            .iter()
            .filter_map(|e| e.status.pod.clone())
            .collect();
        for entry in entries.iter_mut() {
            let pods = watch.pods_of(&entry.workload);
            let current = match &entry.status.pod {
                Some(key) => pods
                    .iter()
                    .find(|p| &PodKey::of(p) == key && !watch.was_there(p)),
                None => pods.iter().find(|p| {
                    !watch.was_there(p)
                        && !claimed.contains(&PodKey::of(p))
                        && entry.successor.matches(p)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            != Some(self.drained.as_str())
                }),
            };
            let Some(p) = current else { continue };
            let key = PodKey::of(p);
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
