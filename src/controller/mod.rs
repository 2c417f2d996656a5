//! `kordon controller`: carries out NodeMaintenance objects with the CLI's guard, plan,
//! ladder and state machine ([`crate::workflow::machine`]). The reconcile reads like
//! the rule it enforces ([`reconcile`]); drains run as tasks ([`runs`]) whose progress
//! the reconcile reports; the status says where each object stands ([`status`]).
mod children;
mod error;
mod job;
mod metrics;
mod notices;
mod options;
mod pending;
mod plan;
mod reconcile;
mod room;
mod runs;
mod start;
mod status;
mod tally;
mod tasks;
mod trigger;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};

use crate::api::NodeMaintenance;
use crate::api::maintenance_plan::MaintenancePlan;
use crate::cluster::ClusterError;
use crate::cluster::events::Events;
use crate::cluster::lease::{self, LockError, LockSpec};
use crate::cluster::view::Watched;
use crate::context::Context;

/// How long a watch of a namespace's budgets, workloads and Services stays open after
/// the last drain that used it.
const LINGER: Duration = Duration::from_secs(120);

/// How long the reconciles in flight at SIGTERM or SIGINT may take to end: within
/// Kubernetes' default grace period of 30 s, so that the leader lease is released before
/// the kubelet kills the pod and a reconcile that does not end cannot hold the process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A wait any number of tasks can share, each woken when it ends.
pub type SharedWait<T> = futures::future::Shared<futures::future::BoxFuture<'static, T>>;

/// Resolves at the first SIGTERM or SIGINT.
fn stop_signal() -> SharedWait<()> {
    use futures::FutureExt;
    async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    .boxed()
    .shared()
}

/// Resolves once `store` has listed (false if its watch ended first), for any number
/// of waiters.
fn listed(store: &Store<NodeMaintenance>) -> SharedWait<bool> {
    use futures::FutureExt;
    let store = store.clone();
    async move { store.wait_until_ready().await.is_ok() }
        .boxed()
        .shared()
}

/// `work` to its end, or until [`SHUTDOWN_GRACE`] past `stop`.
async fn within_grace(work: impl Future, stop: SharedWait<()>) {
    tokio::select! {
        _ = work => {}
        () = async { stop.await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(
                "reconciles still running {} after the stop signal; stopping without them",
                humantime::format_duration(SHUTDOWN_GRACE)
            );
        }
    }
}

pub use reconcile::FINALIZER;

/// What every reconcile shares.
pub struct Ctx {
    pub kordon: Arc<Context>,
    pub events: Events,
    pub runs: runs::Runs,
    pub metrics: Arc<metrics::Metrics>,
    /// The NodeMaintenances this controller serves, as its watch sees them: one per node
    /// acts.
    pub store: Store<NodeMaintenance>,
    /// Every NodeMaintenance, whatever `--selector` serves: what plans count as out.
    pub maintenances: Store<NodeMaintenance>,
    /// True once `maintenances` has listed, false if its watch ended first. One shared
    /// wait: kube's `Store::wait_until_ready` wakes only the last of several concurrent
    /// waiters, and each plan's first reconcile waits for it.
    pub maintenances_listed: SharedWait<bool>,
    /// Keeps that watch while it is not the controller's own.
    _all: Option<Arc<Watched<NodeMaintenance>>>,
    /// Every node, watched: what plans select and count as out.
    pub nodes: Arc<Watched<Node>>,
    /// Every MaintenancePlan, whatever `--selector` serves: overlapping plans' caps.
    pub plans: Arc<Watched<MaintenancePlan>>,
    /// The nodes that say they need maintenance, for triggered plans.
    pub triggers: trigger::Triggers,
    /// Held while a MaintenancePlan counts the nodes out and starts more.
    pub plans_deciding: tokio::sync::Mutex<()>,
    /// What the nodes plans have yet to start hold, as last read.
    pub holdings: room::KnownHoldings,
    /// The Jobs of `job` steps, watched.
    pub jobs: Store<Job>,
    /// When each plan's status was last written.
    pub plan_writes: plan::Written,
    /// The phase last written for each NodeMaintenance.
    pub recorded: status::Recorded,
    /// Every VolumeAttachment, watched: a drained node none names goes on at once.
    pub attachments: Option<Arc<Watched<VolumeAttachment>>>,
    /// Sends the plans' notifications (`spec.notify`).
    pub notifier: crate::notify::Notifier,
    /// Asks the plans' metric gates (`spec.gates`).
    pub checker: crate::metric_gate::Checker,
}

/// How the controller runs.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// Only the NodeMaintenance objects these labels select.
    pub selector: Option<String>,
    /// Leader election: only the holder of this Lease acts; `None` acts at once (one
    /// replica, or tests).
    pub election: Option<LockSpec>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`.
    pub metrics_address: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(
        "lost the leader lease {0}: stopping so that only the new leader acts (the Deployment restarts this replica as a standby)"
    )]
    LostLeadership(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "kordon's CRDs (NodeMaintenance, MaintenancePlan) are not installed: apply deploy/crds/kordon.dev.yaml (or install the Helm chart) first"
    )]
    CrdMissing,
    #[error("invalid --selector: {0}")]
    InvalidSelector(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    #[error("the metric gates' HTTP client: {0}")]
    Http(#[from] crate::http::HttpError),
}

/// Waits until the API server serves both kinds: a 429 or 5xx for a moment (a CRD just
/// installed) is waited out; a missing CRD or a bad selector is said at once.
async fn served(
    kordon: &Context,
    maintenances: &Api<NodeMaintenance>,
    plans: &Api<MaintenancePlan>,
    selector: Option<&str>,
) -> Result<(), ControllerError> {
    let mut lp = ListParams::default().limit(1);
    if let Some(selector) = selector {
        lp = lp.labels(selector);
    }
    let mut attempts = 0;
    while let Err(e) = match maintenances.list(&lp).await {
        Ok(_) => plans.list(&lp).await.map(|_| ()),
        Err(e) => Err(e),
    } {
        attempts += 1;
        match e {
            kube::Error::Api(s) if s.code == 404 => return Err(ControllerError::CrdMissing),
            kube::Error::Api(s) if s.code == 400 => {
                return Err(ControllerError::InvalidSelector(s.message));
            }
            kube::Error::Api(s) if (s.code == 429 || s.code >= 500) && attempts < 30 => {
                tracing::info!("waiting for the API server: {}", s.message);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            e => return Err(kordon.conn.error("list nodemaintenances", e).into()),
        }
    }
    Ok(())
}

/// The controller's metrics, served on `--metrics-address` when it is given.
fn serve_metrics(opts: &ControllerOptions) -> Arc<metrics::Metrics> {
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(address) = opts.metrics_address {
        let serving = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(address, serving).await {
                tracing::error!("cannot serve metrics on {address}: {e}");
            }
        });
    }
    metrics
}

/// The plans' controller, and the triggered nodes' values it reads: a plan wakes when
/// one of its NodeMaintenances changes, and a triggered plan when a node it selects is
/// labelled, labelled anew or no longer.
fn plan_controller(
    conn: &crate::cluster::Connection,
    plans: Api<MaintenancePlan>,
    maintenances: Api<NodeMaintenance>,
    config: watcher::Config,
    every_plan: &Watched<MaintenancePlan>,
) -> (Controller<MaintenancePlan>, trigger::Triggers) {
    let (triggers, changes) = trigger::watched(&conn.client);
    let every = every_plan.store().clone();
    let controller = Controller::new(plans, config.clone())
        .owns(maintenances, config)
        .watches_stream(changes, move |node| trigger::plans_of(&every, &node));
    (controller, triggers)
}

/// Runs until SIGINT or SIGTERM, or until it loses the leader lease.
pub async fn run(kordon: Context, opts: &ControllerOptions) -> Result<(), ControllerError> {
    let conn = &kordon.conn;
    let metrics = serve_metrics(opts);
    let api: Api<NodeMaintenance> = Api::all(conn.client.clone());
    let plans: Api<MaintenancePlan> = Api::all(conn.client.clone());
    let mut config = watcher::Config::default();
    if let Some(selector) = &opts.selector {
        config = config.labels(selector);
    }
    served(&kordon, &api, &plans, opts.selector.as_deref()).await?;
    metrics.set_ready();
    let leader = match &opts.election {
        Some(spec) => Some(lead(&kordon, spec).await?),
        None => None,
    };
    // A NodeMaintenance wakes when its step's Job changes.
    let (jobs, job_changes) = job::watched(&conn.client);
    let controller =
        Controller::new(api.clone(), config.clone()).watches_stream(job_changes, job::owner);
    metrics.watch_objects(controller.store());
    let (maintenances, all) = match opts.selector {
        None => (controller.store(), None),
        Some(_) => {
            let all = kordon
                .view
                .everywhere("NodeMaintenances")
                .await?
                .ok_or(ControllerError::CrdMissing)?;
            (all.store().clone(), Some(all))
        }
    };
    let every_node = kordon.view.everywhere("Nodes").await?;
    // Each NodeMaintenance's start forecasts placement: from memory, not a read of
    // every pod.
    kordon.view.index_pods().await?;
    // A plan's next node is most often in the namespaces of the last: their watches
    // serve it.
    kordon.view.linger(LINGER);
    let every_plan = kordon.view.everywhere("MaintenancePlans").await?;
    let attachments = kordon.view.everywhere("VolumeAttachments").await?;
    let (Some(every_node), Some(every_plan)) = (every_node, every_plan) else {
        return Err(ControllerError::CrdMissing);
    };
    let (plan_controller, triggers) = plan_controller(conn, plans, api, config, &every_plan);
    let (runs, ended) = runs::Runs::new(metrics.clone());
    let ctx = Arc::new(Ctx {
        nodes: every_node,
        plans: every_plan,
        triggers,
        events: Events::new(conn, &format!("kordon-controller-{}", kordon.run)),
        runs,
        metrics,
        store: controller.store(),
        maintenances_listed: listed(&maintenances),
        maintenances,
        _all: all,
        plans_deciding: tokio::sync::Mutex::default(),
        holdings: room::KnownHoldings::default(),
        jobs,
        plan_writes: plan::Written::default(),
        recorded: status::Recorded::default(),
        attachments,
        notifier: crate::notify::Notifier::start()?,
        checker: crate::metric_gate::Checker::new()?,
        kordon: Arc::new(kordon),
    });
    tracing::info!("kordon controller started");
    // An object whose drain, gate or "Ready again" ended is looked at at once.
    let ended = ended.map(|name| ObjectRef::<NodeMaintenance>::new(&name));
    let stop = stop_signal();
    let nodes = controller
        .reconcile_on(ended)
        .graceful_shutdown_on(stop.clone())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile: {e}");
            }
        });
    let fleets = plan_controller
        .graceful_shutdown_on(stop.clone())
        .run(plan::reconcile, plan::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("reconcile plan: {e}");
            }
        });
    let work = within_grace(futures::future::join(nodes, fleets), stop);
    let Some(leader) = leader else {
        work.await;
        return Ok(());
    };
    let mut lost = leader.lost();
    tokio::select! {
        () = work => {
            tracing::info!("kordon controller stopped");
            let _ = leader.release(BTreeMap::new()).await;
            Ok(())
        }
        _ = lost.wait_for(|lost| *lost) => {
            let spec = opts.election.as_ref().map(|s| format!("{}/{}", s.namespace, s.name));
            Err(ControllerError::LostLeadership(spec.unwrap_or_default()))
        }
    }
}

/// Waits, as a standby, until this replica holds the leader lease.
async fn lead(kordon: &Context, spec: &LockSpec) -> Result<lease::HeldLock, ControllerError> {
    // A year: a standby waits for as long as the leader lives.
    let forever = Duration::from_secs(365 * 24 * 3600);
    loop {
        lease::wait_free(&kordon.conn, &spec.namespace, &spec.name, forever).await?;
        match lease::acquire(&kordon.conn, spec, BTreeMap::new()).await {
            Ok(held) => {
                tracing::info!(
                    "leading as {} (lease {}/{})",
                    spec.holder,
                    spec.namespace,
                    spec.name
                );
                return Ok(held);
            }
            // Another standby was faster: wait for its lease in turn.
            Err(LockError::Held { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::{reflector, watcher};

    use super::*;

    /// Every plan reconcile in flight when the controller starts waits for the first
    /// list; kube's `Store::wait_until_ready` alone woke only one of them.
    #[tokio::test]
    async fn every_waiter_wakes_when_the_maintenances_are_listed() {
        let (store, mut writer) = reflector::store::<NodeMaintenance>();
        let listed = listed(&store);
        let waiters: Vec<_> = (0..3).map(|_| tokio::spawn(listed.clone())).collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(
                matches!(woke, Ok(Ok(true))),
                "a waiter did not wake: {woke:?}"
            );
        }
    }
}
