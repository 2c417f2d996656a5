//! What a MaintenancePlan tells its webhook (`spec.notify`): read from the difference
//! between the status it last wrote and the one it writes now, so each turning point is
//! told once, also across passes whose writes wait: a node started (its NodeMaintenance
//! appeared), a budget holds one of its pods (with the pods and budgets its
//! NodeMaintenance names), a node failed, the plan stopped starting nodes for a reason
//! other than its caps (a window, a pause, its failures, `spec.paused`), and its round
//! completed.
use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::maintenance_plan::{MaintenancePlan, MaintenancePlanStatus, PlanNode, PlanWait};
use crate::api::node_maintenance::{NodeMaintenance, StatusPhase};
use crate::notify::{Blocking, Kind, Notification, Source};

/// The notifications that going from `before` to `after` makes.
pub fn of(
    plan: &MaintenancePlan,
    before: Option<&MaintenancePlanStatus>,
    after: &MaintenancePlanStatus,
    children: &BTreeMap<String, Arc<NodeMaintenance>>,
    complete: bool,
) -> Vec<Notification> {
    // A new round starts from nothing told.
    let before = before.filter(|b| b.round == after.round);
    let no_node = PlanNode::default();
    let note = |kind, node: Option<&str>, message: String| Notification {
        kind,
        source: Source {
            kind: "MaintenancePlan",
            namespace: plan.namespace(),
            name: plan.name_any(),
        },
        node: node.map(str::to_string),
        phase: None,
        message,
        blocking: Vec::new(),
        at: jiff::Timestamp::now(),
    };
    let mut told = Vec::new();
    for (node, now) in &after.nodes {
        let was = before.and_then(|b| b.nodes.get(node)).unwrap_or(&no_node);
        let phase = now.phase.map(|p| format!("{p:?}"));
        // A new NodeMaintenance: the node's first, or one for a new trigger value.
        if now.maintenance.is_some() && now.maintenance != was.maintenance {
            let mut n = note(Kind::Started, Some(node), format!("{node} is started"));
            n.phase.clone_from(&phase);
            told.push(n);
        }
        let held = children
            .get(node)
            .and_then(|c| c.status.as_ref()?.drain.as_ref())
            .map(|d| d.held.as_slice())
            .unwrap_or_default();
        if now.waiting.is_some() && now.waiting != was.waiting && !held.is_empty() {
            let why = now.waiting.clone().unwrap_or_default();
            let mut n = note(Kind::Blocked, Some(node), why);
            n.phase.clone_from(&phase);
            n.blocking = held
                .iter()
                .map(|h| Blocking {
                    pod: h.pod.clone(),
                    budget: h.budget.clone(),
                    detail: h.detail.clone(),
                })
                .collect();
            told.push(n);
        }
        if now.phase == Some(StatusPhase::Failed) && was.phase != Some(StatusPhase::Failed) {
            let error = children
                .get(node)
                .and_then(|c| {
                    let soak = super::tally::soak_failure(c).cloned();
                    soak.or_else(|| c.status.as_ref()?.last_error.clone())
                })
                .unwrap_or_else(|| "no error recorded".into());
            let mut n = note(Kind::Failed, Some(node), format!("{node} failed: {error}"));
            n.phase = phase;
            told.push(n);
        }
    }
    let was_waiting = before.and_then(|b| b.waiting_for);
    if let Some(wait) = after.waiting_for
        && Some(wait) != was_waiting
        && !matches!(wait, PlanWait::Caps | PlanWait::OtherPlans)
    {
        let why = after.waiting.clone().unwrap_or_else(|| format!("{wait:?}"));
        told.push(note(Kind::Paused, None, why));
    }
    let was_complete = before.is_some_and(is_complete);
    if complete && !was_complete {
        let round = after.round.as_deref().unwrap_or_default();
        let message = format!("round {round} complete: {} node(s) done", after.done);
        told.push(note(Kind::Completed, None, message));
    }
    told
}

fn is_complete(status: &MaintenancePlanStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::maintenance_plan::MaintenancePlanSpec;
    use crate::api::node_maintenance::{DrainProgress, HeldPod, NodeMaintenanceStatus};

    fn plan() -> MaintenancePlan {
        let spec: MaintenancePlanSpec = serde_json::from_value(
            serde_json::json!({ "nodeSelector": "pool=a", "step": { "hold": {} } }),
        )
        .expect("spec");
        let mut p = MaintenancePlan::new("patch", spec);
        p.metadata.namespace = Some("ops".into());
        p
    }

    /// A node's record: name, NodeMaintenance, phase, what it waits for.
    type Row<'a> = (
        &'a str,
        Option<&'a str>,
        Option<StatusPhase>,
        Option<&'a str>,
    );

    fn status(nodes: &[Row]) -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            round: Some("r1".into()),
            nodes: nodes
                .iter()
                .map(|(n, m, p, w)| {
                    let record = PlanNode {
                        maintenance: m.map(str::to_string),
                        phase: *p,
                        waiting: w.map(str::to_string),
                    };
                    ((*n).to_string(), record)
                })
                .collect(),
            ..Default::default()
        }
    }

    fn held_child(node: &str) -> BTreeMap<String, Arc<NodeMaintenance>> {
        let mut nm: NodeMaintenance = serde_json::from_value(serde_json::json!({
            "metadata": { "name": format!("patch-{node}") },
            "spec": { "nodeName": node, "step": { "hold": {} } }
        }))
        .expect("nm");
        nm.status = Some(NodeMaintenanceStatus {
            drain: Some(DrainProgress {
                total: 1,
                waiting: 1,
                held: vec![HeldPod {
                    pod: "shop/web-1".into(),
                    budget: Some("web".into()),
                    detail: "needs 3 healthy".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        BTreeMap::from([(node.to_string(), Arc::new(nm))])
    }

    fn kinds(told: &[Notification]) -> Vec<(Kind, Option<&str>)> {
        told.iter().map(|n| (n.kind, n.node.as_deref())).collect()
    }

    #[test]
    fn a_start_a_block_and_a_failure_are_each_told_once() {
        let plan = plan();
        let none = BTreeMap::new();
        let before = status(&[("n1", None, None, None)]);
        let started = status(&[("n1", Some("patch-n1"), Some(StatusPhase::Pending), None)]);
        let told = of(&plan, Some(&before), &started, &none, false);
        assert_eq!(kinds(&told), [(Kind::Started, Some("n1"))]);
        assert_eq!(told[0].source.namespace.as_deref(), Some("ops"));
        assert!(of(&plan, Some(&started), &started, &none, false).is_empty());

        let waits = Some("n1 waits for shop/web's budget");
        let blocked = status(&[("n1", Some("patch-n1"), Some(StatusPhase::Draining), waits)]);
        let told = of(&plan, Some(&started), &blocked, &held_child("n1"), false);
        assert_eq!(kinds(&told), [(Kind::Blocked, Some("n1"))]);
        assert_eq!(told[0].blocking[0].budget.as_deref(), Some("web"));
        assert!(of(&plan, Some(&blocked), &blocked, &held_child("n1"), false).is_empty());

        let failed = status(&[("n1", Some("patch-n1"), Some(StatusPhase::Failed), None)]);
        let told = of(&plan, Some(&blocked), &failed, &none, false);
        assert_eq!(kinds(&told), [(Kind::Failed, Some("n1"))]);
        assert_eq!(told[0].phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn a_node_started_again_for_a_new_trigger_value_is_told_again() {
        let plan = plan();
        let none = BTreeMap::new();
        let done = status(&[("n1", Some("patch-n1-r1-100"), Some(StatusPhase::Done), None)]);
        // One pass sees the new value and starts the node at once.
        let again = status(&[(
            "n1",
            Some("patch-n1-r1-200"),
            Some(StatusPhase::Pending),
            None,
        )]);
        let told = of(&plan, Some(&done), &again, &none, false);
        assert_eq!(kinds(&told), [(Kind::Started, Some("n1"))]);
    }

    #[test]
    fn a_pause_is_told_but_the_caps_are_not_and_completion_once() {
        let plan = plan();
        let none = BTreeMap::new();
        let quiet = status(&[]);
        let mut caps = quiet.clone();
        caps.waiting_for = Some(PlanWait::Caps);
        assert!(of(&plan, Some(&quiet), &caps, &none, false).is_empty());
        let mut window = quiet.clone();
        window.waiting_for = Some(PlanWait::Window);
        window.waiting = Some("outside every window".into());
        let told = of(&plan, Some(&caps), &window, &none, false);
        assert_eq!(kinds(&told), [(Kind::Paused, None)]);
        assert_eq!(told[0].message, "outside every window");

        let told = of(&plan, Some(&quiet), &quiet, &none, true);
        assert_eq!(kinds(&told), [(Kind::Completed, None)]);
        let mut done = quiet.clone();
        crate::controller::status::set_condition(
            &mut done.conditions,
            "Complete",
            true,
            "Done",
            "",
            None,
        );
        assert!(of(&plan, Some(&done), &done, &none, true).is_empty());
    }

    #[test]
    fn a_new_round_tells_its_starts_again() {
        let plan = plan();
        let old = status(&[("n1", Some("patch-n1"), Some(StatusPhase::Done), None)]);
        let mut new = status(&[("n1", Some("patch-n1-r2"), Some(StatusPhase::Pending), None)]);
        new.round = Some("r2".into());
        let told = of(&plan, Some(&old), &new, &BTreeMap::new(), false);
        assert_eq!(kinds(&told), [(Kind::Started, Some("n1"))]);
    }
}
