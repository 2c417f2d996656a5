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

use crate::budget;
use crate::cluster::nodes;
use crate::cluster::view::{PAGE, View, Watched, Workloads, list_all};
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::placement::{self, Resources};
use crate::pod;
use crate::workload::{self, Workload};

#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    /// Pods in full, only those on the nodes being planned (the others count only
    /// through `usage`).
    pub pods: Vec<Pod>,
    /// What the scheduler has reserved on each node: the requests of its pods that
    /// have not finished. Empty when the read left placement out.
    pub usage: HashMap<String, Resources>,
    pub budgets: Vec<PodDisruptionBudget>,
    /// Deployments, ReplicaSets and StatefulSets by namespace.
    workloads: HashMap<String, Arc<Workloads>>,
    /// The view's watches of the budgets read, kept alive for a drain that follows.
    pub(crate) budget_watches: Vec<Arc<Watched<PodDisruptionBudget>>>,
}

/// What a live read covers besides the targets' pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only the target nodes, their pods, and the budgets and workloads of those pods.
    Targets,
    /// Also every node and every node's usage, which placement needs; the pods of
    /// other nodes are read page by page and reduced to their requests.
    Placement,
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
                Item::Node(n) => s.nodes.push(*n),
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

    /// Reads what a plan of `targets` needs through the view: see [`Reach`].
    pub async fn live(
        view: &View,
        targets: &[NodeName],
        reach: Reach,
    ) -> Result<Self, ClusterError> {
        let conn = view.conn();
        let mut s = Snapshot::default();
        // A process that keeps every pod's usage (the controller) reads it, and the
        // nodes, from its watches.
        let indexed = match (reach, view.pod_usage()) {
            (Reach::Placement, Some(usage)) => view
                .everywhere::<Node>("Nodes")
                .await?
                .map(|nodes| (usage, nodes)),
            _ => None,
        };
        match (reach, indexed) {
            (Reach::Targets, _) => {
                for node in targets {
                    s.nodes.push(nodes::get(conn, node).await?);
                    s.pods.extend(pods_on(conn, node).await?);
                }
            }
            (Reach::Placement, Some((usage, watched))) => {
                s.nodes = watched.state().iter().map(|n| (**n).clone()).collect();
                s.usage = usage.by_node();
                for node in targets {
                    s.pods.extend(pods_on(conn, node).await?);
                }
            }
            (Reach::Placement, None) => {
                let api: Api<Node> = Api::all(conn.client.clone());
                let keep: Vec<&str> = targets.iter().map(NodeName::as_str).collect();
                let nodes = list_all(&api, conn, "list nodes", ListParams::default());
                let (nodes, ()) = futures::try_join!(nodes, s.read_pods(conn, &keep))?;
                s.nodes = nodes;
                for n in &mut s.nodes {
                    n.metadata.managed_fields = None;
                    if let Some(status) = n.status.as_mut() {
                        status.images = None;
                    }
                }
            }
        }
        s.read_budgets_and_workloads(view).await?;
        Ok(s)
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
    async fn read_budgets_and_workloads(&mut self, view: &View) -> Result<(), ClusterError> {
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
            let (budgets, workloads) =
                futures::try_join!(view.budgets(&ns), view.workloads(&ns, &owners))?;
            Ok::<_, ClusterError>((ns, budgets, workloads))
        });
        for (ns, budgets, workloads) in futures::future::try_join_all(read).await? {
            self.budgets
                .extend(budgets.state().iter().map(|b| (**b).clone()));
            self.budget_watches.push(budgets);
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
