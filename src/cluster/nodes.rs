//! Reads and writes on Node objects.
use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{ClusterError, Connection};
use crate::exclusion;
use crate::fence;
use crate::names::NodeName;
use crate::node_state::NodeState;

/// `--dry-run` as kubectl has it: `client` sends nothing that changes the cluster,
/// `server` sends the request with `dryRun=All` so admission and validation still run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DryRun {
    #[default]
    None,
    Client,
    Server,
}

/// The namespace of the nodes' Leases.
pub const NODE_LEASES: &str = "kube-node-lease";

/// When the node's kubelet last renewed its Lease in `kube-node-lease` (its heartbeat
/// every 10 s); `None` when it has none. A `get`, which the drain role grants.
pub async fn lease_renewed(
    conn: &Connection,
    name: &NodeName,
) -> Result<Option<jiff::Timestamp>, ClusterError> {
    let leases: Api<Lease> = Api::namespaced(conn.client.clone(), NODE_LEASES);
    let lease = leases
        .get_opt(name.as_str())
        .await
        .map_err(|e| conn.error(format!("read the node lease of {name}"), e))?;
    Ok(lease.and_then(|l| l.spec?.renew_time).map(|t| t.0))
}

/// The Ready condition's last heartbeat: when the kubelet last posted the node status.
pub fn ready_heartbeat(node: &Node) -> Option<jiff::Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
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

/// Every node in the cluster, sorted by name, read page by page.
pub async fn all(conn: &Connection) -> Result<Vec<Node>, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let mut nodes = super::view::list_all(&api, conn, "list nodes", ListParams::default()).await?;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(nodes)
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

/// Cordoned, and not by kordon: that cordon is its owner's to lift.
pub fn cordoned_by_someone_else(node: &Node) -> bool {
    NodeState::of(node).cordoned && !cordoned_by_kordon(node)
}

/// Sets `spec.unschedulable`, which is all cordon and uncordon are, and marks the node
/// as cordoned by kordon. Returns the node as the server has it afterwards (or would,
/// under `--dry-run=server`). Uncordoning a node kordon declared out of service (see
/// [`set_out_of_service`]) lifts that taint too, and one kordon fenced or excluded from
/// load balancers gets those back as they were ([`patch`]): the node is back.
pub async fn set_unschedulable(
    conn: &Connection,
    name: &NodeName,
    unschedulable: bool,
    dry_run: DryRun,
) -> Result<Node, ClusterError> {
    set_unschedulable_with(conn, name, unschedulable, &Annotations::new(), dry_run).await
}

/// [`set_unschedulable`] with annotation changes in the same request (a fence).
pub async fn set_unschedulable_with(
    conn: &Connection,
    name: &NodeName,
    unschedulable: bool,
    annotations: &Annotations,
    dry_run: DryRun,
) -> Result<Node, ClusterError> {
    let node = patch(conn, name, Some(unschedulable), annotations, dry_run).await?;
    if unschedulable || dry_run != DryRun::None {
        return Ok(node);
    }
    if out_of_service_by_kordon(&node) {
        return set_out_of_service(conn, name, false).await;
    }
    Ok(node)
}

/// The taint of Kubernetes' non-graceful node shutdown: on a node that is not Ready, the
/// control plane deletes the pods that do not tolerate it, force-deletes those left
/// terminating, and detaches their volumes.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Set on nodes kordon tainted out of service (the value is when).
pub const OUT_OF_SERVICE_BY_KORDON: &str = "kordon.dev/out-of-service-at";

pub fn out_of_service_by_kordon(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(OUT_OF_SERVICE_BY_KORDON))
}

/// Adds or removes the out-of-service taint (`NoExecute`) with kordon's mark, in one
/// request ([`set_taint`]).
pub async fn set_out_of_service(
    conn: &Connection,
    name: &NodeName,
    on: bool,
) -> Result<Node, ClusterError> {
    let taint = on.then(|| Taint {
        key: OUT_OF_SERVICE_TAINT.into(),
        value: Some("nodeshutdown".into()),
        effect: "NoExecute".into(),
        time_added: None,
    });
    let mark = on.then(|| jiff::Timestamp::now().to_string());
    let annotations = [(OUT_OF_SERVICE_BY_KORDON.to_string(), mark)].into();
    let what = if on { "taint" } else { "untaint" };
    let taint = Tainting {
        key: OUT_OF_SERVICE_TAINT,
        taint,
        what: &format!("{what} node {name} out of service"),
    };
    set_taint(conn, name, &taint, &annotations, None).await
}

/// Adds or removes kordon's draining taint ([`fence::draining_taint`]), which keeps the
/// DaemonSet pods a drain evicts off the node. Its key is kordon's own: no mark needed.
/// `seen`: a recent copy of the node, if any.
pub async fn set_draining(
    conn: &Connection,
    name: &NodeName,
    on: bool,
    seen: Option<Node>,
) -> Result<Node, ClusterError> {
    let what = match on {
        true => format!("taint node {name} {}", fence::DRAINING_TAINT),
        false => format!("untaint node {name} {}", fence::DRAINING_TAINT),
    };
    let change = Tainting {
        key: fence::DRAINING_TAINT,
        taint: on.then(fence::draining_taint),
        what: &what,
    };
    set_taint(conn, name, &change, &Annotations::new(), seen).await
}

/// Takes kordon's draining taint off, if the node has it: a drain alone put back where
/// the cordon is someone else's.
pub async fn lift_draining(conn: &Connection, name: &NodeName) -> Result<(), ClusterError> {
    set_draining(conn, name, false, None).await.map(|_| ())
}

/// A change to one of a node's taints.
pub struct Tainting<'a> {
    /// The taint's key: any taint with it is replaced.
    pub key: &'a str,
    /// What takes its place; `None` removes it.
    pub taint: Option<Taint>,
    /// What the change is, for errors ("untaint node n1 out of service").
    pub what: &'a str,
}

/// Carries out `change`, with `annotations` in the same patch. The patch carries the
/// node's resourceVersion, so that a taint someone else changes meanwhile is never
/// lost: a conflict reads the node again. `seen`, a recent copy of the node, saves the
/// first read, and nothing is sent when it shows the node as asked already.
pub async fn set_taint(
    conn: &Connection,
    name: &NodeName,
    change: &Tainting<'_>,
    annotations: &Annotations,
    seen: Option<Node>,
) -> Result<Node, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let mut seen = seen;
    loop {
        let node = match seen.take() {
            Some(node) => node,
            None => get(conn, name).await?,
        };
        let before = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut taints: Vec<Taint> = before
            .iter()
            .filter(|t| t.key != change.key)
            .cloned()
            .collect();
        taints.extend(change.taint.clone());
        if taints == before && annotations.is_empty() {
            return Ok(node);
        }
        let body = json!({
            "metadata": {
                "resourceVersion": node.metadata.resource_version,
                "annotations": annotations,
            },
            "spec": { "taints": taints },
        });
        match api
            .patch(name.as_str(), &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(node) => return Ok(node),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) if ClusterError::is_not_found(&e) => {
                return Err(ClusterError::NodeNotFound(name.clone()));
            }
            Err(e) => return Err(conn.error(format!("{} (patch nodes)", change.what), e)),
        }
    }
}

/// Annotation changes: `None` removes the key.
pub type Annotations = BTreeMap<String, Option<String>>;

/// One merge patch: the annotations and, when given, the cordon state (with kordon's
/// cordon mark set or removed to match). Being one request, a node is never cordoned
/// by kordon without the annotations that say why. kordon's load-balancer exclusion
/// record brings its label along ([`exclusion::labels_for`]).
///
/// An uncordoned node still fenced or excluded from load balancers by a maintenance
/// whose put-back did not see it (an uncordon by hand, a drain's own exclusion under a
/// roll's cordon) gets those back as they were in a second request: whoever uncordons
/// puts the whole node back. A patch that ends a maintenance (kordon's uncordon, or its
/// fence coming down where the cordon is someone else's) takes kordon's draining taint
/// off too: the DaemonSet pods come back.
pub async fn patch(
    conn: &Connection,
    name: &NodeName,
    unschedulable: Option<bool>,
    annotations: &Annotations,
    dry_run: DryRun,
) -> Result<Node, ClusterError> {
    let mut node = merge(conn, name, unschedulable, annotations, dry_run).await?;
    let ends =
        unschedulable == Some(false) || annotations.get(fence::FENCED).is_some_and(Option::is_none);
    if !ends || dry_run != DryRun::None {
        return Ok(node);
    }
    let lowering = fence::lower(node.annotations());
    if unschedulable == Some(false) && !lowering.is_empty() {
        node = merge(conn, name, None, &lowering, DryRun::None).await?;
    }
    if fence::has_draining_taint(&node) {
        node = set_draining(conn, name, false, Some(node)).await?;
    }
    Ok(node)
}

async fn merge(
    conn: &Connection,
    name: &NodeName,
    unschedulable: Option<bool>,
    annotations: &Annotations,
    dry_run: DryRun,
) -> Result<Node, ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let params = PatchParams {
        dry_run: dry_run == DryRun::Server,
        ..Default::default()
    };
    let mut annotations = annotations.clone();
    let mut body = json!({});
    if let Some(unschedulable) = unschedulable {
        let mark = unschedulable.then(|| jiff::Timestamp::now().to_string());
        annotations.insert(CORDONED_BY_KORDON.to_string(), mark);
        body["spec"] = json!({ "unschedulable": unschedulable });
    }
    body["metadata"] = json!({ "annotations": annotations });
    let labels = exclusion::labels_for(&annotations);
    if !labels.is_empty() {
        body["metadata"]["labels"] = json!(labels);
    }
    match api
        .patch(name.as_str(), &params, &Patch::Merge(&body))
        .await
    {
        Ok(node) => Ok(node),
        Err(e) if ClusterError::is_not_found(&e) => Err(ClusterError::NodeNotFound(name.clone())),
        Err(e) => {
            let verb = match unschedulable {
                Some(true) => "cordon",
                Some(false) => "uncordon",
                None => "annotate",
            };
            Err(conn.error(format!("{verb} node {name} (patch nodes)"), e))
        }
    }
}

/// Sets (`Some`) or removes (`None`) one label of the node, nothing else.
pub async fn set_label(
    conn: &Connection,
    name: &NodeName,
    key: &str,
    value: Option<&str>,
) -> Result<(), ClusterError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let body = json!({ "metadata": { "labels": { key: value } } });
    match api
        .patch(name.as_str(), &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if ClusterError::is_not_found(&e) => Err(ClusterError::NodeNotFound(name.clone())),
        Err(e) => Err(conn.error(format!("label node {name} {key} (patch nodes)"), e)),
    }
}
