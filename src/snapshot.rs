//! Everything a plan looks at, read once: from the live cluster, or from a dump made by
//! `kubectl get nodes,pods,pdb,deploy,rs,sts,ds -A -o json`, so a plan can be made
//! against production data with no access to production.
use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;
use serde::de::DeserializeOwned;

use crate::budget;
use crate::cluster::{ClusterError, Connection};
use crate::plan::placement::{self, Resources};
use crate::pod;
use crate::workload::{self, Workload};

#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    /// Pods in full: every pod from the live cluster; from a dump, only those on the
    /// nodes being planned (the others count only through `usage`).
    pub pods: Vec<Pod>,
    /// What the scheduler has reserved on each node: the requests of its pods that
    /// have not finished.
    pub usage: HashMap<String, Resources>,
    pub budgets: Vec<PodDisruptionBudget>,
    deployments: HashMap<(String, String), Deployment>,
    replica_sets: HashMap<(String, String), ReplicaSet>,
    stateful_sets: HashMap<(String, String), StatefulSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a kubectl JSON list: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
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
}

/// The few fields of an item read before deciding whether to parse it in full.
#[derive(serde::Deserialize)]
struct Probe {
    kind: String,
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
        for raw in list.items {
            let probe: Probe = serde_json::from_str(raw.get()).map_err(parse)?;
            if probe.kind == "Pod" {
                let spec = probe.spec.unwrap_or_default();
                let Some(node) = spec.node_name else { continue };
                if probe
                    .status
                    .and_then(|st| st.phase)
                    .is_some_and(|p| p == "Succeeded" || p == "Failed")
                {
                    continue;
                }
                let r = placement::reserved(
                    spec.containers.iter().map(|c| c.resources.as_ref()),
                    spec.init_containers.iter().map(|c| c.resources.as_ref()),
                );
                let used = s.usage.entry(node.clone()).or_default();
                *used = used.plus(&r);
                if keep.contains(&node.as_str()) {
                    s.pods.push(serde_json::from_str(raw.get()).map_err(parse)?);
                }
                continue;
            }
            match serde_json::from_str::<Item>(raw.get()).map_err(parse)? {
                Item::Node(n) => s.nodes.push(*n),
                Item::PodDisruptionBudget(b) => s.budgets.push(*b),
                Item::Deployment(d) => {
                    s.deployments.insert(key(&d.metadata), *d);
                }
                Item::ReplicaSet(r) => {
                    s.replica_sets.insert(key(&r.metadata), *r);
                }
                Item::StatefulSet(x) => {
                    s.stateful_sets.insert(key(&x.metadata), *x);
                }
                Item::Other => {}
            }
        }
        Ok(s)
    }

    /// Lists what a plan needs, cluster-wide.
    pub async fn live(conn: &Connection) -> Result<Self, ClusterError> {
        let mut s = Self::workloads(conn).await?;
        s.nodes = list(conn, "nodes").await?;
        s.pods = list(conn, "pods").await?;
        for p in s.pods.iter().filter(|p| pod::finished_phase(p).is_none()) {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                let used = s.usage.entry(node).or_default();
                *used = used.plus(&placement::requests(p));
            }
        }
        Ok(s)
    }

    /// Only budgets and workloads: what pacing a drain's evictions needs.
    pub async fn workloads(conn: &Connection) -> Result<Self, ClusterError> {
        let mut s = Snapshot {
            budgets: list(conn, "poddisruptionbudgets").await?,
            ..Default::default()
        };
        for d in list::<Deployment>(conn, "deployments").await? {
            s.deployments.insert(key(&d.metadata), d);
        }
        for r in list::<ReplicaSet>(conn, "replicasets").await? {
            s.replica_sets.insert(key(&r.metadata), r);
        }
        for x in list::<StatefulSet>(conn, "statefulsets").await? {
            s.stateful_sets.insert(key(&x.metadata), x);
        }
        Ok(s)
    }

    /// The pod's workload: a Deployment (through its ReplicaSet), a StatefulSet or a
    /// bare ReplicaSet; `None` for other controllers (Jobs, custom ones).
    pub fn workload_of(&self, p: &Pod) -> Option<Workload> {
        let owner = pod::controller(p)?;
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = self.replica_sets.get(&(ns.clone(), owner.name.clone()))?;
                match pod_owner(&rs.metadata, "Deployment") {
                    Some(d) => workload::from_deployment(self.deployments.get(&(ns, d))?),
                    None => workload::from_replica_set(rs),
                }
            }
            "StatefulSet" => {
                workload::from_stateful_set(self.stateful_sets.get(&(ns, owner.name.clone()))?)
            }
            _ => None,
        }
    }

    /// Budgets whose selector matches the pod.
    pub fn budgets_covering(&self, p: &Pod) -> Vec<&PodDisruptionBudget> {
        self.budgets
            .iter()
            .filter(|b| budget::covers(b, p))
            .collect()
    }
}

fn pod_owner(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.name.clone())
}

async fn list<K>(conn: &Connection, what: &str) -> Result<Vec<K>, ClusterError>
where
    K: kube::Resource + Clone + std::fmt::Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(conn.client.clone());
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| conn.error(format!("list {what}"), e))
}
