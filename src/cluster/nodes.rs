//! Reads and writes on Node objects.
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::{ClusterError, Connection};
use crate::names::NodeName;

/// `--dry-run` as kubectl has it: `client` sends nothing that changes the cluster,
/// `server` sends the request with `dryRun=All` so admission and validation still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    #[default]
    None,
    Client,
    Server,
}

/// Fetches a node; a missing node is [`ClusterError::NodeNotFound`].
pub async fn get(conn: &Connection, name: &NodeName) -> Result<Node, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    match api.get(name.as_str()).await {
        Ok(node) => Ok(node),
        Err(e) if ClusterError::is_not_found(&e) => Err(ClusterError::NodeNotFound(name.clone())),
        Err(e) => Err(conn.error(format!("get node {name}"), e)),
    }
}

/// Nodes matching a label selector, sorted by name. The API server validates the
/// selector; its 400 becomes [`ClusterError::InvalidSelector`].
pub async fn select(conn: &Connection, selector: &str) -> Result<Vec<Node>, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 400 => ClusterError::InvalidSelector {
                selector: selector.to_string(),
                message: status.message.clone(),
            },
            e => conn.error("list nodes", e),
        })?;
    let mut nodes = list.items;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(nodes)
}

/// Every node in the cluster, sorted by name.
pub async fn all(conn: &Connection) -> Result<Vec<Node>, ClusterError> {
    select(conn, "").await
}

/// Set on nodes kordon cordoned (the value is when), removed when it uncordons. A
/// node cordoned without it was cordoned by someone else, and kordon's workflow
/// leaves it cordoned.
pub const CORDONED_BY_KORDON: &str = "kordon.dev/cordoned-at";

/// True when the node is cordoned and kordon did it.
pub fn cordoned_by_kordon(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CORDONED_BY_KORDON))
}

/// Sets `spec.unschedulable`, which is all cordon and uncordon are, and marks the node
/// as cordoned by kordon. Returns the node as the server has it afterwards (or would,
/// under `--dry-run=server`).
pub async fn set_unschedulable(
    conn: &Connection,
    name: &NodeName,
    unschedulable: bool,
    dry_run: DryRun,
) -> Result<Node, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let params = PatchParams {
        dry_run: dry_run == DryRun::Server,
        ..Default::default()
    };
    let mark = unschedulable.then(|| jiff::Timestamp::now().to_string());
    let patch = json!({
        "metadata": { "annotations": { CORDONED_BY_KORDON: mark } },
        "spec": { "unschedulable": unschedulable },
    });
    match api
        .patch(name.as_str(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(node) => Ok(node),
        Err(e) if ClusterError::is_not_found(&e) => Err(ClusterError::NodeNotFound(name.clone())),
        Err(e) => {
            let verb = if unschedulable { "cordon" } else { "uncordon" };
            Err(conn.error(format!("{verb} node {name} (patch nodes)"), e))
        }
    }
}
