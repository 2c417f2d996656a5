//! What `kordon status` shows: each node's state and the pods on it, marked the way a
//! drain would treat them.
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Serialize;

use crate::node_state::NodeState;
use crate::pod;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub state: String,
    pub cordoned: bool,
    /// Where a roll stands on this node (from its annotations), if one touched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<crate::fleet::mark::Mark>,
    /// The NodeMaintenance holding the node out of service, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_maintenance: Option<String>,
    pub pods: Vec<PodStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub namespace: String,
    pub name: String,
    pub stage: pod::Lifecycle,
    /// Marks that need a decision when draining.
    pub marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mark {
    DaemonSet,
    Standalone,
    LocalStorage,
}

/// Pods grouped by node, kept as the few facts `status` shows, so a whole cluster's
/// pods can be read page by page.
#[derive(Debug, Default)]
pub struct PodsByNode(HashMap<String, Vec<PodStatus>>);

impl PodsByNode {
    /// Adds the pods bound to nodes that `wanted` accepts.
    pub fn add<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a Pod>,
        wanted: impl Fn(&str) -> bool,
    ) {
        for p in pods {
            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                && wanted(node)
            {
                self.0
                    .entry(node.to_string())
                    .or_default()
                    .push(pod_status(p));
            }
        }
    }
}

/// Joins nodes and pods; pods on nodes not listed are left out.
pub fn build(nodes: &[Node], mut pods: PodsByNode) -> Vec<NodeStatus> {
    nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let state = NodeState::of(n);
            let mut pods = pods.0.remove(name.as_str()).unwrap_or_default();
            pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            NodeStatus {
                name,
                state: state.to_string(),
                cordoned: state.cordoned,
                maintenance: crate::fleet::mark::Mark::of(n),
                node_maintenance: crate::api::node_maintenance::holder_of(n).map(str::to_string),
                pods,
            }
        })
        .collect()
}

fn pod_status(p: &Pod) -> PodStatus {
    let mut marks = Vec::new();
    if pod::is_daemon(p) {
        marks.push(Mark::DaemonSet);
    } else if pod::controller(p).is_none() {
        marks.push(Mark::Standalone);
    }
    if !pod::empty_dir_volumes(p).is_empty() {
        marks.push(Mark::LocalStorage);
    }
    PodStatus {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        stage: pod::Lifecycle::of(p),
        marks,
    }
}
