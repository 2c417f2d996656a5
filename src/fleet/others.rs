//! The nodes NodeMaintenances hold (the controller's, a MaintenancePlan's) while a roll
//! runs: they take places in the roll's cap, as they do in a plan's. They come and go
//! during a run, so the roll reads them again before it starts a node.
use std::collections::BTreeSet;

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::{StatusPhase, holder_of};
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
        let node = nm.spec.node_name.clone();
        let holds = match nm.status.as_ref().and_then(|s| s.phase) {
            Some(StatusPhase::Failed) => {
                let found = nodes::get(conn, &NodeName::from(node.as_str())).await;
                found.is_ok_and(|n| holder_of(&n) == Some(nm.name_any().as_str()))
            }
            // Pending has nothing out yet, and may wait long (a refused drain).
            Some(StatusPhase::Pending) | None => false,
            Some(p) => !p.finished(),
        };
        if holds {
            held.insert(node);
        }
    }
    Ok(held)
}
