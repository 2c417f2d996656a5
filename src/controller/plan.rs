//! One MaintenancePlan: reads where each selected node stands, and starts the next
//! nodes (one NodeMaintenance each, owned by the plan) when the window is open, the
//! plan is not paused or halted, and the caps leave room. Each node's own work is its
//! NodeMaintenance's ([`super::reconcile`]).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::Ctx;
use super::children::{self, PLAN_LABEL, ROUND_LABEL, label, round_of, start_nodes};
use super::reconcile::ReconcileError;
use super::room;
use super::status::set_condition;
use super::tally::{self, Parsed, Tally};
use crate::api::maintenance_plan::{
    APPROVE_ANNOTATION, MaintenancePlan, MaintenancePlanStatus, PlanWait, SOAK_FAILED,
};
use crate::api::node_maintenance::{NodeMaintenance, StatusPhase};
use crate::cluster::events::Severity;
use crate::fleet::caps::Slot;
use crate::metric_gate::Verdict;
use crate::selector::Selector;
use crate::workflow::gate;

/// How often a plan under way looks again (windows open, pauses end).
const LOOK_AGAIN: Duration = Duration::from_secs(5);

pub async fn reconcile(
    plan: Arc<MaintenancePlan>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let name = plan.name_any();
    let spec = &plan.spec;
    let round = round_of(plan.as_ref());
    let mut status = plan.status.clone().unwrap_or_default();
    status.round = Some(round.clone());

    let selector: Selector = match spec.node_selector.parse() {
        Ok(s) => s,
        Err(e) => return blocked(&ctx, &plan, status, "InvalidSelector", e.to_string()).await,
    };
    // The nodes from the controller's watch of them, not listed on every pass; a
    // triggered plan's values from the watch that wakes it when one changes.
    if ctx.nodes.store().wait_until_ready().await.is_err() {
        return Err(ReconcileError::Stopping);
    }
    let triggers = match spec.triggered {
        true if !ctx.triggers.ready().await => return Err(ReconcileError::Stopping),
        true => Some(ctx.triggers.values()),
        false => None,
    };
    // Where each selected node stands in this round, and which nodes other
    // NodeMaintenances hold (another plan's, someone's own), from the watch of them all.
    // It never counts fewer nodes out than there are: it has listed them all before the
    // first decision, holds each plan's creations before the next decision (see
    // `until_seen`), and a late update only shows an earlier phase, one as much out.
    if !ctx.maintenances_listed.clone().await {
        return Err(ReconcileError::Stopping);
    }
    let look = || observe(&ctx, &plan, &selector, triggers.as_ref());
    let first = look();
    let parsed = match tally::parse(spec, first.selected.len()) {
        Ok(parsed) => parsed,
        Err(message) => return blocked(&ctx, &plan, status, "InvalidSpec", message).await,
    };
    soak(&ctx, &plan, parsed.pause_between, &first.children).await;
    let verdict = ask_gates(&ctx, &plan, &parsed, first, &status).await;
    // Plans decide one at a time, so that two plans over shared nodes each count the
    // nodes the other just started.
    let _deciding = ctx.plans_deciding.lock().await;
    let Observed {
        selected,
        held_now,
        started,
        children,
        last_finished,
    } = look();
    status.last_finished = last_finished;
    let (slots, halted) = stand(&selected, &children, &held_now, spec, &mut status);
    let seen = Seen {
        selected: &selected,
        slots,
        held_now: &held_now,
        started,
    };
    let Decision { start, unasked } =
        decide(&ctx, &plan, &parsed, &seen, verdict.as_ref(), &mut status).await?;
    start_nodes(&ctx, &plan, &round, &start, triggers.as_ref(), &mut status).await?;
    let still_pending: BTreeSet<String> = seen
        .slots
        .iter()
        .filter(|s| s.pending && !start.contains(&s.node))
        .map(|s| s.node.clone())
        .collect();
    super::pending::follow(&ctx, &plan, &still_pending).await;
    let complete = status.pending == 0 && status.active == 0 && status.failed == 0;
    // A triggered plan with no node done yet has nothing to tell of.
    let told = complete && (!spec.triggered || status.done > 0);
    announce(&ctx, &plan, &status, told, halted).await;
    tally::set_conditions(
        &mut status,
        complete,
        spec.triggered,
        plan.metadata.generation,
    );
    ctx.metrics.plan(&name, &status);
    // A complete plan is not looked at again (a triggered one wakes when a node's value
    // changes): what it shows then is written now.
    let webhook = parsed.notify.as_ref();
    write_and_tell(&ctx, &plan, status, complete, told, &children, webhook).await?;
    Ok(if unasked {
        Action::requeue(ASK_AGAIN)
    } else if complete {
        Action::await_change()
    } else {
        Action::requeue(LOOK_AGAIN)
    })
}

/// What a pass reads of the plan's nodes and NodeMaintenances, from the watches.
struct Observed {
    /// The nodes the plan selects now (see [`children::of_round`]).
    selected: Vec<Node>,
    /// Nodes any NodeMaintenance has out (for a node without one of this round's, it is
    /// someone else's).
    held_now: BTreeSet<String>,
    /// When each of the plan's nodes started, in every round (`maxPer`): the
    /// NodeMaintenances it created stay as its record.
    started: Vec<jiff::Timestamp>,
    /// This round's NodeMaintenance of each selected node (for a triggered plan, the
    /// one made for its value).
    children: BTreeMap<String, Arc<NodeMaintenance>>,
    /// When the last of this round's nodes finished, for `pauseBetween` (of any
    /// trigger value, and of nodes no longer selected).
    last_finished: Option<Time>,
}

fn observe(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    selector: &Selector,
    triggers: Option<&BTreeMap<String, String>>,
) -> Observed {
    let all = ctx.maintenances.state();
    let name = plan.name_any();
    let of_plan = |nm: &&Arc<NodeMaintenance>| label(nm, PLAN_LABEL) == Some(&name);
    let (selected, children) = selection(ctx, plan, selector, triggers, &all);
    let by_name: BTreeMap<String, &Node> = selected.iter().map(|n| (n.name_any(), n)).collect();
    let held_now = all
        .iter()
        .filter(|nm| holds_node(nm, by_name.get(&nm.spec.node_name).copied()))
        .map(|nm| nm.spec.node_name.clone())
        .collect();
    let started = all
        .iter()
        .filter(of_plan)
        .filter_map(|nm| tally::started(nm))
        .collect();
    let round = round_of(plan);
    let last_finished = all
        .iter()
        .filter(of_plan)
        .filter(|nm| label(nm, ROUND_LABEL) == Some(&round))
        .filter_map(|c| c.status.as_ref()?.finished_at.clone())
        .max_by_key(|t| t.0);
    Observed {
        selected,
        held_now,
        started,
        children,
        last_finished,
    }
}

/// The nodes `plan` selects now, and each one's NodeMaintenance of its round, from the
/// node watch and `all` NodeMaintenances (`triggers`: each triggered node's value, for
/// a triggered plan).
pub(super) fn selection(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    selector: &Selector,
    triggers: Option<&BTreeMap<String, String>>,
    all: &[Arc<NodeMaintenance>],
) -> (Vec<Node>, BTreeMap<String, Arc<NodeMaintenance>>) {
    let matched = ctx
        .nodes
        .state()
        .into_iter()
        .filter(|n| selector.matches(n.labels()))
        .map(Arc::unwrap_or_clone)
        .collect();
    let (name, round) = (plan.name_any(), round_of(plan));
    let of_round: Vec<Arc<NodeMaintenance>> = all
        .iter()
        .filter(|nm| label(nm, PLAN_LABEL) == Some(&name) && label(nm, ROUND_LABEL) == Some(&round))
        .cloned()
        .collect();
    children::of_round(matched, &of_round, triggers)
}

/// Where the plan's nodes stand in this pass, as its decision reads them.
struct Seen<'a> {
    selected: &'a [Node],
    /// Each selected node's place under the caps.
    slots: Vec<Slot>,
    /// Nodes any NodeMaintenance has out.
    held_now: &'a BTreeSet<String>,
    /// When each of the plan's nodes started, in every round (`maxPer`).
    started: Vec<jiff::Timestamp>,
}

/// What a pass decides.
struct Decision {
    /// The nodes to start now.
    start: Vec<String>,
    /// Nodes could start, but the gates were not asked before the decision (nothing
    /// could start at the first look): none starts, and the plan looks again at once.
    unasked: bool,
}

/// The soak after each node (`pauseBetween`): the pods on each node done within it are
/// read, and a container there that exited non-zero or a pod that failed since the node
/// was done fails it. Its NodeMaintenance is annotated `kordon.dev/soak-failed` with
/// what happened, which the tally counts as a failure (toward `maxFailures`); the node
/// stays in service. One read per node in its soak and pass.
async fn soak(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    pause: Option<Duration>,
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
) {
    let client = &ctx.kordon.conn.client;
    for (nm, finished) in tally::soaking(children, pause, jiff::Timestamp::now()) {
        let node = &nm.spec.node_name;
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = match Api::<Pod>::all(client.clone()).list(&params).await {
            Ok(list) => list.items.into_iter().map(Arc::new).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(
                    "MaintenancePlan {}: the soak of node {node}: {e}",
                    plan.name_any()
                );
                continue;
            }
        };
        let Some(what) = gate::regressions(&pods, finished).into_iter().next() else {
            continue;
        };
        let soak = humantime::format_duration(pause.unwrap_or_default());
        let why = format!("during the {soak} soak, {what}");
        let patch = serde_json::json!({ "metadata": { "annotations": { SOAK_FAILED: why } } });
        let api: Api<NodeMaintenance> = Api::all(client.clone());
        let patched = api
            .patch(
                &nm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        if let Err(e) = patched {
            tracing::warn!(
                "NodeMaintenance {}: record the failed soak: {e}",
                nm.name_any()
            );
            continue;
        }
        let note = format!("node {node} failed {why}");
        ctx.events
            .publish_about_node(plan, node, Severity::Warning, "SoakFailed", note)
            .await;
    }
}

/// How soon a plan looks again when its gates were not asked in time.
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// The plan's metric gates, asked only when it has some and a node could start now
/// (or `pauseBetween` runs), from a first look at where its nodes stand: before the
/// plans' turn to decide, which an answer that takes its time (up to 4 s) would
/// otherwise hold for every plan.
async fn ask_gates(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    parsed: &Parsed,
    first: Observed,
    status: &MaintenancePlanStatus,
) -> Option<Verdict> {
    let gates = parsed.gates.as_ref()?;
    let mut status = status.clone();
    status.last_finished = first.last_finished;
    let (selected, children) = (&first.selected, &first.children);
    let (slots, _) = stand(selected, children, &first.held_now, &plan.spec, &mut status);
    let now = jiff::Timestamp::now();
    let open = tally::open(
        parsed,
        &plan.spec,
        &status,
        &slots,
        selected,
        &first.started,
        now,
    );
    let per = &plan.spec.max_unavailable_per;
    if !tally::asks_gates(&open, parsed.cap, per) {
        return None;
    }
    Some(ctx.checker.verdict(gates).await)
}

/// The nodes the plan starts now, with why the others wait in the status: held back
/// (paused, halted, outside its windows, pausing between nodes, `maxPer` spent), or as
/// its sequence, its caps and other plans' caps allow, at most as many as `maxPer` has
/// left, and as its gates' `verdict` (asked before) allows.
async fn decide(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    parsed: &Parsed,
    seen: &Seen<'_>,
    verdict: Option<&Verdict>,
    status: &mut MaintenancePlanStatus,
) -> Result<Decision, ReconcileError> {
    let now = jiff::Timestamp::now();
    let spec = &plan.spec;
    let open = tally::open(
        parsed,
        spec,
        status,
        &seen.slots,
        seen.selected,
        &seen.started,
        now,
    );
    let (mut start, waiting) = match open {
        Err(held) => {
            status.next_window = held.next_window;
            (Vec::new(), Some((held.kind, held.message)))
        }
        Ok(tally::Open {
            mut slots,
            sequenced,
            free,
        }) => {
            let (name, others, cap) = (plan.name_any(), &status.out_by_others, parsed.cap);
            let (mut start, waiting) =
                room::next_nodes(ctx, &name, &mut slots, cap, spec, seen.held_now, others).await?;
            if let Some(free) = free {
                start.truncate(free);
            }
            let sequenced = sequenced.filter(|_| start.is_empty());
            let waiting = waiting.or(sequenced.map(|why| (PlanWait::Sequence, why)));
            (start, waiting)
        }
    };
    let pausing = waiting
        .as_ref()
        .is_some_and(|(k, _)| *k == PlanWait::PauseBetween);
    let approve = plan
        .annotations()
        .get(APPROVE_ANNOTATION)
        .map(String::as_str);
    let gated = tally::gate(parsed, verdict, approve, &mut start, pausing, status);
    let unasked = gated.is_err();
    let waiting = gated.ok().flatten().or(waiting);
    (status.waiting_for, status.waiting) = waiting.unzip();
    Ok(Decision { start, unasked })
}

/// Where each selected node stands in this round (into the status), the slots the caps
/// decide over, and whether the plan halted on its failures.
fn stand(
    selected: &[Node],
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
    held_now: &BTreeSet<String>,
    spec: &crate::api::maintenance_plan::MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
) -> (Vec<Slot>, bool) {
    let Tally {
        slots,
        records,
        done,
        active,
        failed,
        out_by_others,
    } = tally::tally(selected, children, held_now, spec);
    status.nodes = records;
    status.done = done;
    status.active = active;
    status.failed = failed;
    status.out_by_others = out_by_others;
    status.pending = u32::try_from(slots.iter().filter(|s| s.pending).count()).unwrap_or(u32::MAX);
    status.next_window = None;
    (slots, !spec.paused && failed >= spec.max_failures)
}

/// An Event on the plan when it completes its round (a triggered plan: each time every
/// triggered node is done) or halts on failures (once each, against the status it had).
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
        let note = match plan.spec.triggered {
            true => format!("round {round}: every triggered node is done"),
            false => format!("round {round}: every selected node is done"),
        };
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
    write(ctx, plan, status, false).await?;
    Ok(Action::await_change())
}

/// How often a change of detail only (see [`tally::only_details_differ`]) goes to a
/// plan's status at most: each node's phase changes several times, each write wakes
/// the plan again, and the node's own NodeMaintenance has it at once anyway.
const DETAILS_EVERY: Duration = Duration::from_secs(10);

/// When each plan's status was last written.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Instant>>);

impl Written {
    /// Whether a write of detail only is due for the plan.
    fn details_due(&self, plan: &str) -> bool {
        self.0.lock().map_or(true, |w| {
            w.get(plan).is_none_or(|at| at.elapsed() >= DETAILS_EVERY)
        })
    }

    fn wrote(&self, plan: &str) {
        if let Ok(mut w) = self.0.lock() {
            w.insert(plan.to_string(), Instant::now());
        }
    }
}

/// Writes the status (a complete plan's at once) and, once it is written, tells the
/// webhook what changed since the last one (`told_complete`: the completion too).
async fn write_and_tell(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    status: MaintenancePlanStatus,
    complete: bool,
    told_complete: bool,
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
    webhook: Option<&Arc<crate::notify::Webhook>>,
) -> Result<(), ReconcileError> {
    let told = webhook.map(|w| {
        let before = plan.status.as_ref();
        let told = super::notices::of(plan, before, &status, children, told_complete);
        (w, told)
    });
    if write(ctx, plan, status, !complete).await?
        && let Some((webhook, told)) = told
    {
        for notification in told {
            ctx.notifier.send(webhook, notification);
        }
    }
    Ok(())
}

/// Writes the status; `details_may_wait`: a change of detail only waits for its turn
/// (the plan looks again before long). Whether it wrote: what changed is told then.
async fn write(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    status: MaintenancePlanStatus,
    details_may_wait: bool,
) -> Result<bool, ReconcileError> {
    let name = plan.name_any();
    match plan.status.as_ref() {
        Some(before) if *before == status => return Ok(false),
        Some(before)
            if details_may_wait
                && tally::only_details_differ(before, &status)
                && !ctx.plan_writes.details_due(&name) =>
        {
            return Ok(false);
        }
        _ => {}
    }
    let mut updated = plan.clone();
    updated.status = Some(status);
    let api: Api<MaintenancePlan> = Api::all(ctx.kordon.conn.client.clone());
    api.replace_status(&name, &PostParams::default(), &updated)
        .await?;
    ctx.plan_writes.wrote(&name);
    Ok(true)
}
