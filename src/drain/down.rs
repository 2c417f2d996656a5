//! A node that is down: its kubelet cannot confirm any pod leaving, so evicted pods
//! would stay terminating for ever and a StatefulSet could not recreate its pod under
//! the same name. Kubernetes' own non-graceful shutdown path handles it: the
//! out-of-service taint. This module only says how long the node has been silent, so
//! that kordon takes that path for a node that really is down.
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use crate::cluster::{ClusterError, Connection, nodes};
use crate::names::NodeName;

/// How long since the kubelet last reported: the newer of its node Lease's renewal and
/// its Ready condition's heartbeat. A node that never reported has been silent for ever.
pub async fn silent_for(conn: &Connection, node: &Node) -> Result<Duration, ClusterError> {
    let name = NodeName::from(node.metadata.name.as_deref().unwrap_or_default());
    let renewed = nodes::lease_renewed(conn, &name).await?;
    let last = renewed.max(nodes::ready_heartbeat(node));
    Ok(last.map_or(Duration::MAX, |t| {
        let since = jiff::Timestamp::now().duration_since(t);
        Duration::try_from(since).unwrap_or_default()
    }))
}
