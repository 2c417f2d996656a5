//! The nodes NodeMaintenances hold (the controller's, a MaintenancePlan's) while a roll
//! runs: they take places in the roll's cap, as they do in a plan's. They come and go
//! during a run, so the roll reads them again before it starts a node.
use std::collections::BTreeSet;

use kube::Api;
use kube::api::ListParams;

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::StatusPhase;
use crate::cluster::{ClusterError, Connection, nodes};
use crate::names::NodeName;

/// The nodes NodeMaintenances have out now: those under way, and failed ones whose node
/// they still hold. Without kordon's CRDs, none.
pub(super) async fn held_by_maintenances(
    conn: &Connection,
) -> Result<BTreeSet<String>, ClusterError> {
    let api: Api<NodeMaintenance> = Api::all(conn.client.clone());
    let all = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(BTreeSet::new()),
        Err(e) => return Err(conn.error("list NodeMaintenances", e)),
    };
    let mut held = BTreeSet::new();
    for nm in all {
        // Only a failed one needs its node read, to see whether it still holds it.
        let failed = nm.status.as_ref().and_then(|s| s.phase) == Some(StatusPhase::Failed);
        let node = match failed {
            true => nodes::get(conn, &NodeName::from(nm.spec.node_name.as_str()))
                .await
                .ok(),
            false => None,
        };
        if nm.has_node_out(node.as_ref()) {
            held.insert(nm.spec.node_name.clone());
        }
    }
    Ok(held)
}
