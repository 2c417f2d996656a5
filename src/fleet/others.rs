//! The nodes NodeMaintenances hold (the controller's, a MaintenancePlan's) while a roll
//! runs: they take places in the roll's cap, as they do in a plan's. They come and go
//! during a run, so the roll watches them and looks again before it starts a node.
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::StatusPhase;
use crate::cluster::view::{View, Watched};
use crate::cluster::{ClusterError, Connection, nodes};
use crate::names::NodeName;

/// The NodeMaintenances, watched for the length of the roll.
pub(super) struct Maintenances(Option<Arc<Watched<NodeMaintenance>>>);

impl Maintenances {
    /// Starts the watch; without kordon's CRDs there are none to count.
    pub async fn watch(view: &View) -> Result<Self, ClusterError> {
        view.everywhere("NodeMaintenances").await.map(Self)
    }

    /// The nodes NodeMaintenances have out now: those under way, and failed ones whose
    /// node they still hold.
    pub async fn held(&self, conn: &Connection) -> BTreeSet<String> {
        let Some(watched) = &self.0 else {
            return BTreeSet::new();
        };
        let mut held = BTreeSet::new();
        for nm in watched.state() {
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
        held
    }
}
