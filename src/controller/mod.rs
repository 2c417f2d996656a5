//! `kordon controller`: carries out NodeMaintenance objects with the CLI's guard, plan,
//! ladder and state machine ([`crate::workflow::machine`]). The reconcile reads like
//! the rule it enforces ([`reconcile`]); drains run as tasks ([`runs`]) whose progress
//! the reconcile reports; the status says where each object stands ([`status`]).
mod options;
mod reconcile;
mod runs;
mod status;

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};

use crate::api::NodeMaintenance;
use crate::cluster::ClusterError;
use crate::cluster::events::Events;
use crate::context::Context;

pub use reconcile::FINALIZER;

/// What every reconcile shares.
pub struct Ctx {
    pub kordon: Arc<Context>,
    pub events: Events,
    pub runs: runs::Runs,
    /// Every NodeMaintenance, as the controller's watch sees them: one per node acts.
    pub store: Store<NodeMaintenance>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(
        "the NodeMaintenance CRD is not installed: apply deploy/crds/kordon.dev.yaml (or install the Helm chart) first"
    )]
    CrdMissing,
    #[error("invalid --selector: {0}")]
    InvalidSelector(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Runs until SIGINT or SIGTERM; with `selector`, only for the objects it matches.
pub async fn run(kordon: Context, selector: Option<&str>) -> Result<(), ControllerError> {
    let conn = &kordon.conn;
    let api: Api<NodeMaintenance> = Api::all(conn.client.clone());
    let mut lp = ListParams::default().limit(1);
    let mut config = watcher::Config::default();
    if let Some(selector) = selector {
        lp = lp.labels(selector);
        config = config.labels(selector);
    }
    if let Err(e) = api.list(&lp).await {
        return Err(match e {
            kube::Error::Api(s) if s.code == 404 => ControllerError::CrdMissing,
            kube::Error::Api(s) if s.code == 400 => ControllerError::InvalidSelector(s.message),
            e => conn.error("list nodemaintenances", e).into(),
        });
    }
    let controller = Controller::new(api, config);
    let ctx = Arc::new(Ctx {
        events: Events::new(conn, &format!("kordon-controller-{}", kordon.run)),
        runs: runs::Runs::default(),
        store: controller.store(),
        kordon: Arc::new(kordon),
    });
    tracing::info!("kordon controller started");
    controller
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        })
        .await;
    tracing::info!("kordon controller stopped");
    Ok(())
}
