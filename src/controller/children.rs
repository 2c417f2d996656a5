//! A MaintenancePlan's NodeMaintenances: one per node and round, owned by the plan,
//! labelled with both, and counted by the next decision before it is made.
use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::Ctx;
use super::reconcile::ReconcileError;
use crate::api::maintenance_plan::{MaintenancePlan, MaintenancePlanStatus};
use crate::api::node_maintenance::{NodeMaintenance, NodeMaintenanceSpec, StatusPhase};
use crate::cluster::events::Severity;

/// On each NodeMaintenance a plan creates: the plan, the node, and the round.
pub const PLAN_LABEL: &str = "kordon.dev/plan";

pub(super) const NODE_LABEL: &str = "kordon.dev/node";

pub(super) const ROUND_LABEL: &str = "kordon.dev/round";

/// Creates each node's NodeMaintenance, and counts it before the next decision.
pub(super) async fn start_nodes(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    round: &str,
    start: &[String],
    status: &mut MaintenancePlanStatus,
) -> Result<(), ReconcileError> {
    for node in start {
        let created = start_node(ctx, plan, round, node).await?;
        until_seen(&ctx.maintenances, &created).await;
        status.active += 1;
        status.pending = status.pending.saturating_sub(1);
        if let Some(record) = status.nodes.get_mut(node) {
            record.maintenance = Some(created);
            record.phase = Some(StatusPhase::Pending);
        }
        let note = format!("round {round}: started node {node}");
        ctx.events
            .publish(plan, Severity::Normal, "NodeStarted", note)
            .await;
    }

    Ok(())
}

/// The node's NodeMaintenance for this round, owned by the plan.
async fn start_node(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    round: &str,
    node: &str,
) -> Result<String, ReconcileError> {
    let conn = &ctx.kordon.conn;
    let name: String = format!("{}-{node}-{round}", plan.name_any())
        .chars()
        .take(253)
        .collect();
    let mut labels: BTreeMap<String, String> = plan.labels().clone();
    labels.insert(PLAN_LABEL.into(), plan.name_any());
    labels.insert(NODE_LABEL.into(), node.into());
    labels.insert(ROUND_LABEL.into(), round.into());
    let nm = NodeMaintenance {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: plan.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: NodeMaintenanceSpec {
            node_name: node.into(),
            reason: Some(format!("MaintenancePlan {} round {round}", plan.name_any())),
            drain: plan.spec.drain.clone(),
            step: plan.spec.step.clone(),
            gate_timeout: plan.spec.gate_timeout.clone(),
            volume_detach: plan.spec.volume_detach.clone(),
        },
        status: None,
    };
    let api: Api<NodeMaintenance> = Api::all(conn.client.clone());
    match api.create(&PostParams::default(), &nm).await {
        Ok(_) => Ok(name),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(name),
        Err(e) => Err(conn
            .error(format!("create NodeMaintenance {name}"), e)
            .into()),
    }
}

/// Waits until the watch of every NodeMaintenance holds `name`, just created: plans
/// decide one at a time, and the next decision must count it.
async fn until_seen(store: &Store<NodeMaintenance>, name: &str) {
    let key = ObjectRef::new(name);
    let started = std::time::Instant::now();
    let mut told = false;
    while store.get(&key).is_none() {
        if !told && started.elapsed() > Duration::from_secs(10) {
            tracing::warn!("NodeMaintenance {name} is not in the watch yet: plans wait for it");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The round: a short hash of what a node's maintenance is (its drain policy and
/// step), so that changing it starts a new round and changing caps or windows does not.
pub fn round_of(plan: &MaintenancePlan) -> String {
    let what = serde_json::json!({ "drain": plan.spec.drain, "step": plan.spec.step });
    // FNV-1a: stable across builds, unlike std's hasher.
    let hash = what
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:012x}", hash >> 16)
}

pub(super) fn label<'a>(nm: &'a NodeMaintenance, key: &str) -> Option<&'a String> {
    nm.metadata.labels.as_ref()?.get(key)
}
