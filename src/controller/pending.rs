//! A plan's nodes still to start carry kordon's pending taint (see
//! [`crate::fleet::pending`]), with the plan's uid as its value: each pass puts it on the
//! nodes still pending and lifts it from the others, read from the node watch so that
//! only changes are written. A node another plan (or a roll) tainted first keeps that
//! one. A plan that is gone has no pass: any plan's pass lifts the taints of plans that
//! are no longer there.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::Ctx;
use crate::api::maintenance_plan::MaintenancePlan;
use crate::fleet::pending::{self, TAINT};
use crate::names::NodeName;

/// The taint's value for a plan.
fn value_of(uid: &str) -> String {
    format!("plan-{uid}")
}

/// The pending taint's value on the node, if it has one.
fn tainted_by(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|t| t.key == TAINT)
        .map(|t| t.value.as_deref().unwrap_or_default())
}

/// Brings the taint in line with the nodes still `pending` (none once the plan is
/// complete, or with `spec.taintPending: false`): on them, and off every other node it
/// is on, also one the plan no longer selects (a triggered node whose label went); and
/// lifts departed plans'.
pub async fn follow(ctx: &Ctx, plan: &MaintenancePlan, pending: &BTreeSet<String>) {
    let Some(uid) = plan.uid() else { return };
    let ours = value_of(&uid);
    let on = plan.spec.taint_pending;
    let plans: BTreeSet<String> = ctx
        .plans
        .state()
        .iter()
        .filter_map(|p| p.uid())
        .map(|u| value_of(&u))
        .collect();
    for node in ctx.nodes.state() {
        let name = node.name_any();
        let want = on && pending.contains(&name);
        let change = match (want, tainted_by(&node)) {
            (true, None) => Some(Some(ours.as_str())),
            (false, Some(v)) if v == ours => Some(None),
            (_, Some(v)) if v.starts_with("plan-") && !plans.contains(v) => Some(None),
            _ => None,
        };
        if let Some(round) = change {
            set(ctx, &name, round, &node).await;
        }
    }
}

/// A node that cannot be tainted is only worse placed: said, not fatal.
async fn set(ctx: &Ctx, node: &str, round: Option<&str>, seen: &Node) {
    let name = NodeName::new(node);
    let result = pending::set(&ctx.kordon.conn, &name, round, Some(seen.clone())).await;
    if let Err(e) = result {
        tracing::warn!("{e}");
    }
}
