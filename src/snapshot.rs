//! Everything a plan looks at, read once: from the live cluster through the [`View`]
//! (scoped to the nodes planned), or from a dump made by
//! `kubectl get nodes,pods,pdb,deploy,rs,sts,ds -A -o json`, so a plan can be made
//! against production data with no access to production. Both reduce the pods of
//! other nodes to their requests while reading, the same way.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;

use crate::budget;
use crate::cluster::nodes;
pub use crate::cluster::view::Then;
use crate::cluster::view::{Held, PAGE, PodScope, View, Workloads, list_all};
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};
use crate::placement::{self, Resources};
use crate::pod;
use crate::workload::{self, Workload};

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Shared with the watch they came from where there is one (the controller's): a
    /// start reads every node without copying them.
    pub nodes: Vec<Arc<Node>>,
    /// Pods in full, only those on the nodes being planned (the others count only
    /// through `usage`).
    pub pods: Vec<Pod>,
    /// What the scheduler has reserved on each node: the requests of its pods that
    /// have not finished. Empty when the read left placement out.
    pub usage: HashMap<String, Resources>,
    pub budgets: Vec<PodDisruptionBudget>,
    /// Deployments, ReplicaSets and StatefulSets by namespace.
    workloads: HashMap<String, Arc<Workloads>>,
    /// The view's watches this read started or joined (budgets; before a drain also
    /// the node's pods and the Deployments), kept alive for a drain that follows.
    pub(crate) held: Vec<Held>,
    /// Set while `usage` covers only some nodes ([`Reach::Room`]); `None` when it
    /// covers every node.
    room: Option<RoomSearch>,
}

/// How far a [`Reach::Room`] read has gone: how many nodes' pods it has read, how many
/// it reads next, and how many it may read before one read of every pod costs less.
#[derive(Debug)]
struct RoomSearch {
    targets: Vec<String>,
    read: usize,
    batch: usize,
    budget: usize,
}

/// The nodes a [`Reach::Room`] read looks at first for room: the first page of nodes.
const NODE_PAGE: u32 = 100;

/// What a live read covers besides the targets' pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only the target nodes, their pods, and the budgets and workloads of those pods.
    Targets,
    /// Also every node and every node's usage, which placement needs; the pods of
    /// other nodes are read page by page and reduced to their requests.
    Placement,
    /// The targets, a first page of other nodes, and the usage of only as many of them
    /// as [`Snapshot::find_room`] needs to place the targets' pods: a drain's cost then
    /// grows with the pods it moves, not with the cluster. With a pod index, as
    /// [`Reach::Placement`].
    Room,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a kubectl JSON list")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One item of a kubectl list other than a pod, typed by its `kind`; other kinds are
/// ignored.
#[derive(serde::Deserialize)]
#[serde(tag = "kind")]
enum Item {
    Node(Box<Node>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    Deployment(Box<Deployment>),
    ReplicaSet(Box<ReplicaSet>),
    StatefulSet(Box<StatefulSet>),
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    metadata: RawListMeta,
}

#[derive(serde::Deserialize, Default)]
struct RawListMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// The few fields of an item read before deciding whether to parse it in full.
#[derive(serde::Deserialize)]
struct Probe {
    /// Absent in the items of a typed list (`/api/v1/pods`), where every item is a pod.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    spec: Option<ProbeSpec>,
    #[serde(default)]
    status: Option<ProbeStatus>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProbeSpec {
    node_name: Option<String>,
    #[serde(default)]
    containers: Vec<ProbeContainer>,
    #[serde(default)]
    init_containers: Vec<ProbeContainer>,
}

#[derive(serde::Deserialize)]
struct ProbeContainer {
    resources: Option<ResourceRequirements>,
}

#[derive(serde::Deserialize)]
struct ProbeStatus {
    phase: Option<String>,
}

impl Snapshot {
    /// Reads a dump. Pods on other nodes than `keep` are reduced to their resource
    /// requests as they are read, which keeps a 150,000-pod dump small in memory.
    pub fn from_file(path: &Path, keep: &[&str]) -> Result<Self, SnapshotError> {
        let shown = path.display().to_string();
        let parse = |source| SnapshotError::Parse {
            path: shown.clone(),
            source,
        };
        let text = std::fs::read(path).map_err(|source| SnapshotError::Read {
            path: shown.clone(),
            source,
        })?;
        let list: RawList = serde_json::from_slice(&text).map_err(parse)?;
        let mut s = Snapshot::default();
        let mut workloads: HashMap<String, Workloads> = HashMap::new();
        for raw in list.items {
            if s.absorb_pod(raw, keep).map_err(parse)? {
                continue;
            }
            match serde_json::from_str::<Item>(raw.get()).map_err(parse)? {
                Item::Node(n) => s.nodes.push(Arc::new(*n)),
                Item::PodDisruptionBudget(b) => s.budgets.push(*b),
                Item::Deployment(d) => {
                    let (w, name) = slot(&mut workloads, &d.metadata);
                    w.deployments.insert(name, *d);
                }
                Item::ReplicaSet(r) => {
                    let (w, name) = slot(&mut workloads, &r.metadata);
                    w.replica_sets.insert(name, *r);
                }
                Item::StatefulSet(x) => {
                    let (w, name) = slot(&mut workloads, &x.metadata);
                    w.stateful_sets.insert(name, *x);
                }
                Item::Other => {}
            }
        }
        s.workloads = workloads
            .into_iter()
            .map(|(ns, w)| (ns, Arc::new(w)))
            .collect();
        Ok(s)
    }

    /// Takes one item of a list if it is a pod: its requests count towards its node's
    /// usage, and it is kept in full only when it is on one of the `keep` nodes.
    /// Returns false for other kinds.
    fn absorb_pod(
        &mut self,
        raw: &serde_json::value::RawValue,
        keep: &[&str],
    ) -> Result<bool, serde_json::Error> {
        let probe: Probe = serde_json::from_str(raw.get())?;
        if probe.kind.as_deref().is_some_and(|k| k != "Pod") {
            return Ok(false);
        }
        let spec = probe.spec.unwrap_or_default();
        let Some(node) = spec.node_name else {
            return Ok(true);
        };
        if placement::holds(probe.status.and_then(|st| st.phase).as_deref()) {
            let r = placement::reserved(
                spec.containers.iter().map(|c| c.resources.as_ref()),
                spec.init_containers.iter().map(|c| c.resources.as_ref()),
            );
            let used = self.usage.entry(node.clone()).or_default();
            *used = used.plus(&r);
        }
        if keep.contains(&node.as_str()) {
            self.pods.push(serde_json::from_str(raw.get())?);
        }
        Ok(true)
    }

    /// Reads what a plan of `targets` needs through the view: see [`Reach`] and
    /// [`Then`].
    pub async fn live(
        view: &View,
        targets: &[NodeName],
        reach: Reach,
        then: Then,
    ) -> Result<Self, ClusterError> {
        let conn = view.conn();
        let mut s = Snapshot::default();
        // A process that keeps every pod's usage (the controller) reads it, and the
        // nodes, from its watches.
        let indexed = match view.pod_usage() {
            Some(usage) => view
                .everywhere::<Node>("Nodes")
                .await?
                .map(|nodes| (usage, nodes)),
            None => None,
        };
        match (reach, indexed) {
            (Reach::Targets, watched) => {
                for node in targets {
                    let known = watched
                        .as_ref()
                        .and_then(|(_, w)| w.store().get(&ObjectRef::new(node.as_str())));
                    s.nodes.push(match known {
                        Some(found) => found,
                        None => Arc::new(nodes::get(conn, node).await?),
                    });
                    s.read_pods_on(view, node, then).await?;
                }
            }
            (Reach::Room, None) => {
                for node in targets {
                    s.nodes.push(Arc::new(nodes::get(conn, node).await?));
                    s.read_pods_on(view, node, then).await?;
                }
                s.start_room_search(conn, targets).await?;
            }
            (Reach::Placement | Reach::Room, Some((usage, watched))) => {
                s.nodes = watched.state();
                s.usage = usage.by_node();
                for node in targets {
                    s.read_pods_on(view, node, then).await?;
                }
            }
            (Reach::Placement, None) => {
                let keep: Vec<&str> = targets.iter().map(NodeName::as_str).collect();
                s.read_everything(conn, &keep).await?;
            }
        }
        s.read_budgets_and_workloads(view, then).await?;
        Ok(s)
    }

    /// The node's pods in full: listed, or before a drain from the drain's watch of
    /// them, which is then held.
    async fn read_pods_on(
        &mut self,
        view: &View,
        node: &NodeName,
        then: Then,
    ) -> Result<(), ClusterError> {
        match then {
            Then::Look => self.pods.extend(pods_on(view.conn(), node).await?),
            Then::Drain => {
                let watched = view.pods(&PodScope::Node(node.clone())).await?;
                self.pods
                    .extend(watched.state().iter().map(|p| (**p).clone()));
                self.held.push(watched);
            }
        }
        Ok(())
    }

    /// Whether `usage` holds what this node has reserved.
    pub fn usage_known(&self, node: &str) -> bool {
        self.room.is_none() || self.usage.contains_key(node)
    }

    /// Every node, and every pod reduced to its node's usage; those on `keep` are also
    /// kept in full.
    async fn read_everything(
        &mut self,
        conn: &Connection,
        keep: &[&str],
    ) -> Result<(), ClusterError> {
        let api: Api<Node> = Api::all(conn.client.clone());
        let nodes = list_all(&api, conn, "list nodes", ListParams::default());
        self.usage.clear();
        let (nodes, ()) = futures::try_join!(nodes, self.read_pods(conn, keep))?;
        self.nodes = nodes.into_iter().map(|n| Arc::new(slim(n))).collect();
        self.room = None;
        Ok(())
    }

    /// The first page of nodes besides the targets, whose usage is read as needed.
    async fn start_room_search(
        &mut self,
        conn: &Connection,
        targets: &[NodeName],
    ) -> Result<(), ClusterError> {
        let api: Api<Node> = Api::all(conn.client.clone());
        let page = api
            .list(&ListParams::default().limit(NODE_PAGE))
            .await
            .map_err(|e| conn.error("list nodes", e))?;
        let more = page
            .metadata
            .remaining_item_count
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        let in_cluster = page.items.len() + more;
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        self.nodes.extend(
            page.items
                .into_iter()
                .filter(|n| !targets.iter().any(|t| n.metadata.name.as_ref() == Some(t)))
                .map(|n| Arc::new(slim(n))),
        );
        // The targets' pods tell how full a node is; past about as many node reads as
        // a read of every pod takes in pages, that read is cheaper.
        let per_node = self.pods.len().div_ceil(targets.len().max(1)).max(1);
        let pages = (in_cluster * per_node).div_ceil(PAGE as usize);
        self.room = Some(RoomSearch {
            targets,
            read: 0,
            batch: 2,
            budget: pages.max(4),
        });
        Ok(())
    }

    /// Reads the usage of more nodes where some of `unplaced` could go: the next few
    /// that are Ready, schedulable and eligible for one of them (twice as many each
    /// time), or, once that would cost more than reading every pod, every node and
    /// pod. Returns false when the usage of every node is already known.
    pub async fn find_room(
        &mut self,
        conn: &Connection,
        unplaced: &[&Pod],
    ) -> Result<bool, ClusterError> {
        let Some(room) = &self.room else {
            return Ok(false);
        };
        let mut candidates: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                let state = NodeState::of(n);
                !self.usage.contains_key(name)
                    && !room.targets.iter().any(|t| t == name)
                    && !state.cordoned
                    && state.readiness == Readiness::Ready
                    && unplaced.iter().any(|p| placement::eligible(p, n).is_ok())
            })
            .map(AsRef::as_ref)
            .collect();
        if candidates.is_empty() || room.read + room.batch > room.budget {
            // The targets' pods are held already (a drain may have narrowed them).
            self.read_everything(conn, &[]).await?;
            return Ok(true);
        }
        candidates.sort_by(|a, b| {
            let (fa, fb) = (placement::allocatable(a), placement::allocatable(b));
            fb.cpu_milli
                .total_cmp(&fa.cpu_milli)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let names: Vec<NodeName> = candidates
            .iter()
            .take(room.batch)
            .filter_map(|n| NodeName::parse(n.metadata.name.as_deref()?).ok())
            .collect();
        let read = futures::future::try_join_all(names.iter().map(|n| pods_on(conn, n))).await?;
        for (node, pods) in names.iter().zip(read) {
            let used = pods
                .iter()
                .filter(|p| placement::holds(p.status.as_ref().and_then(|s| s.phase.as_deref())))
                .fold(Resources::default(), |sum, p| {
                    sum.plus(&placement::requests(p))
                });
            self.usage.insert(node.to_string(), used);
        }
        if let Some(room) = self.room.as_mut() {
            room.read += names.len();
            room.batch *= 2;
        }
        Ok(true)
    }

    /// Every pod, page by page, through [`Self::absorb_pod`].
    async fn read_pods(&mut self, conn: &Connection, keep: &[&str]) -> Result<(), ClusterError> {
        let action = "list pods";
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let request = kube::core::Request::new("/api/v1/pods")
                .list(&params)
                .map_err(|e| conn.error(action, kube::Error::BuildRequest(e)))?;
            let text = conn
                .client
                .request_text(request)
                .await
                .map_err(|e| conn.error(action, e))?;
            let page: RawList = serde_json::from_str(&text)
                .map_err(|e| conn.error(action, kube::Error::SerdeError(e)))?;
            for raw in &page.items {
                self.absorb_pod(raw, keep)
                    .map_err(|e| conn.error(action, kube::Error::SerdeError(e)))?;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
    }

    /// The budgets and workloads of the namespaces the kept pods are in.
    async fn read_budgets_and_workloads(
        &mut self,
        view: &View,
        then: Then,
    ) -> Result<(), ClusterError> {
        // Each namespace with the controllers of its pods.
        let mut namespaces: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
        for p in &self.pods {
            let Some(ns) = p.metadata.namespace.clone() else {
                continue;
            };
            let owners = namespaces.entry(ns).or_default();
            if let Some(o) = pod::controller(p) {
                owners.push((o.kind.as_str(), o.name.as_str()));
            }
        }
        let read = namespaces.into_iter().map(|(ns, owners)| async move {
            let (budgets, (workloads, deployments)) =
                futures::try_join!(view.budgets(&ns), view.workloads(&ns, &owners, then))?;
            Ok::<_, ClusterError>((ns, budgets, workloads, deployments))
        });
        for (ns, budgets, workloads, deployments) in futures::future::try_join_all(read).await? {
            self.budgets
                .extend(budgets.state().iter().map(|b| (**b).clone()));
            self.held.push(budgets);
            self.held.extend(deployments);
            self.workloads.insert(ns, workloads);
        }
        Ok(())
    }

    /// The pod's workload: a Deployment (through its ReplicaSet), a StatefulSet or a
    /// bare ReplicaSet; `None` for other controllers (Jobs, custom ones).
    pub fn workload_of(&self, p: &Pod) -> Option<Workload> {
        let owner = pod::controller(p)?;
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let known = self.workloads.get(&ns)?;
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = known.replica_sets.get(&owner.name)?;
                match pod_owner(&rs.metadata, "Deployment") {
                    Some(d) => workload::from_deployment(known.deployments.get(&d)?),
                    None => workload::from_replica_set(rs),
                }
            }
            "StatefulSet" => workload::from_stateful_set(known.stateful_sets.get(&owner.name)?),
            _ => None,
        }
    }

    /// Budgets whose selector matches the pod. Those kordon shares for a drain stand
    /// for an implicit budget, which the plan works out itself.
    pub fn budgets_covering(&self, p: &Pod) -> Vec<&PodDisruptionBudget> {
        self.budgets
            .iter()
            .filter(|b| budget::covers(b, p) && !budget::is_shared(b))
            .collect()
    }
}

/// The pods bound to a node, in full.
async fn pods_on(conn: &Connection, node: &NodeName) -> Result<Vec<Pod>, ClusterError> {
    let api: Api<Pod> = Api::all(conn.client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    api.list(&lp)
        .await
        .map(|l| l.items)
        .map_err(|e| conn.error(format!("list pods on node {node}"), e))
}

/// A node without what placement never looks at: its image list and managed fields.
fn slim(mut node: Node) -> Node {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
    node
}

/// Where a dump's workload object goes: its namespace's workloads, under its name.
fn slot<'a>(
    workloads: &'a mut HashMap<String, Workloads>,
    meta: &ObjectMeta,
) -> (&'a mut Workloads, String) {
    (
        workloads
            .entry(meta.namespace.clone().unwrap_or_default())
            .or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn pod_owner(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.name.clone())
}
