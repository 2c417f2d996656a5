//! One MaintenancePlan: reads where each selected node stands, and starts the next
//! nodes (one NodeMaintenance each, owned by the plan) when the window is open, the
//! plan is not paused or halted, and the caps leave room. Each node's own work is its
//! NodeMaintenance's ([`super::reconcile`]).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::Ctx;
use super::reconcile::ReconcileError;
use super::status::set_condition;
use super::tally::{self, Parsed, Tally};
use crate::api::maintenance_plan::{MaintenancePlan, MaintenancePlanStatus, PlanWait};
use crate::api::node_maintenance::{NodeMaintenance, NodeMaintenanceSpec, StatusPhase};
use crate::cluster::events::Severity;
use crate::fleet::MaxUnavailable;
use crate::fleet::caps::{self, Conflict, Slot};
use crate::fleet::run::holdings;
use crate::names::NodeName;
use crate::snapshot::{Reach, Snapshot};

/// On each NodeMaintenance a plan creates: the plan, the node, and the round.
pub const PLAN_LABEL: &str = "kordon.dev/plan";
const NODE_LABEL: &str = "kordon.dev/node";
const ROUND_LABEL: &str = "kordon.dev/round";

/// How often a plan under way looks again (windows open, pauses end).
const LOOK_AGAIN: Duration = Duration::from_secs(5);

pub async fn reconcile(
    plan: Arc<MaintenancePlan>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let conn = &ctx.kordon.conn;
    let name = plan.name_any();
    let spec = &plan.spec;
    let round = round_of(plan.as_ref());
    let mut status = plan.status.clone().unwrap_or_default();
    status.round = Some(round.clone());

    let nodes: Api<Node> = Api::all(conn.client.clone());
    let selected = match nodes
        .list(&ListParams::default().labels(&spec.node_selector))
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 400 => {
            return blocked(&ctx, &plan, status, "InvalidSelector", s.message).await;
        }
        Err(e) => return Err(conn.error("list the plan's nodes", e).into()),
    };
    let Parsed {
        cap,
        windows,
        pause_between,
    } = match tally::parse(spec, selected.len()) {
        Ok(parsed) => parsed,
        Err(message) => return blocked(&ctx, &plan, status, "InvalidSpec", message).await,
    };

    // Plans decide one at a time, so that two plans over shared nodes each count the
    // nodes the other just started.
    let _deciding = ctx.plans_deciding.lock().await;
    // Where each selected node stands in this round, and which nodes other
    // NodeMaintenances hold (another plan's, someone's own), from the watch of them all.
    // It never counts fewer nodes out than there are: it has listed them all before the
    // first decision, holds each plan's creations before the next decision (see
    // `until_seen`), and a late update only shows an earlier phase, one as much out.
    if ctx.maintenances.wait_until_ready().await.is_err() {
        return Err(ReconcileError::Stopping);
    }
    let all = ctx.maintenances.state();
    let is_mine = |nm: &NodeMaintenance| {
        label(nm, PLAN_LABEL) == Some(&name) && label(nm, ROUND_LABEL) == Some(&round)
    };
    let by_name: BTreeMap<String, &Node> = selected.iter().map(|n| (n.name_any(), n)).collect();
    // Nodes any NodeMaintenance has out (for a node without one of this round's, it is
    // someone else's).
    let held_now: BTreeSet<String> = all
        .iter()
        .filter(|nm| holds_node(nm, by_name.get(&nm.spec.node_name).copied()))
        .map(|nm| nm.spec.node_name.clone())
        .collect();
    let children: BTreeMap<String, Arc<NodeMaintenance>> = all
        .into_iter()
        .filter(|nm| is_mine(nm))
        .filter_map(|nm| Some((label(&nm, NODE_LABEL)?.clone(), nm)))
        .collect();
    let Tally {
        mut slots,
        records,
        done,
        active,
        failed,
    } = tally::tally(&selected, &children, &held_now, spec);
    // The last node done, for pauseBetween.
    status.last_finished = children
        .values()
        .filter_map(|c| c.status.as_ref()?.finished_at.clone())
        .max_by_key(|t| t.0);
    status.nodes = records;
    status.done = done;
    status.active = active;
    status.failed = failed;
    status.pending = u32::try_from(slots.iter().filter(|s| s.pending).count()).unwrap_or(u32::MAX);
    status.next_window = None;

    // Whether nodes may start now, and which.
    let halted = !spec.paused && failed >= spec.max_failures;
    let held = tally::held_back(
        spec,
        failed,
        &windows,
        pause_between,
        status.last_finished.as_ref(),
        jiff::Timestamp::now(),
    );
    status.next_window = held.as_ref().and_then(|h| h.next_window.clone());
    let mut waiting = held.map(|h| (h.kind, h.message));
    let start = match &waiting {
        Some(_) => Vec::new(),
        None => {
            let (start, waits) = choose(&ctx, &mut slots, cap, spec).await?;
            waiting = waits.map(|(node, why)| match why {
                Conflict::Full => (
                    PlanWait::Caps,
                    format!("at its caps (maxUnavailable {cap}{})", per_text(spec)),
                ),
                why => (PlanWait::Caps, format!("node {node} waits: {why}")),
            });
            let (start, waits) = within_other_plans(&ctx, &name, start, &held_now).await?;
            waiting = waiting.or(waits.map(|w| (PlanWait::OtherPlans, w)));
            start
        }
    };
    (status.waiting_for, status.waiting) = waiting.unzip();
    for node in &start {
        let created = start_node(&ctx, &plan, &round, node).await?;
        until_seen(&ctx.maintenances, &created).await;
        status.active += 1;
        status.pending = status.pending.saturating_sub(1);
        if let Some(record) = status.nodes.get_mut(node) {
            record.maintenance = Some(created);
            record.phase = Some(StatusPhase::Pending);
        }
        let note = format!("round {round}: started node {node}");
        ctx.events
            .publish(plan.as_ref(), Severity::Normal, "NodeStarted", note)
            .await;
    }

    let complete = status.pending == 0 && status.active == 0 && status.failed == 0;
    announce(&ctx, &plan, &status, complete, halted).await;
    tally::set_conditions(&mut status, complete, plan.metadata.generation);
    ctx.metrics.plan(&name, &status);
    write(&ctx, &plan, status).await?;
    Ok(if complete {
        Action::await_change()
    } else {
        Action::requeue(LOOK_AGAIN)
    })
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

/// An Event on the plan when it completes its round or halts on failures (once each,
/// against the status it had).
async fn announce(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    status: &MaintenancePlanStatus,
    complete: bool,
    halted: bool,
) {
    let before = plan.status.as_ref();
    let was_complete = before.is_some_and(|s| {
        s.round == status.round
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
    });
    let was_halted =
        before.is_some_and(|s| s.round == status.round && s.waiting_for == Some(PlanWait::Halted));
    let round = status.round.as_deref().unwrap_or_default();
    if complete && !was_complete {
        let note = format!("round {round}: every selected node is done");
        ctx.events
            .publish(plan, Severity::Normal, "PlanComplete", note)
            .await;
    }
    if halted && !was_halted {
        let note = format!(
            "round {round}: {}",
            status.waiting.as_deref().unwrap_or("halted")
        );
        ctx.events
            .publish(plan, Severity::Warning, "PlanHalted", note)
            .await;
    }
}

pub fn error_policy(plan: Arc<MaintenancePlan>, error: &ReconcileError, _: Arc<Ctx>) -> Action {
    super::reconcile::retry("MaintenancePlan", &plan.name_any(), error)
}

/// The nodes to start now and why the next one waits. What the pending nodes (and
/// nodes out without a record of it) hold is read only when the caps leave room: for
/// the rule on workloads that allow one disruption at a time (see [`caps`]).
async fn choose(
    ctx: &Ctx,
    slots: &mut [Slot],
    cap: usize,
    spec: &crate::api::maintenance_plan::MaintenancePlanSpec,
) -> Result<(Vec<String>, Option<(String, Conflict)>), ReconcileError> {
    let per = &spec.max_unavailable_per;
    let (start, waits) = caps::choose(slots, cap, per);
    if start.is_empty() {
        return Ok((start, waits));
    }
    // The pending nodes, and nodes out whose workloads are not recorded yet (a
    // NodeMaintenance just created has not planned its drain): what they hold now.
    let unknown = |s: &Slot| (s.pending && !s.out) || (s.out && s.workloads.is_empty());
    let read: Vec<NodeName> = slots
        .iter()
        .filter(|s| unknown(s))
        .map(|s| NodeName::from(s.node.as_str()))
        .collect();
    let snapshot = Snapshot::live(&ctx.kordon.view, &read, Reach::Targets).await?;
    let mut holdings = holdings(&snapshot);
    for slot in slots.iter_mut().filter(|s| unknown(s)) {
        if let Some(h) = holdings.remove(&slot.node) {
            slot.workloads = h.workloads;
            slot.single = h.single;
        }
    }
    Ok(caps::choose(slots, cap, per))
}

/// The nodes of `start` that every other plan selecting them has room for: where plans
/// overlap, each plan's cap holds over its own nodes, whichever plan starts them (the
/// strictest cap over a node wins). A plan's cap is a standing statement about its
/// nodes: it holds after its round is complete too, until the plan is deleted.
async fn within_other_plans(
    ctx: &Ctx,
    me: &str,
    start: Vec<String>,
    held: &BTreeSet<String>,
) -> Result<(Vec<String>, Option<String>), ReconcileError> {
    if start.is_empty() {
        return Ok((start, None));
    }
    let conn = &ctx.kordon.conn;
    let plans: Api<MaintenancePlan> = Api::all(conn.client.clone());
    let nodes: Api<Node> = Api::all(conn.client.clone());
    let others = plans
        .list(&ListParams::default())
        .await
        .map_err(|e| conn.error("list MaintenancePlans", e))?
        .items
        .into_iter()
        .filter(|p| p.name_any() != me && p.metadata.deletion_timestamp.is_none());
    // Each other plan: its nodes, how many are out, its cap.
    let mut scopes = Vec::new();
    for other in others {
        let Ok(list) = nodes
            .list(&ListParams::default().labels(&other.spec.node_selector))
            .await
        else {
            continue; // its own status says its selector is bad
        };
        let names: BTreeSet<String> = list.items.iter().map(|n| n.name_any()).collect();
        let out = list
            .items
            .iter()
            .filter(|n| held.contains(&n.name_any()) || tally::out_of_service_elsewhere(n))
            .count();
        let Ok(cap) = other
            .spec
            .max_unavailable
            .parse::<MaxUnavailable>()
            .and_then(|m| m.resolve(names.len().max(1)))
        else {
            continue;
        };
        scopes.push((other.name_any(), names, out, cap));
    }
    let mut started = Vec::new();
    let mut waits = None;
    for node in start {
        let full = scopes
            .iter()
            .find(|(_, names, out, cap)| names.contains(&node) && out >= cap);
        if let Some((other, ..)) = full {
            waits.get_or_insert(format!(
                "node {node} waits: MaintenancePlan {other} selects it too and has its cap out"
            ));
            continue;
        }
        for (_, names, out, _) in &mut scopes {
            if names.contains(&node) {
                *out += 1;
            }
        }
        started.push(node);
    }
    Ok((started, waits))
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

/// A NodeMaintenance that has its node out ([`NodeMaintenance::has_node_out`]), or is
/// about to take it: just started by a plan (one that waits long in Pending, refused,
/// takes its own plan's place too).
fn holds_node(nm: &NodeMaintenance, node: Option<&Node>) -> bool {
    let pending = matches!(
        nm.status.as_ref().and_then(|s| s.phase),
        None | Some(StatusPhase::Pending)
    );
    nm.has_node_out(node)
        || (pending && nm.metadata.deletion_timestamp.is_none() && label(nm, PLAN_LABEL).is_some())
}

fn label<'a>(nm: &'a NodeMaintenance, key: &str) -> Option<&'a String> {
    nm.metadata.labels.as_ref()?.get(key)
}

fn per_text(spec: &crate::api::maintenance_plan::MaintenancePlanSpec) -> String {
    spec.max_unavailable_per
        .iter()
        .map(|(l, n)| format!(", {n} per {l}"))
        .collect()
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

async fn blocked(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    mut status: MaintenancePlanStatus,
    reason: &str,
    message: String,
) -> Result<Action, ReconcileError> {
    let generation = plan.metadata.generation;
    status.waiting = Some(message.clone());
    status.waiting_for = Some(PlanWait::InvalidSpec);
    set_condition(
        &mut status.conditions,
        "Blocked",
        true,
        reason,
        &message,
        generation,
    );
    write(ctx, plan, status).await?;
    Ok(Action::await_change())
}

async fn write(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    status: MaintenancePlanStatus,
) -> Result<(), ReconcileError> {
    if plan.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut updated = plan.clone();
    updated.status = Some(status);
    let api: Api<MaintenancePlan> = Api::all(ctx.kordon.conn.client.clone());
    api.replace_status(&plan.name_any(), &PostParams::default(), &updated)
        .await?;
    Ok(())
}
