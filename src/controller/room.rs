//! Where a MaintenancePlan finds room for its next nodes: its own caps (with what the
//! pending nodes hold, read only when the caps leave room), then every other plan's cap
//! over nodes they share.
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::Ctx;
use super::reconcile::ReconcileError;
use super::tally;
use crate::api::maintenance_plan::{MaintenancePlanSpec, OutByOthers, PlanWait};
use crate::cluster::usage::PodUsage;
use crate::flag::Flag;
use crate::fleet::MaxUnavailable;
use crate::fleet::caps::{self, Conflict, Slot};
use crate::fleet::run::holdings;
use crate::fleet::unavailable;
use crate::names::NodeName;
use crate::snapshot::{Reach, Snapshot, Then};
use crate::workload::WorkloadId;

/// The nodes plan `me` starts now, and what the next one waits for; `others`: its nodes
/// someone else has out, which take places in its caps.
pub(super) async fn next_nodes(
    ctx: &Ctx,
    me: &str,
    slots: &mut [Slot],
    cap: usize,
    spec: &MaintenancePlanSpec,
    held: &BTreeSet<String>,
    others: &[OutByOthers],
) -> Result<(Vec<String>, Option<(PlanWait, String)>), ReconcileError> {
    let (start, waits) = choose(ctx, slots, cap, spec).await?;
    let mut waiting = waits.map(|(node, why)| match why {
        Conflict::Full => (
            PlanWait::Caps,
            format!(
                "at its caps (maxUnavailable {cap}{}){}",
                per_text(spec),
                others_text(others)
            ),
        ),
        why => (PlanWait::Caps, format!("node {node} waits: {why}")),
    });
    // Nothing else left to start: the nodes someone else has out are what it waits for.
    let theirs = |s: &Slot| others.iter().any(|o| o.node == s.node);
    if waiting.is_none()
        && start.is_empty()
        && !slots.iter().any(|s| s.pending && !s.out)
        && slots.iter().any(|s| s.pending && theirs(s))
    {
        let why = format!("the nodes left wait{}", others_text(others));
        waiting = Some((PlanWait::Caps, why));
    }
    let (start, waits) = within_other_plans(ctx, me, start, held);
    waiting = waiting.or(waits.map(|w| (PlanWait::OtherPlans, w)));
    Ok((start, waiting))
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
    let usage = ctx.kordon.view.pod_usage();
    let mut known = ctx
        .holdings
        .fresh(slots.iter().filter(|s| unknown(s)), usage);
    let read: Vec<NodeName> = slots
        .iter()
        .filter(|s| unknown(s) && !known.contains_key(&s.node))
        .map(|s| NodeName::from(s.node.as_str()))
        .collect();
    if !read.is_empty() {
        let tick = usage.map(PodUsage::tick);
        let snapshot = Snapshot::live(&ctx.kordon.view, &read, Reach::Targets, Then::Look).await?;
        let mut read_now = holdings(&snapshot);
        for node in &read {
            let h = read_now.remove(node.as_str()).unwrap_or_default();
            let held = (h.workloads, h.single);
            ctx.holdings.keep(node.as_str(), tick, &held);
            known.insert(node.to_string(), held);
        }
    }
    for slot in slots.iter_mut().filter(|s| unknown(s)) {
        if let Some((workloads, single)) = known.remove(&slot.node) {
            slot.workloads = workloads;
            slot.single = single;
        }
    }
    Ok(caps::choose(slots, cap, per))
}

/// A node's workloads, and those of them that allow one disruption at a time.
type Held = (BTreeSet<WorkloadId>, BTreeSet<WorkloadId>);

/// What the nodes a plan has yet to start hold, as last read: kept while the pod index
/// shows no change to their pods, up to [`KEEP_HOLDINGS`] (budgets and workload
/// specs change without one), so a plan's pass does not read every pending node again.
#[derive(Default)]
pub struct KnownHoldings(Mutex<HashMap<String, (u64, Instant, Held)>>);

/// How long a node's holdings serve at most.
const KEEP_HOLDINGS: Duration = Duration::from_secs(60);

impl KnownHoldings {
    /// The holdings of these slots' nodes that are still current.
    fn fresh<'a>(
        &self,
        slots: impl Iterator<Item = &'a Slot>,
        usage: Option<&PodUsage>,
    ) -> HashMap<String, Held> {
        let (Some(usage), Ok(known)) = (usage, self.0.lock()) else {
            return HashMap::new();
        };
        slots
            .filter_map(|s| {
                let (tick, at, held) = known.get(&s.node)?;
                let current = at.elapsed() < KEEP_HOLDINGS && !usage.changed_since(&s.node, *tick);
                current.then(|| (s.node.clone(), held.clone()))
            })
            .collect()
    }

    /// Keeps what a node was read to hold, as of the index's `tick` before the read.
    fn keep(&self, node: &str, tick: Option<u64>, held: &Held) {
        if let (Some(tick), Ok(mut known)) = (tick, self.0.lock()) {
            known.retain(|_, (_, at, _)| at.elapsed() < KEEP_HOLDINGS);
            known.insert(node.to_string(), (tick, Instant::now(), held.clone()));
        }
    }
}

/// The nodes of `start` that every other plan selecting them has room for: where plans
/// overlap, each plan's cap holds over its own nodes, whichever plan starts them (the
/// strictest cap over a node wins). A plan's cap is a standing statement about its
/// nodes: it holds after its round is complete too, until the plan is deleted.
fn within_other_plans(
    ctx: &Ctx,
    me: &str,
    start: Vec<String>,
    held: &BTreeSet<String>,
) -> (Vec<String>, Option<String>) {
    if start.is_empty() {
        return (start, None);
    }
    // Every other plan, from the watch of them all (whatever `--selector` serves).
    let others = ctx
        .plans
        .state()
        .into_iter()
        .filter(|p| p.name_any() != me && p.metadata.deletion_timestamp.is_none());
    // Each other plan: its nodes (a triggered plan's as its own pass selects them), how
    // many are out, its cap.
    let all = ctx.maintenances.state();
    let triggers = ctx.triggers.values();
    let mut scopes = Vec::new();
    for other in others {
        let Ok(selector) = other.spec.node_selector.parse() else {
            continue; // its own status says its selector is bad
        };
        let triggers = other.spec.triggered.then_some(&triggers);
        let (nodes, _) = super::plan::selection(ctx, &other, &selector, triggers, &all);
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let counts_others = other.spec.count_others_out;
        let out = nodes
            .iter()
            .filter(|n| {
                held.contains(&n.name_any())
                    || tally::out_of_service_elsewhere(n)
                    || (counts_others && unavailable::by_others(n).is_some())
            })
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
    (started, waits)
}

/// `; out of service by someone else: node-2 (cordoned) (…)`, or nothing.
fn others_text(others: &[OutByOthers]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let nodes: Vec<String> = others
        .iter()
        .map(|o| format!("{} ({})", o.node, o.reason))
        .collect();
    format!(
        "; out of service by someone else: {} ({}: false not to count them)",
        nodes.join(", "),
        Flag::CountOthersOut
            .field()
            .unwrap_or("spec.countOthersOut")
    )
}

fn per_text(spec: &crate::api::maintenance_plan::MaintenancePlanSpec) -> String {
    spec.max_unavailable_per
        .iter()
        .map(|(l, n)| format!(", {n} per {l}"))
        .collect()
}
