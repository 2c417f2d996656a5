//! The plan over a live snapshot read with [`Reach::Room`](crate::snapshot::Reach::Room),
//! which knows the usage of only some nodes: while a replacement fits on none of
//! them, the snapshot reads more, up to every node.
use k8s_openapi::api::core::v1::Pod;

use super::{PlanError, PlanOptions, PlanReport, plan};
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::pod::PodKey;
use crate::snapshot::Snapshot;

/// [`plan`], reading the usage of more nodes until every replacement fits or the
/// usage of every node is known, so a pod said to fit nowhere fits nowhere.
pub async fn plan_finding_room(
    conn: &Connection,
    snapshot: &mut Snapshot,
    targets: &[NodeName],
    opts: &PlanOptions,
) -> Result<PlanReport, ClusterError> {
    loop {
        let report = plan(snapshot, targets, opts)
            .map_err(|PlanError::UnknownNode(n)| ClusterError::NodeNotFound(n))?;
        let unplaced: Vec<Pod> = snapshot
            .pods
            .iter()
            .filter(|p| report.fits_nowhere.iter().any(|u| u.pod == PodKey::of(p)))
            .cloned()
            .collect();
        let unplaced: Vec<&Pod> = unplaced.iter().collect();
        if unplaced.is_empty() || !snapshot.find_room(conn, &unplaced).await? {
            return Ok(report);
        }
    }
}
