//! What the controller does, for Prometheus (`/metrics`), and whether it is alive and
//! ready (`/healthz`, `/readyz`), on one small HTTP server.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::NodeMaintenance;
use crate::api::node_maintenance::StatusPhase;
use crate::pod::PodKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanState {
    plan: String,
    state: &'static str,
}

/// How an eviction request ended, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Eviction {
    /// The pod is gone.
    Done,
    /// A budget said "not yet".
    Refused,
    /// The ladder deleted it past its budget.
    DeletedPastBudget,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Result_, Counter>,
    reconcile_seconds: Histogram,
    evictions: Family<Outcome, Counter>,
    blocked_seconds: Counter<f64, AtomicU64>,
    nodes: Family<PhaseLabel, Gauge>,
    plan_nodes: Family<PlanState, Gauge>,
    /// Every NodeMaintenance, once this replica leads: nodes by phase are counted from
    /// it when scraped.
    objects: OnceLock<Store<NodeMaintenance>>,
    /// Each waiting pod's hold as last reported, to count seconds blocked once.
    waited: Mutex<HashMap<PodKey, Duration>>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kordon");
        let reconciles = Family::<Result_, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 4.0, 8));
        let evictions = Family::<Outcome, Counter>::default();
        let blocked_seconds = Counter::<f64, AtomicU64>::default();
        let nodes = Family::<PhaseLabel, Gauge>::default();
        let plan_nodes = Family::<PlanState, Gauge>::default();
        registry.register(
            "reconciles",
            "NodeMaintenance reconciles by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            reconcile_seconds.clone(),
        );
        registry.register(
            "evictions",
            "Eviction outcomes: done, refused (a budget said not yet), deleted_past_budget",
            evictions.clone(),
        );
        registry.register(
            "budget_blocked_seconds",
            "Seconds pods waited on a disruption budget",
            blocked_seconds.clone(),
        );
        registry.register(
            "nodes",
            "Nodes under a NodeMaintenance, by phase",
            nodes.clone(),
        );
        registry.register(
            "plan_nodes",
            "A MaintenancePlan's selected nodes in its round: done, active, failed, pending",
            plan_nodes.clone(),
        );
        Self {
            plan_nodes,
            registry,
            reconciles,
            reconcile_seconds,
            evictions,
            blocked_seconds,
            nodes,
            objects: OnceLock::new(),
            waited: Mutex::default(),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Where a plan's nodes stand, as its status says.
    pub fn plan(&self, plan: &str, status: &crate::api::maintenance_plan::MaintenancePlanStatus) {
        for (state, count) in [
            ("done", status.done),
            ("active", status.active),
            ("failed", status.failed),
            ("pending", status.pending),
        ] {
            let key = PlanState {
                plan: plan.to_string(),
                state,
            };
            self.plan_nodes.get_or_create(&key).set(i64::from(count));
        }
    }

    pub fn reconciled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&Result_ { result }).inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn eviction(&self, outcome: Eviction) {
        let outcome = match outcome {
            Eviction::Done => "done",
            Eviction::Refused => "refused",
            Eviction::DeletedPastBudget => "deleted_past_budget",
        };
        self.evictions.get_or_create(&Outcome { outcome }).inc();
    }

    /// A pod has been held `waited` so far: the seconds since its last report count.
    pub fn held(&self, pod: &PodKey, waited: Duration) {
        let Ok(mut last) = self.waited.lock() else {
            return;
        };
        let before = last.insert(pod.clone(), waited).unwrap_or_default();
        self.blocked_seconds
            .inc_by(waited.saturating_sub(before).as_secs_f64());
    }

    /// The replica serves: it checked the API and either leads or stands by.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn watch_objects(&self, store: Store<NodeMaintenance>) {
        let _ = self.objects.set(store);
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        if let Some(store) = self.objects.get() {
            self.nodes.clear();
            for nm in store.state() {
                let phase = nm
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .unwrap_or(StatusPhase::Pending);
                self.nodes
                    .get_or_create(&PhaseLabel {
                        phase: format!("{phase:?}"),
                    })
                    .inc();
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!("serving /metrics, /healthz and /readyz on {address}");
    axum::serve(listener, app).await
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match metrics.render() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
