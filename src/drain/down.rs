//! A node that is down: its kubelet cannot confirm any pod leaving, so evicted pods
//! would stay terminating for ever and a StatefulSet could not recreate its pod under
//! the same name. Kubernetes' own non-graceful shutdown path handles it: the
//! out-of-service taint. This module only says how long the node has been silent, so
//! that kordon takes that path for a node that really is down.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::cluster::{ClusterError, Connection};

/// How long since the kubelet last reported: the newer of its node Lease's renewal and
/// its Ready condition's heartbeat. A node that never reported has been silent for ever.
pub async fn silent_for(conn: &Connection, node: &Node) -> Result<Duration, ClusterError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(conn.client.clone(), "kube-node-lease");
    let lease = leases
        .get_opt(&name)
        .await
        .map_err(|e| conn.error(format!("read the node lease of {name}"), e))?;
    let renewed = lease.and_then(|l| l.spec?.renew_time).map(|t| t.0);
    let heartbeat = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let last = renewed.max(heartbeat);
    Ok(last.map_or(Duration::MAX, |t| {
        let since = jiff::Timestamp::now().duration_since(t);
        Duration::try_from(since).unwrap_or_default()
    }))
}
