//! Watching instead of polling the API: the view's scoped watches (the drained node's
//! pods, the pods of each workload involved, the workloads and budgets of each
//! namespace involved) answer "is the pod with this UID gone?", "is its workload
//! rolling out, and how many of its pods serve?", "has a budget moved?", and every
//! waiter wakes on the view's change signal. The Services and EndpointSlices of the
//! namespaces involved say whether a Ready pod is reached yet (see [`endpoints`]).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use serde::Serialize;

use super::Event;
use super::step::{self, Recovery};
use crate::budget::{self, BudgetKey};
use crate::cluster::ClusterError;
use crate::cluster::changes::Changes;
use crate::cluster::view::{PodScope, View, Watched, WatchedWorkloads, WorkloadObject};
use crate::endpoints::{self, Counted, Reach};
use crate::names::NodeName;
use crate::pod::{self, Lifecycle, PodKey, Uid};
use crate::workload::{self, Rollout, Workload, WorkloadId, WorkloadKind};

/// A namespace's Services and EndpointSlices, watched.
type Routes = (Arc<Watched<Service>>, Arc<Watched<EndpointSlice>>);

/// The watches one drain holds; dropping them lets the view stop what no one else uses.
pub struct Watches {
    node: Arc<Watched<Pod>>,
    /// Each workload's pods: a watch that may cover other workloads too, and the
    /// selector that picks its own. A workload whose selector kube cannot convert is left
    /// out: an invalid selector selects no pods, as the API server's controllers treat it.
    workloads: HashMap<WorkloadId, (Arc<Watched<Pod>>, Selector)>,
    budgets: HashMap<String, Arc<Watched<PodDisruptionBudget>>>,
    /// The workload objects of each namespace involved, of the kinds involved: their
    /// current spec and whether they roll out.
    objects: HashMap<String, WatchedWorkloads>,
    /// The Services and EndpointSlices of each namespace whose pods are evicted, where
    /// kordon may watch them.
    endpoints: HashMap<String, Routes>,
    /// UIDs of the workloads' pods when the drain began: a replacement is not among them.
    initial: HashSet<Uid>,
    /// When each replacement was first seen listed by all its Services.
    listed_since: Mutex<HashMap<Uid, Instant>>,
    /// The earliest moment a pod not counted yet may count by time alone.
    due: Mutex<Option<Instant>>,
}

impl Watches {
    /// Starts every watch at once: a drain waits for the slowest first list, not
    /// for the sum of them. `exposed` are the namespaces whose Services and
    /// EndpointSlices are watched.
    pub async fn start(
        view: &View,
        node: &NodeName,
        workloads: &[&Workload],
        namespaces: &[String],
        exposed: &[String],
    ) -> Result<Self, ClusterError> {
        let node_scope = PodScope::Node(node.clone());
        let budget_watches = try_join_all(namespaces.iter().map(|ns| view.budgets(ns)));
        let mut kinds: HashMap<&str, Vec<WorkloadKind>> = HashMap::new();
        for w in workloads {
            kinds
                .entry(w.id.namespace.as_str())
                .or_default()
                .push(w.id.kind);
        }
        let object_watches = try_join_all(kinds.iter().map(|(ns, kinds)| async move {
            Ok::<_, ClusterError>((ns.to_string(), view.workload_objects(ns, kinds).await?))
        }));
        let endpoint_watches = try_join_all(exposed.iter().map(|ns| async move {
            let (services, slices) = futures::try_join!(view.objects(ns), view.objects(ns))?;
            Ok::<_, ClusterError>((ns.clone(), (services, slices)))
        }));
        let (node, pods, budget_watches, objects, endpoints) = futures::try_join!(
            view.pods(&node_scope),
            view.pods_of_workloads(workloads),
            budget_watches,
            object_watches,
            endpoint_watches,
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
            node,
            workloads: watched,
            budgets: namespaces.iter().cloned().zip(budget_watches).collect(),
            objects: objects.into_iter().collect(),
            endpoints: endpoints.into_iter().collect(),
            initial,
            listed_since: Mutex::default(),
            due: Mutex::default(),
        })
    }

    /// Which Services select the pod, and which of them list it as a ready endpoint.
    pub fn reach(&self, p: &Pod) -> Reach {
        let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
        match self.endpoints.get(namespace) {
            Some((services, slices)) => {
                let (services, slices) = (services.state(), slices.state());
                endpoints::reach(
                    p,
                    services.iter().map(AsRef::as_ref),
                    slices.iter().map(AsRef::as_ref),
                )
            }
            None => Reach::default(),
        }
    }

    /// Whether a Ready pod serves: its Services route to it, or will have by now (see
    /// [`endpoints::counted`]). A pod not counted yet makes [`Watches::changed`] wake
    /// when it may count.
    pub fn serves(&self, p: &Pod) -> bool {
        let reach = self.reach(p);
        let now = Instant::now();
        let listed_for = match (Uid::of(p), self.was_there(p)) {
            (Some(uid), false) => self.listed_since.lock().ok().and_then(|mut since| {
                if !reach.unlisted.is_empty() || reach.listed.is_empty() {
                    since.remove(&uid);
                    return None;
                }
                Some(now.duration_since(*since.entry(uid).or_insert(now)))
            }),
            _ => None,
        };
        match endpoints::counted(&reach, listed_for, pod::ready_for(p)) {
            Counted::Yes => true,
            Counted::After(left) => {
                if let Ok(mut due) = self.due.lock() {
                    let at = now + left;
                    *due = Some(due.filter(|d| *d > now).map_or(at, |d| d.min(at)));
                }
                false
            }
        }
    }

    /// Waits until the view changes, a pod not counted yet may count, or `at_most`
    /// passes. `changes` comes from [`Watches::subscribe`], taken before the last look.
    pub async fn changed(&self, changes: &mut Changes, at_most: Duration) {
        let now = Instant::now();
        let due = self
            .due
            .lock()
            .ok()
            .and_then(|d| *d)
            .filter(|d| *d > now)
            .map_or(at_most, |d| (d - now).min(at_most));
        let _ = tokio::time::timeout(due, changes.changed()).await;
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

    /// The workload as watched now, with its rollout if one is under way; `None` once
    /// it is deleted.
    /// `pods` are its pods as [`Watches::pods_of`] gives them.
    pub fn workload(
        &self,
        id: &WorkloadId,
        pods: &[Arc<Pod>],
    ) -> Option<(Workload, Option<Rollout>)> {
        match self.objects.get(&id.namespace)?.get(id)? {
            WorkloadObject::Deployment(d) => {
                let rollout = workload::deployment_rollout(&d, pods);
                Some((workload::from_deployment(&d)?, rollout))
            }
            WorkloadObject::StatefulSet(s) => {
                let rollout = workload::stateful_set_rollout(&s, pods);
                Some((workload::from_stateful_set(&s)?, rollout))
            }
            WorkloadObject::ReplicaSet(rs) => {
                let rollout = workload::replica_set_rollout(&rs);
                Some((workload::from_replica_set(&rs)?, rollout))
            }
        }
    }

    /// Whether the workload is back at the availability its budget requires (see
    /// [`step::recovery`]), judged by the budgets of the user's that cover its pods.
    pub fn recovery(&self, planned: &Workload, drained: &NodeName) -> Recovery {
        let pods = self.pods_of(&planned.id);
        let now = self.workload(&planned.id, &pods).map(|(w, _)| w);
        let budgets: Vec<Arc<PodDisruptionBudget>> = self
            .budgets_in(&planned.id.namespace)
            .into_iter()
            .filter(|b| !budget::is_shared(b))
            .filter(|b| pods.iter().any(|p| budget::covers(b, p)))
            .collect();
        step::recovery(now.as_ref(), &pods, &budgets, drained, &|p| self.serves(p))
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

    /// Wakes at the next event of this drain's own watches, which have been seen so
    /// far. Take it before looking at the stores, wait on it after.
    pub fn subscribe(&self) -> Changes {
        let workloads = self.workloads.values().map(|(pods, _)| pods.events());
        let budgets = self.budgets.values().map(|b| b.events());
        let objects = self.objects.values().flat_map(WatchedWorkloads::events);
        let endpoints = (self.endpoints.values())
            .flat_map(|(services, slices)| [services.events(), slices.events()]);
        let all = std::iter::once(self.node.events())
            .chain(workloads)
            .chain(budgets)
            .chain(objects)
            .chain(endpoints);
        Changes::of(all)
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

struct Entry {
    workload: WorkloadId,
    status: ReplacementStatus,
}

/// Pairs each evicted pod that has a workload with a new pod of that workload, first
/// come first served, whichever controller made it (a rollout's new ReplicaSet, a
/// `--surge` restart), and follows it to Ready. One that goes away before it is Ready
/// (another drain evicted it, a rollout replaced it) is let go and another is taken:
/// this is what the drain shows, not what it waits for (see [`step::recovery`]).
pub struct Replacements {
    drained: NodeName,
    entries: Mutex<Vec<Entry>>,
}

impl Replacements {
    /// `workload` gives each pod's workload (pods without one are not followed).
    pub fn new(
        drained: &NodeName,
        evicted: &[&Pod],
        workload: impl Fn(&Pod) -> Option<WorkloadId>,
    ) -> Self {
        let entries = evicted
            .iter()
            .filter(|p| pod::finished_phase(p).is_none())
            .filter_map(|p| {
                Some(Entry {
                    workload: workload(p)?,
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
    pub async fn follow(&self, watch: &Watches, on_event: &(dyn Fn(Event) + Sync)) {
        loop {
            let mut changes = watch.subscribe();
            self.look(watch, on_event);
            let _ = changes.changed().await;
        }
    }

    pub fn statuses(&self) -> Vec<ReplacementStatus> {
        self.entries
            .lock()
            .map(|e| e.iter().map(|e| e.status.clone()).collect())
            .unwrap_or_default()
    }

    /// One look at the store.
    pub fn look(&self, watch: &Watches, on_event: &(dyn Fn(Event) + Sync)) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let mut claimed: HashSet<PodKey> = entries
            .iter()
            .filter_map(|e| e.status.pod.clone())
            .collect();
        for entry in entries.iter_mut() {
            let pods = watch.pods_of(&entry.workload);
            let new =
                |p: &&Arc<Pod>| !watch.was_there(p) && p.metadata.deletion_timestamp.is_none();
            let followed = entry
                .status
                .pod
                .as_ref()
                .and_then(|key| pods.iter().filter(new).find(|p| &PodKey::of(p) == key));
            let current = followed.or_else(|| {
                pods.iter().filter(new).find(|p| {
                    !claimed.contains(&PodKey::of(p))
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                            != Some(self.drained.as_str())
                })
            });
            let Some(p) = current else {
                // Gone before it was Ready: let it go, and say so once.
                if let Some(lost) = entry.status.pod.take() {
                    let node = entry.status.node.take();
                    entry.status.stage = Some(Lifecycle::Terminated);
                    on_event(Event::Replacement {
                        replaces: entry.status.replaces.clone(),
                        pod: lost,
                        stage: Lifecycle::Terminated,
                        node,
                    });
                }
                continue;
            };
            let key = PodKey::of(p);
            claimed.insert(key.clone());
            let stage = Lifecycle::of(p);
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            if entry.status.pod.as_ref() != Some(&key)
                || entry.status.stage != Some(stage)
                || entry.status.node != node
            {
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
    }
}
