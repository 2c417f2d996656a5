//! A MaintenancePlan's decisions that read no API: where each selected node stands in
//! the round, and whether any node may start now. The reconcile feeds them the plan's
//! nodes and the NodeMaintenances from its watch, and carries their answer out.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::status::set_condition;
use crate::api::duration;
use crate::api::maintenance_plan::{
    APPROVE_ANNOTATION, GatesSpec, MaintenancePlanSpec, MaintenancePlanStatus, OutByOthers,
    PlanNode, PlanWait, SOAK_FAILED, TRIGGER_LABEL,
};
use crate::api::node_maintenance::{NodeMaintenance, StatusPhase};
use crate::fleet::MaxUnavailable;
use crate::fleet::caps::{self, Slot};
use crate::fleet::mark::Mark;
use crate::fleet::rate::{RateBudget, Room};
use crate::fleet::sequence::Sequence;
use crate::fleet::unavailable::{self, OutOfService};
use crate::fleet::window::{self, Availability, Window};
use crate::metric_gate::{self, AlertmanagerGate, Gates, Hold, PrometheusGate, Verdict};

/// The plan's spec, read once before it decides.
#[derive(Debug)]
pub struct Parsed {
    /// `maxUnavailable` resolved against the selected nodes.
    pub cap: usize,
    pub windows: Vec<Window>,
    pub pause_between: Option<Duration>,
    /// `spec.notify`'s webhook.
    pub notify: Option<Arc<crate::notify::Webhook>>,
    pub max_per: Option<RateBudget>,
    pub sequence: Option<Sequence>,
    /// `spec.gates`.
    pub gates: Option<Gates>,
}

/// Reads `maxUnavailable`, the windows, `pauseBetween`, `maxPer` and `sequence`; what
/// is wrong, named by its field.
pub fn parse(spec: &MaintenancePlanSpec, selected: usize) -> Result<Parsed, String> {
    let cap = spec
        .max_unavailable
        .parse::<MaxUnavailable>()
        .and_then(|m| m.resolve(selected.max(1)))
        .map_err(|e| format!("maxUnavailable: {e}"))?;
    let windows = spec
        .windows
        .iter()
        .map(|w| w.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("windows: {e}"))?;
    let pause_between = spec
        .pause_between
        .as_deref()
        .map(duration::parse)
        .transpose()
        .map_err(|e| format!("pauseBetween: {e}"))?;
    let notify = spec
        .notify
        .as_ref()
        .map(|n| n.url.parse().map(Arc::new))
        .transpose()
        .map_err(|e| format!("notify.url: {e}"))?;
    let max_per = spec
        .max_per
        .as_ref()
        .map(|m| {
            let period = duration::parse(&m.period)?;
            RateBudget::new(period, m.starts).map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(|e| format!("maxPer: {e}"))?;
    let sequence = spec
        .sequence
        .as_ref()
        .map(|s| Sequence::new(&s.key, s.order.clone()))
        .transpose()
        .map_err(|e| format!("sequence: {e}"))?;
    let gates = spec.gates.as_ref().map(gates).transpose()?.flatten();
    Ok(Parsed {
        cap,
        windows,
        pause_between,
        notify,
        max_per,
        sequence,
        gates,
    })
}

/// `spec.gates`, read; what is wrong, named by its field.
fn gates(spec: &GatesSpec) -> Result<Option<Gates>, String> {
    let prometheus = spec
        .prometheus
        .as_ref()
        .map(|p| {
            let url = p
                .url
                .parse()
                .map_err(|e| format!("gates.prometheus.url: {e}"))?;
            let queries = (p.pause_on_query.iter())
                .map(|q| q.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("gates.prometheus.pauseOnQuery: {e}"))?;
            Ok::<_, String>(PrometheusGate { url, queries })
        })
        .transpose()?;
    let alertmanager = spec
        .alertmanager
        .as_ref()
        .map(|a| {
            let url = a
                .url
                .parse()
                .map_err(|e| format!("gates.alertmanager.url: {e}"))?;
            let alerts = (a.pause_on_alerts.iter())
                .map(|m| m.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("gates.alertmanager.pauseOnAlerts: {e}"))?;
            Ok::<_, String>(AlertmanagerGate { url, alerts })
        })
        .transpose()?;
    Ok(Gates::new(prometheus, alertmanager))
}

/// The wait a failing gate makes a plan say (`why`: the gate's finding).
pub fn gate_wait(why: &str) -> String {
    format!(
        "a metric gate fails: {why}; no new node starts until it passes (a new value of the annotation {APPROVE_ANNOTATION} starts one node anyway)"
    )
}

/// Where the plan's nodes stand in this round.
#[derive(Debug, Default)]
pub struct Tally {
    /// Each node's place under the caps.
    pub slots: Vec<Slot>,
    /// Each node's record in the status.
    pub records: BTreeMap<String, PlanNode>,
    pub done: u32,
    pub active: u32,
    pub failed: u32,
    /// Selected nodes someone else has out, and why (with `spec.countOthersOut`).
    pub out_by_others: Vec<OutByOthers>,
}

/// Tallies the `selected` nodes from this round's NodeMaintenances of the plan
/// (`children`, by node) and the nodes any NodeMaintenance holds (`held_now`).
pub fn tally(
    selected: &[Node],
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
    held_now: &BTreeSet<String>,
    spec: &MaintenancePlanSpec,
) -> Tally {
    let mut t = Tally::default();
    for node in selected {
        let node_name = node.name_any();
        let child = children.get(&node_name);
        // A NodeMaintenance just created has no phase yet: it is under way. One done that
        // failed its soak counts as failed.
        let phase = child.map(|c| match c.status.as_ref().and_then(|s| s.phase) {
            Some(StatusPhase::Done) if soak_failure(c).is_some() => StatusPhase::Failed,
            Some(phase) => phase,
            None => StatusPhase::Pending,
        });
        let out_here = match phase {
            Some(StatusPhase::Done) => {
                t.done += 1;
                false
            }
            // Failed while out of service (a step), it stays out; failed at the last
            // gate, it is back in service.
            Some(StatusPhase::Failed) => {
                t.failed += 1;
                child.is_some_and(|c| c.has_node_out(Some(node)))
            }
            Some(StatusPhase::Abandoned) => {
                t.failed += 1;
                false
            }
            Some(_) => {
                t.active += 1;
                true
            }
            None => false,
        };
        // What a node out holds of the workloads: what its drain touched (this plan's,
        // or a roll's).
        let touched = match child {
            Some(c) => c.status.as_ref().map(|s| s.workloads.clone()),
            None => Mark::of(node).map(|m| m.workloads),
        };
        // Out by this plan's own maintenance, or by anyone else's: another plan may
        // take a node this plan has already done in this round.
        let kordons = out_here || held_now.contains(&node_name) || out_of_service_elsewhere(node);
        // Out by someone else: counted, once, and left to them while they have it.
        let others = (spec.count_others_out && !kordons)
            .then(|| unavailable::by_others(node))
            .flatten();
        if let Some(why) = &others {
            t.out_by_others.push(OutByOthers {
                node: node_name.clone(),
                reason: why.to_string(),
            });
        }
        let pending = child.is_none();
        t.slots.push(Slot {
            node: node_name.clone(),
            out: kordons || others.is_some(),
            pending,
            domains: spec
                .max_unavailable_per
                .keys()
                .map(|l| (l.clone(), node.labels().get(l).cloned()))
                .collect(),
            workloads: touched.unwrap_or_default().into_iter().collect(),
            single: BTreeSet::new(),
        });
        t.records.insert(
            node_name,
            PlanNode {
                maintenance: child.map(|c| c.name_any()),
                phase,
                waiting: child
                    .and_then(|c| blocked_by(c).or_else(|| soak_failure(c).cloned()))
                    .or_else(|| others.map(|why| held_by_others(&why, pending))),
            },
        );
    }
    t
}

/// Whether two statuses of a plan differ only in detail: a node's phase or what it
/// waits for, the wording of the plan's wait. Its counts, the kind of wait, its times
/// and the state of its conditions (and the generation they observed) are the same.
pub fn only_details_differ(a: &MaintenancePlanStatus, b: &MaintenancePlanStatus) -> bool {
    let strip = |s: &MaintenancePlanStatus| {
        let conditions: Vec<_> = s
            .conditions
            .iter()
            .map(|c| {
                let (type_, status) = (c.type_.clone(), c.status.clone());
                (type_, status, c.reason.clone(), c.observed_generation)
            })
            .collect();
        let bare = MaintenancePlanStatus {
            nodes: BTreeMap::new(),
            waiting: None,
            conditions: Vec::new(),
            ..s.clone()
        };
        (bare, conditions)
    };
    strip(a) == strip(b)
}

/// The plan's conditions as its counts and its wait say: `Progressing` while nodes are
/// under way or may start, `Blocked` with the wait's sentence, `Complete` once every
/// selected node is done. A `triggered` plan is complete while every node that carries
/// the label is done for its value (none carrying it too), and says it awaits the next.
pub fn set_conditions(
    status: &mut MaintenancePlanStatus,
    complete: bool,
    triggered: bool,
    generation: Option<i64>,
) {
    let progressing = status.active > 0 || (status.pending > 0 && status.waiting.is_none());
    let conditions = &mut status.conditions;
    let idle = match (progressing, triggered && complete) {
        (true, _) => "NodesUnderWay",
        (false, true) => "AwaitingTrigger",
        (false, false) => "Idle",
    };
    set_condition(conditions, "Progressing", progressing, idle, "", generation);
    match &status.waiting {
        Some(why) => set_condition(conditions, "Blocked", true, "Waiting", why, generation),
        None => set_condition(conditions, "Blocked", false, "NotBlocked", "", generation),
    }
    let awaits = format!(
        "every node that carries {TRIGGER_LABEL} is done for its value; a node labelled anew starts again"
    );
    let (left, says) = match (complete, triggered) {
        (true, true) => ("TriggeredNodesDone", awaits.as_str()),
        (true, false) => ("AllNodesDone", ""),
        (false, _) => ("NodesLeft", ""),
    };
    set_condition(conditions, "Complete", complete, left, says, generation);
}

/// Why no node may start now, whatever the caps say.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBack {
    pub kind: PlanWait,
    pub message: String,
    /// When the next window opens, while outside every window.
    pub next_window: Option<Time>,
}

/// Whether the plan starts no node now: paused, halted by its failures, outside its
/// windows, or within `pauseBetween` of the last node's finish, in that order.
pub fn held_back(
    spec: &MaintenancePlanSpec,
    failed: u32,
    windows: &[Window],
    pause_between: Option<Duration>,
    last_finished: Option<&Time>,
    now: jiff::Timestamp,
) -> Option<HeldBack> {
    let held = |kind, message: String| {
        Some(HeldBack {
            kind,
            message,
            next_window: None,
        })
    };
    if spec.paused {
        return held(PlanWait::Paused, "paused".into());
    }
    if failed >= spec.max_failures {
        return held(
            PlanWait::Halted,
            format!(
                "halted: {failed} node(s) failed (maxFailures {})",
                spec.max_failures
            ),
        );
    }
    if let Some(Availability::Closed { opens }) = window::availability(windows, now) {
        return Some(HeldBack {
            kind: PlanWait::Window,
            message: format!("outside its windows until {opens}"),
            next_window: Some(Time(opens)),
        });
    }
    let until = pause_between
        .and_then(|p| jiff::SignedDuration::try_from(p).ok())
        .and_then(|p| last_finished?.0.checked_add(p).ok())
        .filter(|t| *t > now)?;
    held(
        PlanWait::PauseBetween,
        format!("pausing between nodes until {until}"),
    )
}

/// The first part of a plan's decision, where nothing holds it back: the slots its caps
/// choose from, `sequence`'s wait when it sets pending nodes aside, and how many nodes
/// `maxPer` lets start (`None`: as many as the caps allow).
#[derive(Debug)]
pub struct Open {
    pub slots: Vec<Slot>,
    pub sequenced: Option<String>,
    pub free: Option<usize>,
}

/// Why no node may start now (held back, or `maxPer` spent), or what the caps choose
/// from (`status`: as [`tally`] left it; `started`: the plan's starts in every round).
pub fn open(
    parsed: &Parsed,
    spec: &MaintenancePlanSpec,
    status: &MaintenancePlanStatus,
    slots: &[Slot],
    selected: &[Node],
    started: &[jiff::Timestamp],
    now: jiff::Timestamp,
) -> Result<Open, HeldBack> {
    let (windows, pause, last) = (&parsed.windows, parsed.pause_between, &status.last_finished);
    if let Some(held) = held_back(spec, status.failed, windows, pause, last.as_ref(), now) {
        return Err(held);
    }
    let free = rate_room(parsed.max_per.as_ref(), started, now)?;
    let (slots, sequenced) = match &parsed.sequence {
        Some(seq) => in_sequence(seq, slots, selected, &status.nodes),
        None => (slots.to_vec(), None),
    };
    Ok(Open {
        slots,
        sequenced,
        free,
    })
}

/// Whether a pass asks the plan's metric gates: a node could start (the caps admit one
/// before what the pending nodes hold is read, which only ever admits fewer) or
/// `pauseBetween` runs (so a soak that turns bad says so). The gates are asked before
/// the plans' turn to decide, so this foresees every start the decision can make.
pub fn asks_gates(open: &Result<Open, HeldBack>, cap: usize, per: &BTreeMap<String, u32>) -> bool {
    match open {
        Err(held) => held.kind == PlanWait::PauseBetween,
        Ok(open) => !caps::choose(&open.slots, cap, per).0.is_empty(),
    }
}

/// The gates were not asked before the decision (nothing could start at the first
/// look), yet nodes could start now: none does, and the plan looks again soon.
#[derive(Debug, PartialEq, Eq)]
pub struct Unasked;

/// `spec.gates` on the nodes the decision would `start`, from the `verdict` asked before
/// it, when a node would start or while `pauseBetween` runs: a failing gate empties
/// `start` and is the wait, unless a new `approve` value (the annotation
/// `kordon.dev/approve`) lets one node start (recorded in the status).
pub fn gate(
    parsed: &Parsed,
    verdict: Option<&Verdict>,
    approve: Option<&str>,
    start: &mut Vec<String>,
    pausing: bool,
    status: &mut MaintenancePlanStatus,
) -> Result<Option<(PlanWait, String)>, Unasked> {
    if parsed.gates.is_none() || (start.is_empty() && !pausing) {
        return Ok(None);
    }
    let Some(verdict) = verdict else {
        start.clear();
        return Err(Unasked);
    };
    match metric_gate::hold(Some(verdict), approve, status.approved.as_deref()) {
        Hold::Pass => Ok(None),
        Hold::Approved(approval) => {
            start.truncate(1);
            if !start.is_empty() {
                status.approved = Some(approval);
            }
            Ok(None)
        }
        Hold::Held(why) => {
            start.clear();
            Ok(Some((PlanWait::Gate, gate_wait(&why))))
        }
    }
}

/// When a NodeMaintenance of the plan started its node, for `maxPer`: its creation,
/// which the API server keeps in whole seconds. Counted from the end of that second, so
/// the budget is never exceeded; at worst the next start waits a second longer.
pub fn started(nm: &NodeMaintenance) -> Option<jiff::Timestamp> {
    let created = nm.metadata.creation_timestamp.as_ref()?.0;
    created.checked_add(jiff::SignedDuration::from_secs(1)).ok()
}

/// How many nodes `maxPer` lets start now (`None`: no budget, as many as the caps
/// allow), or why none may; `started`: when each of the plan's NodeMaintenances, of
/// every round, was created.
pub fn rate_room(
    budget: Option<&RateBudget>,
    started: &[jiff::Timestamp],
    now: jiff::Timestamp,
) -> Result<Option<usize>, HeldBack> {
    let Some(budget) = budget else {
        return Ok(None);
    };
    match budget.room(started, now) {
        Room::Free(n) => Ok(Some(n.get() as usize)),
        Room::SpentUntil(until) => Err(HeldBack {
            kind: PlanWait::Rate,
            message: format!(
                "{} (maxPer): the next node starts at {until}",
                budget.describe()
            ),
            next_window: None,
        }),
    }
}

/// `sequence`: the slots the caps choose from, with the pending nodes outside the
/// domain under way set aside, and what they wait for when any are. A node is finished
/// once its NodeMaintenance of this round is Done, Failed or Abandoned.
pub fn in_sequence(
    seq: &Sequence,
    slots: &[Slot],
    selected: &[Node],
    records: &BTreeMap<String, PlanNode>,
) -> (Vec<Slot>, Option<String>) {
    let finished = |node: &str| {
        records.get(node).and_then(|r| r.phase).is_some_and(|p| {
            matches!(
                p,
                StatusPhase::Done | StatusPhase::Failed | StatusPhase::Abandoned
            )
        })
    };
    let open = seq.open(selected.iter().filter(|n| !finished(&n.name_any())));
    let admitted: BTreeSet<String> = selected
        .iter()
        .filter(|n| seq.admits(n, open.as_ref()))
        .map(ResourceExt::name_any)
        .collect();
    let mut held = false;
    let slots = slots
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if s.pending && !admitted.contains(&s.node) {
                s.pending = false;
                held = true;
            }
            s
        })
        .collect();
    let why = open.filter(|_| held).map(|d| {
        format!(
            "sequence: the nodes of {} first; the next domain starts once each is done or failed ({})",
            seq.describe(&d),
            seq.describe_all(selected)
        )
    });
    (slots, why)
}

/// Out of service for a reason other than this plan: another NodeMaintenance, or a
/// `kordon roll` that has not finished it.
pub fn out_of_service_elsewhere(node: &Node) -> bool {
    unavailable::held_by_kordon(node)
}

/// What a node someone else has out means for the plan.
fn held_by_others(why: &OutOfService, pending: bool) -> String {
    let starts = if pending {
        " and starts once back in service"
    } else {
        ""
    };
    format!("out of service by someone else ({why}): it takes a place in the caps{starts}")
}

/// The message of the NodeMaintenance's `Blocked` condition, while it is True.
/// What the plan's soak found on a node done (`SOAK_FAILED`).
pub fn soak_failure(nm: &NodeMaintenance) -> Option<&String> {
    nm.metadata.annotations.as_ref()?.get(SOAK_FAILED)
}

/// The children done within the soak (`pauseBetween`) before `now`, not failed in it
/// yet: each with its node and when it finished, from when its node's pods are watched.
pub fn soaking(
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
    soak: Option<Duration>,
    now: jiff::Timestamp,
) -> Vec<(Arc<NodeMaintenance>, jiff::Timestamp)> {
    let Some(soak) = soak.and_then(|s| jiff::SignedDuration::try_from(s).ok()) else {
        return Vec::new();
    };
    children
        .values()
        .filter(|c| soak_failure(c).is_none())
        .filter_map(|c| {
            let status = c.status.as_ref()?;
            let finished = status.finished_at.as_ref()?.0;
            let soaking = status.phase == Some(StatusPhase::Done)
                && finished.checked_add(soak).is_ok_and(|end| end > now);
            soaking.then(|| (c.clone(), finished))
        })
        .collect()
}

fn blocked_by(nm: &NodeMaintenance) -> Option<String> {
    nm.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == super::status::BLOCKED && c.status == "True")
        .map(|c| c.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> MaintenancePlanSpec {
        let mut spec = json!({ "nodeSelector": "pool=a", "step": { "hold": {} } });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(spec).expect("spec")
    }

    #[test]
    fn gates_are_read_and_a_bad_part_is_named_by_its_field() {
        let read =
            |gates: serde_json::Value| parse(&spec(json!({ "gates": gates })), 3).map(|p| p.gates);
        let both = read(json!({
            "prometheus": { "url": "http://prometheus:9090", "pauseOnQuery": ["up == 0"] },
            "alertmanager": { "url": "http://alertmanager:9093", "pauseOnAlerts": ["severity=critical"] },
        }))
        .expect("gates")
        .expect("some");
        assert!(both.prometheus().is_some() && both.alertmanager().is_some());
        assert_eq!(read(json!({})).expect("no gates"), None);
        for (gates, says) in [
            (
                json!({ "prometheus": { "url": "prometheus:9090", "pauseOnQuery": ["up"] } }),
                "gates.prometheus.url: \"prometheus:9090\" is not an http:// or https:// URL with a host",
            ),
            (
                json!({ "prometheus": { "url": "http://p", "pauseOnQuery": [" "] } }),
                "gates.prometheus.pauseOnQuery: a query is empty",
            ),
            (
                json!({ "alertmanager": { "url": "http://a", "pauseOnAlerts": ["severity"] } }),
                "gates.alertmanager.pauseOnAlerts: \"severity\" in \"severity\" is not NAME=VALUE (or !=, =~, !~)",
            ),
        ] {
            assert_eq!(read(gates).err().as_deref(), Some(says));
        }
    }

    #[test]
    fn a_failing_gate_holds_the_plan_and_each_new_approval_starts_one_node() {
        use crate::metric_gate::{Hold, hold};
        let failing = Verdict::of(vec![crate::metric_gate::Finding::AlertsFailed {
            url: "http://am:9093".parse().expect("url"),
            error: "refused".into(),
        }]);
        assert_eq!(hold(None, Some("x"), None), Hold::Pass);
        assert_eq!(hold(Some(&Verdict::Healthy), None, None), Hold::Pass);
        let why =
            "Alertmanager at http://am:9093 gives no answer (refused), which counts as unhealthy";
        assert_eq!(hold(Some(&failing), None, None), Hold::Held(why.into()));
        assert!(gate_wait(why).starts_with("a metric gate fails: Alertmanager at"));
        assert!(gate_wait(why).contains("kordon.dev/approve"));
        assert_eq!(
            hold(Some(&failing), Some("t1"), None),
            Hold::Approved("t1".into())
        );
        assert!(
            matches!(hold(Some(&failing), Some("t1"), Some("t1")), Hold::Held(_)),
            "an approval used once is spent"
        );
        assert_eq!(
            hold(Some(&failing), Some("t2"), Some("t1")),
            Hold::Approved("t2".into())
        );
    }

    #[test]
    fn the_gates_are_asked_before_the_decision_only_when_a_node_could_start_or_a_pause_runs() {
        let now: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().expect("time");
        let gated = |mut extra: serde_json::Value| {
            extra["gates"] =
                json!({ "prometheus": { "url": "http://p:9090", "pauseOnQuery": ["up == 0"] } });
            spec(extra)
        };
        let selected = [node("a", json!({})), node("b", json!({}))];
        let asks = |spec: &MaintenancePlanSpec,
                    children: &[(String, Arc<NodeMaintenance>)],
                    last: Option<&str>| {
            let parsed = parse(spec, selected.len()).expect("valid");
            let children: BTreeMap<_, _> = children.iter().cloned().collect();
            let t = tally(&selected, &children, &BTreeSet::new(), spec);
            let status = MaintenancePlanStatus {
                failed: t.failed,
                nodes: t.records,
                last_finished: last.map(|l| Time(l.parse().expect("time"))),
                ..Default::default()
            };
            let started: Vec<_> = children.values().filter_map(|c| started(c)).collect();
            let open = open(&parsed, spec, &status, &t.slots, &selected, &started, now);
            asks_gates(&open, parsed.cap, &spec.max_unavailable_per)
        };
        assert!(asks(&gated(json!({})), &[], None), "two nodes could start");
        assert!(!asks(&gated(json!({ "paused": true })), &[], None));
        let under_way = [child("a", Some("Draining"))];
        assert!(
            !asks(&gated(json!({})), &under_way, None),
            "at its cap of 1: nothing could start"
        );
        assert!(asks(
            &gated(json!({ "maxUnavailable": "2" })),
            &under_way,
            None
        ));
        let done = [child("a", Some("Done"))];
        let pausing = gated(json!({ "pauseBetween": "5m" }));
        assert!(
            asks(&pausing, &done, Some("2026-12-05T11:58:00Z")),
            "asked while pauseBetween runs"
        );
        assert!(
            asks(&pausing, &done, Some("2026-12-05T11:50:00Z")),
            "b could start"
        );
        let (_, mut recent) = child("a", Some("Done"));
        Arc::make_mut(&mut recent).metadata.creation_timestamp =
            Some(Time("2026-12-05T11:59:00Z".parse().expect("time")));
        let spent = gated(json!({ "maxPer": { "period": "1h", "starts": 1 } }));
        assert!(
            !asks(&spent, &[("a".into(), recent)], None),
            "maxPer is spent"
        );
    }

    #[test]
    fn the_decision_reads_the_gates_verdict_and_never_starts_a_node_the_gates_were_not_asked_for() {
        let gated = parse(
            &spec(json!({
                "gates": { "alertmanager": { "url": "http://am:9093", "pauseOnAlerts": ["severity=critical"] } },
            })),
            3,
        )
        .expect("valid");
        let failing = Verdict::of(vec![crate::metric_gate::Finding::AlertsFailed {
            url: "http://am:9093".parse().expect("url"),
            error: "refused".into(),
        }]);
        let nodes = || vec!["a".to_string(), "b".to_string()];
        let mut status = MaintenancePlanStatus::default();

        let ungated = parse(&spec(json!({})), 3).expect("valid");
        let mut start = nodes();
        assert_eq!(
            gate(&ungated, None, None, &mut start, false, &mut status),
            Ok(None)
        );
        assert_eq!(start, nodes(), "a plan without gates asks none");

        let mut start = nodes();
        assert_eq!(
            gate(&gated, None, None, &mut start, false, &mut status),
            Err(Unasked)
        );
        assert!(start.is_empty(), "not asked: nothing starts");
        let mut none = Vec::new();
        assert_eq!(
            gate(&gated, None, None, &mut none, false, &mut status),
            Ok(None)
        );

        let mut start = nodes();
        let healthy = Some(&Verdict::Healthy);
        assert_eq!(
            gate(&gated, healthy, None, &mut start, false, &mut status),
            Ok(None)
        );
        assert_eq!(start, nodes());

        let mut start = nodes();
        let held = gate(&gated, Some(&failing), None, &mut start, false, &mut status);
        let (kind, why) = held.expect("asked").expect("held");
        assert_eq!(kind, PlanWait::Gate);
        assert!(
            why.starts_with("a metric gate fails: Alertmanager at http://am:9093"),
            "{why}"
        );
        assert!(start.is_empty());
        let mut paused = Vec::new();
        let told = gate(&gated, Some(&failing), None, &mut paused, true, &mut status);
        assert!(
            matches!(told, Ok(Some((PlanWait::Gate, _)))),
            "a failing gate during pauseBetween is the wait"
        );

        let mut start = nodes();
        let approved = gate(
            &gated,
            Some(&failing),
            Some("t1"),
            &mut start,
            false,
            &mut status,
        );
        assert_eq!((approved, start), (Ok(None), vec!["a".to_string()]));
        assert_eq!(status.approved.as_deref(), Some("t1"));
    }

    /// A Ready node in zone z1.
    fn node(name: &str, annotations: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "zone": "z1" }, "annotations": annotations },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
        }))
        .expect("node")
    }

    /// This round's NodeMaintenance of `node` in `phase`.
    fn child(node: &str, phase: Option<&str>) -> (String, Arc<NodeMaintenance>) {
        let mut nm = json!({
            "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
            "metadata": { "name": format!("plan-{node}") },
            "spec": { "nodeName": node, "step": { "hold": {} } },
        });
        if let Some(phase) = phase {
            nm["status"] = json!({ "phase": phase });
        }
        (
            node.to_string(),
            Arc::new(serde_json::from_value(nm).expect("nm")),
        )
    }

    #[test]
    fn a_node_s_phase_is_detail_and_a_count_is_not() {
        let (_, child) = child("n1", Some("Draining"));
        let mut before = MaintenancePlanStatus {
            active: 1,
            waiting: Some("n1 waits for shop/web's budget".into()),
            ..Default::default()
        };
        before.nodes.insert(
            "n1".into(),
            PlanNode {
                maintenance: Some(child.name_any()),
                phase: Some(StatusPhase::Draining),
                waiting: None,
            },
        );
        set_conditions(&mut before, false, false, Some(1));
        let mut after = before.clone();
        if let Some(n) = after.nodes.get_mut("n1") {
            n.phase = Some(StatusPhase::AwaitingReady);
        }
        after.waiting = Some("n1 waits for Ready".into());
        assert!(only_details_differ(&before, &after));

        let mut done = after.clone();
        done.active = 0;
        done.done = 1;
        assert!(!only_details_differ(&before, &done), "a count is news");

        let mut observed = after.clone();
        set_conditions(&mut observed, false, false, Some(2));
        assert!(
            !only_details_differ(&after, &observed),
            "a new generation observed is news"
        );
    }

    #[test]
    fn a_spec_is_read_once_and_what_is_wrong_is_named_by_its_field() {
        let read = |extra| parse(&spec(extra), 8);
        let ok = read(json!({ "maxUnavailable": "25%", "pauseBetween": "1h30m" })).expect("valid");
        assert_eq!(
            (ok.cap, ok.pause_between),
            (2, Some(Duration::from_secs(5400)))
        );
        let bad = |extra| read(extra).err().unwrap_or_default();
        assert!(bad(json!({ "maxUnavailable": "lots" })).starts_with("maxUnavailable: "));
        assert!(bad(json!({ "windows": ["someday"] })).starts_with("windows: "));
        assert!(bad(json!({ "pauseBetween": "a while" })).starts_with("pauseBetween: "));
    }

    #[test]
    fn each_node_is_counted_once_and_out_while_under_way_or_held_elsewhere() {
        let selected = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
            node("d", json!({})),
            node("e", json!({})),
            // A node someone else's NodeMaintenance holds is out for this plan too.
            node("f", json!({ "kordon.dev/node-maintenance": "theirs" })),
        ];
        let children: BTreeMap<_, _> = [
            child("a", Some("Done")),
            child("b", Some("Draining")),
            child("c", None),
            child("d", Some("Abandoned")),
        ]
        .into_iter()
        .collect();
        let held = BTreeSet::from(["e".to_string()]);
        let t = tally(
            &selected,
            &children,
            &held,
            &spec(json!({ "maxUnavailablePer": { "zone": 1 } })),
        );
        assert_eq!(
            (t.done, t.active, t.failed),
            (1, 2, 1),
            "c just created counts as under way"
        );
        let out: Vec<&str> = t
            .slots
            .iter()
            .filter(|s| s.out)
            .map(|s| s.node.as_str())
            .collect();
        assert_eq!(out, ["b", "c", "e", "f"]);
        let pending: Vec<&str> = t
            .slots
            .iter()
            .filter(|s| s.pending)
            .map(|s| s.node.as_str())
            .collect();
        assert_eq!(pending, ["e", "f"]);
        assert_eq!(
            t.slots[0].domains.get("zone"),
            Some(&Some("z1".to_string()))
        );
        assert_eq!(t.records["b"].maintenance.as_deref(), Some("plan-b"));
        assert_eq!(t.records["c"].phase, Some(StatusPhase::Pending));
    }

    #[test]
    fn a_node_someone_else_has_out_takes_a_place_and_waits_unless_the_spec_says_not_to_count_it() {
        let mut cordoned = node("b", json!({}));
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        // c's cordon is its NodeMaintenance's: counted as the plan's own, not twice.
        let mut own = node("c", json!({ "kordon.dev/node-maintenance": "plan-c" }));
        own.spec.clone_from(&cordoned.spec);
        let selected = [node("a", json!({})), cordoned, own];
        let children: BTreeMap<_, _> = [child("c", Some("Draining"))].into_iter().collect();
        let counted = tally(&selected, &children, &BTreeSet::new(), &spec(json!({})));
        let out: Vec<(&str, bool)> = counted
            .slots
            .iter()
            .map(|s| (s.node.as_str(), s.out))
            .collect();
        assert_eq!(out, [("a", false), ("b", true), ("c", true)]);
        assert!(
            counted.slots[1].pending,
            "b is not started while someone else has it"
        );
        assert_eq!(
            counted.out_by_others,
            [OutByOthers {
                node: "b".into(),
                reason: "cordoned".into()
            }]
        );
        assert_eq!(
            counted.records["b"].waiting.as_deref(),
            Some(
                "out of service by someone else (cordoned): it takes a place in the caps and starts once back in service"
            )
        );
        let uncounted = tally(
            &selected,
            &children,
            &BTreeSet::new(),
            &spec(json!({ "countOthersOut": false })),
        );
        assert!(!uncounted.slots[1].out && uncounted.out_by_others.is_empty());
    }

    #[test]
    fn a_spec_s_rate_and_sequence_are_read_once_and_named_by_their_field() {
        let read = |extra| parse(&spec(extra), 8);
        let ok = read(json!({
            "maxPer": { "period": "24h", "starts": 5 },
            "sequence": { "key": "zone", "order": ["b", "a"] },
        }))
        .expect("valid");
        let rate = ok.max_per.expect("a budget");
        assert_eq!(
            (rate.period(), rate.starts()),
            (Duration::from_secs(86_400), 5)
        );
        assert_eq!(
            ok.sequence.map(|s| s.order().to_vec()),
            Some(vec!["b".into(), "a".into()])
        );
        let bad = |extra| read(extra).err().unwrap_or_default();
        assert_eq!(
            bad(json!({ "maxPer": { "period": "0s", "starts": 1 } })),
            "maxPer: the period must be more than 0, e.g. 24h"
        );
        assert!(
            bad(json!({ "maxPer": { "period": "1h", "starts": 0 } }))
                .starts_with("maxPer: at most 0 starts")
        );
        assert!(
            bad(json!({ "maxPer": { "period": "a day", "starts": 1 } }))
                .starts_with("maxPer: \"a day\" is not")
        );
        assert!(
            bad(json!({ "sequence": { "key": "" } }))
                .starts_with("sequence: the label key is empty")
        );
        assert_eq!(
            bad(json!({ "sequence": { "key": "zone", "order": ["a", "a"] } })),
            "sequence: the order names \"a\" twice"
        );
    }

    #[test]
    fn a_spent_rate_budget_holds_the_plan_until_the_oldest_start_ages_out() {
        let now: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().expect("time");
        let ago = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let two_a_minute = RateBudget::new(Duration::from_secs(60), 2).expect("budget");
        assert_eq!(rate_room(None, &[ago(1), ago(2)], now), Ok(None));
        assert_eq!(
            rate_room(Some(&two_a_minute), &[ago(90), ago(10)], now),
            Ok(Some(1))
        );
        let spent = rate_room(Some(&two_a_minute), &[ago(50), ago(10)], now).expect_err("spent");
        assert_eq!(spent.kind, PlanWait::Rate);
        assert_eq!(
            spent.message,
            "at most 2 node start(s) per 1m (maxPer): the next node starts at 2026-12-05T12:00:10Z"
        );
    }

    #[test]
    fn a_start_counts_from_the_end_of_the_second_its_record_was_created_in() {
        let (_, mut nm) = child("a", None);
        assert_eq!(started(&nm), None);
        let created: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().expect("time");
        Arc::make_mut(&mut nm).metadata.creation_timestamp = Some(Time(created));
        assert_eq!(
            started(&nm),
            Some("2026-12-05T12:00:01Z".parse().expect("time"))
        );
    }

    #[test]
    fn the_next_zone_waits_until_every_node_of_this_one_is_done_or_failed() {
        let in_zone = |name: &str, zone: &str| {
            let mut n = node(name, json!({}));
            n.metadata.labels = Some([("zone".to_string(), zone.to_string())].into());
            n
        };
        let selected = [in_zone("a1", "a"), in_zone("b1", "b"), in_zone("b2", "b")];
        let seq = Sequence::new("zone", vec!["b".into(), "a".into()]).expect("valid");
        let record = |phase: Option<StatusPhase>| PlanNode {
            maintenance: None,
            phase,
            waiting: None,
        };
        let mut records: BTreeMap<String, PlanNode> = ["a1", "b1", "b2"]
            .iter()
            .map(|n| (n.to_string(), record(None)))
            .collect();
        // A node is pending until this round's NodeMaintenance of it exists.
        let startable = |records: &BTreeMap<String, PlanNode>| {
            let slots: Vec<Slot> = records
                .iter()
                .map(|(node, r)| Slot {
                    node: node.clone(),
                    pending: r.phase.is_none(),
                    out: r.phase.is_some(),
                    ..Slot::default()
                })
                .collect();
            let (slots, why) = in_sequence(&seq, &slots, &selected, records);
            let names: Vec<String> = slots
                .into_iter()
                .filter(|s| s.pending)
                .map(|s| s.node)
                .collect();
            (names, why)
        };
        let (now, why) = startable(&records);
        assert_eq!(now, ["b1", "b2"]);
        assert_eq!(
            why.as_deref(),
            Some(
                "sequence: the nodes of zone=b first; the next domain starts once each is done or failed (zone=b, zone=a)"
            )
        );
        records.insert("b1".into(), record(Some(StatusPhase::Done)));
        records.insert("b2".into(), record(Some(StatusPhase::Verifying)));
        assert!(startable(&records).0.is_empty(), "b2 is still under way");
        records.insert("b2".into(), record(Some(StatusPhase::Failed)));
        assert_eq!(startable(&records), (vec!["a1".to_string()], None));
    }

    #[test]
    fn a_plan_is_held_back_by_pause_then_failures_then_windows_then_its_pause_between() {
        let saturday_noon: jiff::Timestamp = "2026-12-05T12:00:00Z".parse().expect("time");
        let weekdays: Vec<Window> = vec!["Mon-Fri 02:00-05:00 UTC".parse().expect("window")];
        let finished = Time("2026-12-05T11:58:00Z".parse().expect("time"));
        let five_minutes = Some(Duration::from_secs(300));
        let kind = |h: Option<HeldBack>| h.map(|h| h.kind);

        let paused = spec(json!({ "paused": true, "maxFailures": 1 }));
        assert_eq!(
            kind(held_back(&paused, 1, &weekdays, None, None, saturday_noon)),
            Some(PlanWait::Paused)
        );
        let halted = held_back(
            &spec(json!({ "maxFailures": 1 })),
            1,
            &weekdays,
            None,
            None,
            saturday_noon,
        );
        assert_eq!(
            halted.as_ref().map(|h| h.message.as_str()),
            Some("halted: 1 node(s) failed (maxFailures 1)")
        );
        let closed = held_back(
            &spec(json!({})),
            0,
            &weekdays,
            five_minutes,
            Some(&finished),
            saturday_noon,
        )
        .expect("outside its windows");
        assert_eq!(closed.kind, PlanWait::Window);
        assert_eq!(
            closed.next_window.map(|t| t.0.to_string()),
            Some("2026-12-07T02:00:00Z".to_string())
        );
        let pausing = held_back(
            &spec(json!({})),
            0,
            &[],
            five_minutes,
            Some(&finished),
            saturday_noon,
        );
        assert_eq!(kind(pausing), Some(PlanWait::PauseBetween));
        let later: jiff::Timestamp = "2026-12-05T12:04:00Z".parse().expect("time");
        assert_eq!(
            held_back(
                &spec(json!({})),
                0,
                &[],
                five_minutes,
                Some(&finished),
                later
            ),
            None
        );
        assert_eq!(
            held_back(
                &spec(json!({})),
                0,
                &[],
                None,
                Some(&finished),
                saturday_noon
            ),
            None
        );
    }
}
