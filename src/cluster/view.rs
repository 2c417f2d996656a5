//! One view of the cluster per process, scoped to the work and kept current by watches.
//!
//! Every drain of a process (one `drain`, each node of a `roll`) reads the cluster
//! through this view, and it is the only place that knows how things are fetched:
//! - the pods of a node being drained, through a `spec.nodeName` field selector;
//! - the pods of a workload involved, through the workload's label selector, reduced
//!   to what decisions read (see [`slim`]);
//! - the PodDisruptionBudgets of the namespaces involved;
//! - the workload objects (Deployments, ReplicaSets, StatefulSets) of those
//!   namespaces, read once;
//! - the Services and EndpointSlices of the namespaces whose pods a drain evicts, so a
//!   replacement counts once its Services route to it (see [`crate::endpoints`]).
//! - for the controller only ([`View::index_pods`]), every pod reduced to its node and
//!   requests, which placement forecasts read instead of paging through every pod, and
//!   the names of the Services of type LoadBalancer, which each drain asks about.
//!
//! Scoped watches are shared: two drains that need the pods of one workload share one
//! watch, which stops when the last of them lets go. Every event bumps one change
//! counter, so waiters wake on what the watches saw instead of polling.
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::ListParams;
use kube::core::Selector;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use super::load_balancers::{self, LoadBalancers};
use super::usage::PodUsage;
use super::{ClusterError, Connection};
use crate::names::NodeName;
use crate::workload::{Workload, WorkloadId, WorkloadKind};

/// What follows a read of a node's pods and workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing: a plan, a status. One list each.
    Look,
    /// A drain, which watches the node's pods and the Deployments involved anyway: the
    /// read starts those watches and their first list serves it too.
    Drain,
}

/// A watch kept alive by whoever holds it, whatever its kind.
pub type Held = Arc<dyn Any + Send + Sync>;

/// Which pods a scoped watch sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PodScope {
    /// The pods bound to one node, in full: the drain classifies and evicts them.
    Node(NodeName),
    /// The pods of one workload (its namespace and label selector), slimmed.
    Workload { namespace: String, selector: String },
}

impl PodScope {
    /// The scope of a workload's pods; `None` when its selector cannot be expressed
    /// as a label selector string (then it selects nothing we could watch).
    pub fn of_workload(w: &Workload) -> Option<Self> {
        let selector = Selector::try_from(w.selector.clone()).ok()?;
        Some(Self::Workload {
            namespace: w.id.namespace.clone(),
            selector: selector.to_string(),
        })
    }

    /// Few scopes that together cover the pods of these workloads, each with the
    /// workloads it covers. In one namespace, workloads selected by a single label of
    /// the same key (`app=a`, `app=b`: the common case) share one set-based selector
    /// (`app in (a,b)`), so a drain touching ten Deployments holds one pod watch, not
    /// ten. Other selectors get a scope of their own.
    pub fn of_workloads<'w>(workloads: &[&'w Workload]) -> Vec<(Self, Vec<&'w Workload>)> {
        let mut by_key: BTreeMap<(String, String), BTreeMap<String, Vec<&'w Workload>>> =
            BTreeMap::new();
        let mut scopes = Vec::new();
        for &w in workloads {
            match single_label(&w.selector) {
                Some((key, value)) => by_key
                    .entry((w.id.namespace.clone(), key.to_string()))
                    .or_default()
                    .entry(value.to_string())
                    .or_default()
                    .push(w),
                None => scopes.extend(Self::of_workload(w).map(|s| (s, vec![w]))),
            }
        }
        for ((namespace, key), values) in by_key {
            let values: Vec<_> = values.into_iter().collect();
            for chunk in values.chunks(MAX_VALUES) {
                let selector = match chunk {
                    [(value, _)] => format!("{key}={value}"),
                    _ => {
                        let list: Vec<&str> = chunk.iter().map(|(v, _)| v.as_str()).collect();
                        format!("{key} in ({})", list.join(","))
                    }
                };
                let covered = chunk
                    .iter()
                    .flat_map(|(_, ws)| ws.iter().copied())
                    .collect();
                scopes.push((
                    Self::Workload {
                        namespace: namespace.clone(),
                        selector,
                    },
                    covered,
                ));
            }
        }
        scopes
    }
}

impl PodScope {
    /// Whether this scope's watch sees every pod of the workload.
    fn covers(&self, w: &Workload) -> bool {
        let Self::Workload {
            namespace,
            selector,
        } = self
        else {
            return false;
        };
        if *namespace != w.id.namespace {
            return false;
        }
        match single_label(&w.selector) {
            Some((key, value)) => {
                *selector == format!("{key}={value}")
                    || selector
                        .strip_prefix(&format!("{key} in ("))
                        .and_then(|rest| rest.strip_suffix(')'))
                        .is_some_and(|list| list.split(',').any(|v| v == value))
            }
            None => Self::of_workload(w).as_ref() == Some(self),
        }
    }
}

/// Values in one set-based selector: keeps the request line short.
const MAX_VALUES: usize = 64;

/// The key and value of a selector that is exactly one `matchLabels` entry.
fn single_label(selector: &LabelSelector) -> Option<(&str, &str)> {
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    match selector.match_labels.as_ref()?.iter().collect::<Vec<_>>()[..] {
        [(key, value)] => Some((key, value)),
        _ => None,
    }
}

/// A running reflector; the watch stops when the last holder drops it.
pub struct Watched<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    task: tokio::task::JoinHandle<()>,
    /// True once the first list is in the store. Kept here rather than asked of the
    /// store: its `wait_until_ready` wakes only the last of several concurrent
    /// waiters, and two drains planned at once each wait for the same watch.
    ready: tokio::sync::watch::Receiver<bool>,
    /// Counts the watch's events: its holders wake on it (see [`Changes`](super::changes::Changes)).
    events: tokio::sync::watch::Receiver<u64>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Watched<K> {
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Wakes at this watch's next event; see [`Changes::of`](super::changes::Changes::of).
    pub fn events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.clone()
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> std::fmt::Debug for Watched<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watched")
    }
}

impl<K: kube::Resource<DynamicType = ()> + 'static> Drop for Watched<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type Registry<S, K> = Mutex<HashMap<S, Weak<Watched<K>>>>;

/// A kind a watch of the view can hold.
pub trait Watchable:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A namespaced kind the view watches per namespace.
pub trait Kept: Watchable + kube::Resource<Scope = kube::core::NamespaceResourceScope> {
    const WHAT: &'static str;
    fn registry(view: &View) -> &Registry<String, Self>;
}

macro_rules! kept {
    ($kind:ty, $what:literal, $field:ident) => {
        impl Kept for $kind {
            const WHAT: &'static str = $what;
            fn registry(view: &View) -> &Registry<String, Self> {
                &view.$field
            }
        }
    };
}
kept!(PodDisruptionBudget, "PodDisruptionBudgets", budgets);
kept!(Deployment, "Deployments", deployments);
kept!(ReplicaSet, "ReplicaSets", replica_sets);
kept!(StatefulSet, "StatefulSets", stateful_sets);
kept!(Service, "Services", services);
kept!(EndpointSlice, "EndpointSlices", endpoint_slices);

/// One namespace's workload objects as watched, of the kinds asked for only: a
/// namespace's ReplicaSets (every Deployment's history) can be many.
pub struct WatchedWorkloads {
    deployments: Option<Arc<Watched<Deployment>>>,
    replica_sets: Option<Arc<Watched<ReplicaSet>>>,
    stateful_sets: Option<Arc<Watched<StatefulSet>>>,
}

/// A workload object as last seen.
pub enum WorkloadObject {
    Deployment(Arc<Deployment>),
    ReplicaSet(Arc<ReplicaSet>),
    StatefulSet(Arc<StatefulSet>),
}

impl WatchedWorkloads {
    /// Wakes at the next event of any of these watches.
    pub fn events(&self) -> impl Iterator<Item = tokio::sync::watch::Receiver<u64>> {
        let deployments = self.deployments.as_ref().map(|w| w.events());
        let replica_sets = self.replica_sets.as_ref().map(|w| w.events());
        let stateful_sets = self.stateful_sets.as_ref().map(|w| w.events());
        [deployments, replica_sets, stateful_sets]
            .into_iter()
            .flatten()
    }

    /// The workload as last seen; `None` once deleted (or of a kind not watched).
    pub fn get(&self, id: &WorkloadId) -> Option<WorkloadObject> {
        fn get<K: Kept>(w: Option<&Arc<Watched<K>>>, id: &WorkloadId) -> Option<Arc<K>> {
            w?.store()
                .get(&reflector::ObjectRef::new(&id.name).within(&id.namespace))
        }
        match id.kind {
            WorkloadKind::Deployment => {
                get(self.deployments.as_ref(), id).map(WorkloadObject::Deployment)
            }
            WorkloadKind::ReplicaSet => {
                get(self.replica_sets.as_ref(), id).map(WorkloadObject::ReplicaSet)
            }
            WorkloadKind::StatefulSet => {
                get(self.stateful_sets.as_ref(), id).map(WorkloadObject::StatefulSet)
            }
        }
    }
}

/// The workload objects of one namespace, read once per view.
#[derive(Debug, Default)]
pub struct Workloads {
    pub deployments: HashMap<String, Deployment>,
    pub replica_sets: HashMap<String, ReplicaSet>,
    pub stateful_sets: HashMap<String, StatefulSet>,
    /// Pod controller kinds left unread because no pod asked for them (a dump has
    /// every kind).
    unread: Vec<&'static str>,
}

impl Workloads {
    /// Whether the read holds the pod controller `(kind, name)`, when it is of a kind
    /// it reads.
    fn knows(&self, (kind, name): &(&str, &str)) -> bool {
        if self.unread.contains(kind) {
            return false;
        }
        match *kind {
            "ReplicaSet" => self.replica_sets.contains_key(*name),
            "StatefulSet" => self.stateful_sets.contains_key(*name),
            _ => true,
        }
    }
}

pub struct View {
    conn: Connection,
    pods: Registry<PodScope, Pod>,
    budgets: Registry<String, PodDisruptionBudget>,
    deployments: Registry<String, Deployment>,
    replica_sets: Registry<String, ReplicaSet>,
    stateful_sets: Registry<String, StatefulSet>,
    services: Registry<String, Service>,
    endpoint_slices: Registry<String, EndpointSlice>,
    /// Nodes by label selector (`None`: every node).
    nodes: Registry<Option<String>, Node>,
    /// One cluster-wide watch per kind the view need not know (kordon's own
    /// resources), each kind's registry created on first use.
    everywhere: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    workloads: tokio::sync::Mutex<HashMap<String, (Instant, Arc<Workloads>)>>,
    /// What every pod holds on its node, once [`View::index_pods`] has started it.
    usage: std::sync::OnceLock<PodUsage>,
    /// Whether any Service is a load balancer, once [`View::index_pods`] has started it.
    load_balancers: std::sync::OnceLock<LoadBalancers>,
    /// Watches kept a while after their last use, once [`View::linger`] has set it.
    lingering: std::sync::OnceLock<Lingering>,
}

/// Each watch kept, and until when.
type KeptUntil = Vec<(Instant, Held)>;

/// Watches a long-lived process keeps for `after` past their last use: the controller's
/// next drain in the same namespaces (a plan's next node) finds its budgets, workloads
/// and Services watched already instead of listing them again.
struct Lingering {
    after: Duration,
    kept: Arc<Mutex<KeptUntil>>,
    pruner: tokio::task::JoinHandle<()>,
}

impl Lingering {
    fn start(after: Duration) -> Self {
        let kept: Arc<Mutex<KeptUntil>> = Arc::default();
        let pruned = Arc::downgrade(&kept);
        let pruner = tokio::spawn(async move {
            loop {
                tokio::time::sleep(after / 2).await;
                let Some(kept) = pruned.upgrade() else { return };
                if let Ok(mut k) = kept.lock() {
                    k.retain(|(until, _)| *until > Instant::now());
                }
            }
        });
        Self {
            after,
            kept,
            pruner,
        }
    }

    /// Keeps `watch` until `after` from now (longer if it is kept already).
    fn keep(&self, watch: Held) {
        let until = Instant::now() + self.after;
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        match kept.iter_mut().find(|(_, w)| Arc::ptr_eq(w, &watch)) {
            Some(entry) => entry.0 = until,
            None => kept.push((until, watch)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        self.pruner.abort();
    }
}

/// How long a read of a namespace's workloads serves.
const WORKLOADS_FRESH: Duration = Duration::from_secs(60);

/// Drops a node's image list: most of a real node's object, and no decision reads it.
fn slim_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// How long a new watch may take to deliver its first list.
const START_WITHIN: Duration = Duration::from_secs(30);

/// How long the first list of every pod may take (100,000 pods, a slow API server).
const LIST_EVERYTHING_WITHIN: Duration = Duration::from_secs(300);

/// Page size of lists that cover the whole cluster: big enough for few requests, small
/// enough that one page is a few MiB.
pub const PAGE: u32 = 1000;

impl View {
    pub fn new(conn: &Connection) -> Self {
        Self {
            conn: conn.clone(),
            pods: Mutex::default(),
            budgets: Mutex::default(),
            deployments: Mutex::default(),
            replica_sets: Mutex::default(),
            stateful_sets: Mutex::default(),
            services: Mutex::default(),
            endpoint_slices: Mutex::default(),
            nodes: Mutex::default(),
            everywhere: Mutex::default(),
            workloads: tokio::sync::Mutex::default(),
            usage: std::sync::OnceLock::new(),
            load_balancers: std::sync::OnceLock::new(),
            lingering: std::sync::OnceLock::new(),
        }
    }

    /// From now on, keeps what every pod holds on its node current by one watch (see
    /// [`PodUsage`]); placement forecasts read it instead of paging through every pod.
    /// Likewise whether any Service is a load balancer, which each drain asks. For a
    /// long-lived process that plans many nodes: the controller.
    pub async fn index_pods(&self) -> Result<(), ClusterError> {
        self.load_balancers
            .get_or_init(|| LoadBalancers::watch(&self.conn));
        if self.usage.get().is_none() {
            let usage = PodUsage::watch(&self.conn, LIST_EVERYTHING_WITHIN).await?;
            // Should two calls race, the second watch is dropped.
            let _ = self.usage.set(usage);
        }
        Ok(())
    }

    /// What every pod holds, when [`View::index_pods`] has started it.
    pub fn pod_usage(&self) -> Option<&PodUsage> {
        self.usage.get()
    }

    /// From now on, each watch stays open for `after` past its last use (see
    /// [`Lingering`]). For a long-lived process that drains one node after another.
    pub fn linger(&self, after: Duration) {
        self.lingering.get_or_init(|| Lingering::start(after));
    }

    /// Whether any Service is of type LoadBalancer: from the watch when
    /// [`View::index_pods`] started it, else one paged read.
    pub async fn any_load_balancer(&self) -> Result<bool, ClusterError> {
        match self.load_balancers.get() {
            Some(watched) => watched.any(&self.conn).await,
            None => load_balancers::any(&self.conn).await,
        }
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The pods of a scope, watched; shared with every other holder of the scope.
    pub async fn pods(&self, scope: &PodScope) -> Result<Arc<Watched<Pod>>, ClusterError> {
        let (api, config, slim_pods) = match scope {
            PodScope::Node(node) => (
                Api::all(self.conn.client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node}")),
                false,
            ),
            PodScope::Workload {
                namespace,
                selector,
            } => (
                Api::namespaced(self.conn.client.clone(), namespace),
                watcher::Config::default().labels(selector),
                true,
            ),
        };
        let what = match scope {
            PodScope::Node(node) => format!("pods on node {node}"),
            PodScope::Workload {
                namespace,
                selector,
            } => format!("pods in {namespace} matching {selector}"),
        };
        let modify: fn(&mut Pod) = if slim_pods { slim } else { |_| {} };
        self.shared(&self.pods, scope, &what, || (api, config), modify)
            .await
    }

    /// Watches that together see the pods of these workloads, each with the workloads
    /// it covers. A workload whose pods a live watch already sees (another drain of
    /// the roll holds it) shares that watch; the others are grouped as
    /// [`PodScope::of_workloads`] says. All start at once.
    pub async fn pods_of_workloads<'w>(
        &self,
        workloads: &[&'w Workload],
    ) -> Result<Vec<(Arc<Watched<Pod>>, Vec<&'w Workload>)>, ClusterError> {
        let live: Vec<PodScope> = self
            .pods
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, w)| w.strong_count() > 0)
                    .map(|(s, _)| s.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut scopes: Vec<(PodScope, Vec<&'w Workload>)> = Vec::new();
        let mut rest = Vec::new();
        for &w in workloads {
            match live.iter().find(|s| s.covers(w)) {
                Some(s) => match scopes.iter_mut().find(|(known, _)| known == s) {
                    Some((_, covered)) => covered.push(w),
                    None => scopes.push((s.clone(), vec![w])),
                },
                None => rest.push(w),
            }
        }
        scopes.extend(PodScope::of_workloads(&rest));
        let watched = try_join_all(scopes.iter().map(|(s, _)| self.pods(s))).await?;
        Ok(watched
            .into_iter()
            .zip(scopes)
            .map(|(w, (_, covered))| (w, covered))
            .collect())
    }

    /// The PodDisruptionBudgets of a namespace, watched.
    pub async fn budgets(
        &self,
        namespace: &str,
    ) -> Result<Arc<Watched<PodDisruptionBudget>>, ClusterError> {
        self.objects(namespace).await
    }

    /// The objects of one kind in a namespace (budgets, or workloads whose recovery a
    /// roll waits for), watched and shared: a roll's nodes share one watch per kind
    /// and namespace instead of one per workload and node.
    pub async fn objects<K: Kept>(&self, namespace: &str) -> Result<Arc<Watched<K>>, ClusterError> {
        let api = Api::namespaced(self.conn.client.clone(), namespace);
        self.shared(
            K::registry(self),
            &namespace.to_string(),
            &format!("{} in {namespace}", K::WHAT),
            || (api, watcher::Config::default()),
            |k: &mut K| k.meta_mut().managed_fields = None,
        )
        .await
    }

    /// The namespace's workload objects of `kinds`, watched (shared like every watch).
    pub async fn workload_objects(
        &self,
        namespace: &str,
        kinds: &[WorkloadKind],
    ) -> Result<WatchedWorkloads, ClusterError> {
        async fn kind<K: Kept>(
            view: &View,
            namespace: &str,
            wanted: bool,
        ) -> Result<Option<Arc<Watched<K>>>, ClusterError> {
            match wanted {
                true => view.objects(namespace).await.map(Some),
                false => Ok(None),
            }
        }
        let wants = |k| kinds.contains(&k);
        let (deployments, replica_sets, stateful_sets) = futures::try_join!(
            kind(self, namespace, wants(WorkloadKind::Deployment)),
            kind(self, namespace, wants(WorkloadKind::ReplicaSet)),
            kind(self, namespace, wants(WorkloadKind::StatefulSet)),
        )?;
        Ok(WatchedWorkloads {
            deployments,
            replica_sets,
            stateful_sets,
        })
    }

    /// Every object of a kind that may not be installed (kordon's CRDs), in every
    /// namespace, watched: what a roll or a plan counts as out, read from memory rather
    /// than listed again before each decision. `None` when the API server does not
    /// serve the kind. `what` names the kind in errors (`NodeMaintenances`).
    pub async fn everywhere<K: Watchable>(
        &self,
        what: &str,
    ) -> Result<Option<Arc<Watched<K>>>, ClusterError> {
        let registry = self.registry_of::<K>();
        let live = registry
            .lock()
            .is_ok_and(|r| r.get(&()).is_some_and(|w| w.strong_count() > 0));
        let api: Api<K> = Api::all(self.conn.client.clone());
        // Without the CRDs the watch would retry its list until it timed out: ask once,
        // unless a watch of the kind runs already.
        if !live {
            match api.list_metadata(&ListParams::default().limit(1)).await {
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(self.conn.error(format!("list {what}"), e)),
                Ok(_) => {}
            }
        }
        self.shared(
            &registry,
            &(),
            what,
            || (api, watcher::Config::default()),
            |k: &mut K| {
                k.meta_mut().managed_fields = None;
                if let Some(node) = (k as &mut dyn Any).downcast_mut::<Node>() {
                    slim_node(node);
                }
            },
        )
        .await
        .map(Some)
    }

    /// The nodes a label selector selects (`None`: every node), watched: a roll reads
    /// what happens to its own nodes from memory, and pays for those nodes only.
    pub async fn nodes(&self, selector: Option<&str>) -> Result<Arc<Watched<Node>>, ClusterError> {
        let scope = selector.map(str::to_string);
        let config = match &scope {
            Some(s) => watcher::Config::default().labels(s),
            None => watcher::Config::default(),
        };
        let api = Api::all(self.conn.client.clone());
        self.shared(
            &self.nodes,
            &scope,
            "nodes",
            || (api, config),
            |n: &mut Node| {
                n.metadata.managed_fields = None;
                slim_node(n);
            },
        )
        .await
    }

    /// The registry of [`View::everywhere`]'s watches of `K`.
    fn registry_of<K: kube::Resource<DynamicType = ()> + Send + Sync + 'static>(
        &self,
    ) -> Arc<Registry<(), K>> {
        let Ok(mut all) = self.everywhere.lock() else {
            return Arc::default();
        };
        all.entry(TypeId::of::<K>())
            .or_insert_with(|| Arc::new(Registry::<(), K>::default()))
            .clone()
            .downcast()
            .unwrap_or_default()
    }

    /// The Deployments, ReplicaSets and StatefulSets of a namespace that `owners` (the
    /// pods' controllers, as kind and name) need: ReplicaSets and their Deployments
    /// only for pods of ReplicaSets, StatefulSets only for theirs. A roll's drains
    /// share one read, renewed after [`WORKLOADS_FRESH`] so that replica counts changed
    /// meanwhile (an autoscaler) reach the implicit budgets, and at once when it lacks
    /// an owner (a rollout's new ReplicaSet): a pod whose workload is unknown has no
    /// implicit budget. Before a drain the Deployments come from the watch the drain
    /// goes on with, returned to be held until then.
    pub async fn workloads(
        &self,
        namespace: &str,
        owners: &[(&str, &str)],
        then: Then,
    ) -> Result<(Arc<Workloads>, Option<Held>), ClusterError> {
        let mut cache = self.workloads.lock().await;
        if let Some((read, w)) = cache.get(namespace)
            && read.elapsed() < WORKLOADS_FRESH
            && owners.iter().all(|o| w.knows(o))
        {
            return Ok((w.clone(), None));
        }
        let asked = |kind| owners.iter().any(|(k, _)| *k == kind);
        let (replica_sets, stateful_sets) = (asked("ReplicaSet"), asked("StatefulSet"));
        let deployments = async {
            match (replica_sets, then) {
                (false, _) => Ok((Vec::new(), None)),
                (true, Then::Look) => Ok((self.list(namespace, "deployments").await?, None)),
                (true, Then::Drain) => {
                    let watched = self.objects::<Deployment>(namespace).await?;
                    let items = watched.state().iter().map(|d| (**d).clone()).collect();
                    Ok((items, Some(watched as Held)))
                }
            }
        };
        let ((deployments, held), replica_sets_read, stateful_sets_read) = futures::try_join!(
            deployments,
            self.list_if(replica_sets, namespace, "replicasets"),
            self.list_if(stateful_sets, namespace, "statefulsets"),
        )?;
        let unread = [
            (!replica_sets).then_some("ReplicaSet"),
            (!stateful_sets).then_some("StatefulSet"),
        ];
        let w = Arc::new(Workloads {
            deployments: named(deployments),
            replica_sets: named(replica_sets_read),
            stateful_sets: named(stateful_sets_read),
            unread: unread.into_iter().flatten().collect(),
        });
        cache.insert(namespace.to_string(), (Instant::now(), w.clone()));
        Ok((w, held))
    }

    /// [`View::list`] when `wanted`, else nothing.
    async fn list_if<K>(
        &self,
        wanted: bool,
        namespace: &str,
        what: &str,
    ) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
    {
        match wanted {
            true => self.list(namespace, what).await,
            false => Ok(Vec::new()),
        }
    }

    async fn list<K>(&self, namespace: &str, what: &str) -> Result<Vec<K>, ClusterError>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned,
    {
        list_all(
            &Api::namespaced(self.conn.client.clone(), namespace),
            &self.conn,
            &format!("list {what} in {namespace}"),
            ListParams::default(),
        )
        .await
    }

    /// Returns the live watch of `scope`, or starts one and waits for its first list.
    async fn shared<S, K>(
        &self,
        registry: &Registry<S, K>,
        scope: &S,
        what: &str,
        source: impl FnOnce() -> (Api<K>, watcher::Config),
        modify: fn(&mut K),
    ) -> Result<Arc<Watched<K>>, ClusterError>
    where
        S: std::hash::Hash + Eq + Clone,
        K: Watchable,
    {
        if let Some(live) = registry
            .lock()
            .ok()
            .and_then(|r| r.get(scope).and_then(Weak::upgrade))
        {
            self.keep(&live);
            let mut ready = live.ready.clone();
            let started = tokio::time::timeout(START_WITHIN, ready.wait_for(|r| *r)).await;
            return match started {
                Ok(Ok(_)) => Ok(live),
                _ => Err(ClusterError::Unreachable {
                    server: self.conn.server.clone(),
                    reason: format!(
                        "could not start watching {what} within {}",
                        humantime::format_duration(START_WITHIN)
                    ),
                }),
            };
        }
        let (api, config) = source();
        let (store, writer) = reflector::store();
        let stream = watcher(api, config)
            .backoff(super::connect::Reconnect::default())
            .modify(modify)
            .reflect(writer);
        let (changes, events) = tokio::sync::watch::channel(0);
        let outage = self.conn.outage.clone();
        let (listed, ready) = tokio::sync::watch::channel(false);
        let watching = what.to_string();
        let task = tokio::spawn(async move {
            stream
                .for_each(|event| {
                    match event {
                        Ok(event) => {
                            outage.back();
                            if matches!(event, watcher::Event::InitDone) {
                                listed.send_replace(true);
                            }
                            changes.send_modify(|n| *n += 1);
                        }
                        Err(e) if ClusterError::watch_lost_server(&e) => {
                            outage.lost();
                            tracing::debug!("watch: {e}")
                        }
                        // The watcher lists again by itself.
                        Err(watcher::Error::WatchError(s)) if s.code == 410 => {
                            tracing::debug!(
                                "watch expired (410 Gone), listing {watching} again: {s}"
                            )
                        }
                        Err(e) => tracing::warn!("watch: {e}"),
                    }
                    futures::future::ready(())
                })
                .await;
        });
        let watched = Arc::new(Watched {
            store,
            task,
            ready,
            events,
        });
        if let Ok(mut r) = registry.lock() {
            r.insert(scope.clone(), Arc::downgrade(&watched));
        }
        self.keep(&watched);
        let mut ready = watched.ready.clone();
        match tokio::time::timeout(START_WITHIN, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(watched),
            _ => Err(ClusterError::Unreachable {
                server: self.conn.server.clone(),
                reason: format!(
                    "could not start watching {what} within {}",
                    humantime::format_duration(START_WITHIN)
                ),
            }),
        }
    }

    /// Keeps a watch just used for a while, when the process lingers.
    fn keep<K: Watchable>(&self, watch: &Arc<Watched<K>>) {
        if let Some(lingering) = self.lingering.get() {
            lingering.keep(watch.clone());
        }
    }
}

fn named<K: kube::Resource>(items: Vec<K>) -> HashMap<String, K> {
    items
        .into_iter()
        .map(|mut k| {
            k.meta_mut().managed_fields = None;
            (k.meta().name.clone().unwrap_or_default(), k)
        })
        .collect()
}

/// Every item of a list, read page by page, so that no single response holds the
/// whole cluster.
pub async fn list_all<K>(
    api: &Api<K>,
    conn: &Connection,
    action: &str,
    params: ListParams,
) -> Result<Vec<K>, ClusterError>
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned,
{
    let mut items = Vec::new();
    for_each_page(api, conn, action, params, |page| items.extend(page)).await?;
    Ok(items)
}

/// Hands each page of a list to `take` as it arrives: memory holds one page at a time.
pub async fn for_each_page<K>(
    api: &Api<K>,
    conn: &Connection,
    action: &str,
    params: ListParams,
    mut take: impl FnMut(Vec<K>),
) -> Result<(), ClusterError>
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned,
{
    let mut params = params.limit(PAGE);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| conn.error(action.to_string(), e))?;
        take(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Keeps of a workload's pod what the engine reads (identity, labels, owner, node,
/// readiness, lifecycle stage) and drops the rest (the spec's containers and volumes,
/// managed fields), so watching a big workload stays cheap.
fn slim(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    if let Some(spec) = p.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name.take(),
            ..Default::default()
        };
    }
    if let Some(status) = p.status.as_mut() {
        status.init_container_statuses = None;
        status.pod_ips = None;
        status.host_ips = None;
        if let Some(cs) = status.container_statuses.as_mut() {
            for c in cs {
                c.image = String::new();
                c.image_id = String::new();
                c.last_state = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadId;

    #[test]
    fn a_read_that_left_a_kind_out_does_not_answer_for_it() {
        let read = Workloads {
            unread: vec!["StatefulSet"],
            ..Workloads::default()
        };
        assert!(!read.knows(&("StatefulSet", "db")), "so it is read again");
        assert!(!read.knows(&("ReplicaSet", "web-1")), "not in the read");
        assert!(read.knows(&("Job", "once")), "a kind no read covers");
    }

    #[tokio::test]
    async fn a_lingering_watch_outlives_its_last_use_by_the_linger_and_no_more() {
        let lingering = Lingering::start(Duration::from_millis(200));
        let watch: Held = Arc::new(());
        let gone = Arc::downgrade(&watch);
        lingering.keep(watch.clone());
        lingering.keep(watch.clone());
        assert_eq!(lingering.kept.lock().unwrap().len(), 1, "kept once");
        drop(watch);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(gone.upgrade().is_some(), "kept past its last holder");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(gone.upgrade().is_none(), "let go once the linger passed");
    }

    fn workload(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            id: WorkloadId {
                kind: crate::workload::WorkloadKind::Deployment,
                namespace: namespace.into(),
                name: name.into(),
            },
            selector: LabelSelector {
                match_labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            replicas: 4,
            max_unavailable: 1,
            can_surge: true,
        }
    }

    fn scope(namespace: &str, selector: &str) -> PodScope {
        PodScope::Workload {
            namespace: namespace.into(),
            selector: selector.into(),
        }
    }

    #[test]
    fn a_workload_scope_is_its_namespace_and_selector_as_the_api_reads_it() {
        let w = workload("shop", "web", &[("app", "web")]);
        assert_eq!(
            PodScope::of_workload(&w),
            Some(PodScope::Workload {
                namespace: "shop".into(),
                selector: "app=web".into()
            })
        );
    }

    #[test]
    fn workloads_selected_by_one_label_of_one_key_share_a_set_based_scope() {
        let web = workload("shop", "web", &[("app", "web")]);
        let api = workload("shop", "api", &[("app", "api")]);
        let db = workload("shop", "db", &[("app", "db"), ("tier", "data")]);
        let other = workload("ops", "log", &[("app", "log")]);
        let names = |ws: &[&Workload]| ws.iter().map(|w| w.id.name.clone()).collect::<Vec<_>>();
        let scopes: Vec<_> = PodScope::of_workloads(&[&web, &api, &db, &other])
            .into_iter()
            .map(|(s, ws)| (s, names(&ws)))
            .collect();
        assert_eq!(
            scopes,
            vec![
                (scope("shop", "app=db,tier=data"), vec!["db".to_string()]),
                (scope("ops", "app=log"), vec!["log".to_string()]),
                (
                    scope("shop", "app in (api,web)"),
                    vec!["api".to_string(), "web".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn a_set_based_scope_covers_each_workload_it_lists_and_no_other() {
        let web = workload("shop", "web", &[("app", "web")]);
        let db = workload("shop", "db", &[("app", "db"), ("tier", "data")]);
        let set = scope("shop", "app in (api,web)");
        assert!(set.covers(&web));
        assert!(!set.covers(&workload("shop", "webx", &[("app", "webx")])));
        assert!(!set.covers(&workload("ops", "web", &[("app", "web")])));
        assert!(scope("shop", "app=web").covers(&web));
        assert!(scope("shop", "app=db,tier=data").covers(&db));
        assert!(!set.covers(&db));
    }
}
