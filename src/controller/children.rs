//! A MaintenancePlan's NodeMaintenances: one per node and round (for a triggered plan,
//! per trigger value too), owned by the plan, labelled with each, and counted by the
//! next decision before it is made.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::Ctx;
use super::reconcile::ReconcileError;
use crate::api::maintenance_plan::{MaintenancePlan, MaintenancePlanStatus, TRIGGER_LABEL};
use crate::api::node_maintenance::{NodeMaintenance, NodeMaintenanceSpec, StatusPhase};
use crate::cluster::events::Severity;

/// On each NodeMaintenance a plan creates: the plan, the node, and the round.
pub const PLAN_LABEL: &str = "kordon.dev/plan";

pub(super) const NODE_LABEL: &str = "kordon.dev/node";

pub(super) const ROUND_LABEL: &str = "kordon.dev/round";

/// On a triggered plan's NodeMaintenance: the node's trigger value it was made for.
pub(super) const TRIGGER_VALUE_LABEL: &str = "kordon.dev/trigger";

/// The nodes a plan selects, and each one's NodeMaintenance of this round
/// (`round_children`: the plan's, of this round). Without `triggers`, every node its
/// selector matches (`matched`). A triggered plan (`triggers`: each triggered node's
/// value) selects the matched nodes that carry a value, each with the NodeMaintenance
/// made for that value (a new value has none yet: the node is pending again), and keeps
/// a node whose maintenance is under way when its label went (kordon's agent keeps it
/// until then, a person may not), with that one: the node is out until it is done.
pub(super) fn of_round(
    matched: Vec<Node>,
    round_children: &[Arc<NodeMaintenance>],
    triggers: Option<&BTreeMap<String, String>>,
) -> (Vec<Node>, BTreeMap<String, Arc<NodeMaintenance>>) {
    let of = |node: &String| -> Vec<&Arc<NodeMaintenance>> {
        (round_children.iter())
            .filter(|c| label(c, NODE_LABEL) == Some(node))
            .collect()
    };
    let mut children = BTreeMap::new();
    let mut selected = Vec::new();
    for node in matched {
        let name = node.name_any();
        let child = match triggers {
            None => of(&name).into_iter().next(),
            Some(values) => match values.get(&name) {
                Some(value) => {
                    (of(&name).into_iter()).find(|c| label(c, TRIGGER_VALUE_LABEL) == Some(value))
                }
                None => match of(&name).into_iter().find(|c| under_way(c, &node)) {
                    Some(running) => Some(running),
                    None => continue,
                },
            },
        };
        if let Some(child) = child {
            children.insert(name, child.clone());
        }
        selected.push(node);
    }
    (selected, children)
}

/// Not finished, or failed with its node still out.
fn under_way(nm: &NodeMaintenance, node: &Node) -> bool {
    let phase = nm.status.as_ref().and_then(|s| s.phase);
    !phase.is_some_and(StatusPhase::finished) || nm.has_node_out(Some(node))
}

/// The name of the plan's NodeMaintenance of `node` in `round` (and for `trigger`): the
/// same on every pass, so that a create retried finds the one made before. At most 253
/// characters, the round and the trigger kept whole; a trigger value that is not
/// lowercase letters and digits (a label value may have capitals and `_`) is named by
/// its hash.
pub(super) fn child_name(plan: &str, node: &str, round: &str, trigger: Option<&str>) -> String {
    let base = format!("{plan}-{node}-{round}");
    let Some(trigger) = trigger else {
        return base.chars().take(253).collect();
    };
    let plain = !trigger.is_empty()
        && trigger
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let suffix = match plain {
        true => format!("-{trigger}"),
        false => format!("-t{:012x}", fnv(trigger) >> 16),
    };
    let kept: String = base.chars().take(253 - suffix.len()).collect();
    format!("{}{suffix}", kept.trim_end_matches(['-', '.']))
}

/// Creates each node's NodeMaintenance (for a triggered plan, for the node's value in
/// `triggers`), and counts it before the next decision.
pub(super) async fn start_nodes(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    round: &str,
    start: &[String],
    triggers: Option<&BTreeMap<String, String>>,
    status: &mut MaintenancePlanStatus,
) -> Result<(), ReconcileError> {
    for node in start {
        let trigger = triggers.and_then(|t| t.get(node)).map(String::as_str);
        let created = start_node(ctx, plan, round, node, trigger).await?;
        until_seen(&ctx.maintenances, &created).await;
        status.active += 1;
        status.pending = status.pending.saturating_sub(1);
        if let Some(record) = status.nodes.get_mut(node) {
            record.maintenance = Some(created);
            record.phase = Some(StatusPhase::Pending);
        }
        let note = match trigger {
            Some(t) => format!("round {round}: started node {node} (triggered {t})"),
            None => format!("round {round}: started node {node}"),
        };
        ctx.events
            .publish_about_node(plan, node, Severity::Normal, "NodeStarted", note)
            .await;
    }

    Ok(())
}

/// The node's NodeMaintenance for this round (and trigger value), owned by the plan.
async fn start_node(
    ctx: &Ctx,
    plan: &MaintenancePlan,
    round: &str,
    node: &str,
    trigger: Option<&str>,
) -> Result<String, ReconcileError> {
    let conn = &ctx.kordon.conn;
    let name = child_name(&plan.name_any(), node, round, trigger);
    let mut labels: BTreeMap<String, String> = plan.labels().clone();
    labels.insert(PLAN_LABEL.into(), plan.name_any());
    labels.insert(NODE_LABEL.into(), node.into());
    labels.insert(ROUND_LABEL.into(), round.into());
    let mut reason = format!("MaintenancePlan {} round {round}", plan.name_any());
    if let Some(trigger) = trigger {
        labels.insert(TRIGGER_VALUE_LABEL.into(), trigger.into());
        reason = format!("{reason}, {TRIGGER_LABEL}={trigger}");
    }
    let nm = NodeMaintenance {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            owner_references: plan.controller_owner_ref(&()).map(|o| vec![o]),
            // Its own reconcile would add it with a patch and a pass of its own.
            finalizers: Some(vec![super::FINALIZER.into()]),
            ..Default::default()
        },
        spec: NodeMaintenanceSpec {
            node_name: node.into(),
            reason: Some(reason),
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
    format!("{:012x}", fnv(&what.to_string()) >> 16)
}

/// FNV-1a: stable across builds, unlike std's hasher.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) fn label<'a>(nm: &'a NodeMaintenance, key: &str) -> Option<&'a String> {
    nm.metadata.labels.as_ref()?.get(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cordoned_by: Option<&str>) -> Node {
        let mut node = json!({ "metadata": { "name": name, "labels": { "pool": "a" } } });
        if let Some(nm) = cordoned_by {
            node["metadata"]["annotations"] = json!({ "kordon.dev/node-maintenance": nm });
            node["spec"] = json!({ "unschedulable": true });
        }
        serde_json::from_value(node).expect("node")
    }

    /// The plan's NodeMaintenance of `node` in this round, made for `trigger`, in `phase`.
    fn child(node: &str, trigger: Option<&str>, phase: Option<&str>) -> Arc<NodeMaintenance> {
        let name = child_name("patch", node, "r1", trigger);
        let mut labels = json!({ PLAN_LABEL: "patch", NODE_LABEL: node, ROUND_LABEL: "r1" });
        if let Some(t) = trigger {
            labels[TRIGGER_VALUE_LABEL] = json!(t);
        }
        let mut nm = json!({
            "apiVersion": "kordon.dev/v1alpha1", "kind": "NodeMaintenance",
            "metadata": { "name": name, "labels": labels },
            "spec": { "nodeName": node, "step": { "hold": {} } },
        });
        if let Some(phase) = phase {
            nm["status"] = json!({ "phase": phase });
        }
        Arc::new(serde_json::from_value(nm).expect("nm"))
    }

    fn names(selected: &[Node]) -> Vec<String> {
        selected.iter().map(ResourceExt::name_any).collect()
    }

    #[test]
    fn a_child_is_named_for_its_plan_node_round_and_trigger_within_253_characters() {
        assert_eq!(child_name("patch", "n1", "r1", None), "patch-n1-r1");
        assert_eq!(
            child_name("patch", "n1", "r1", Some("1765027200")),
            "patch-n1-r1-1765027200"
        );
        // A value a name cannot carry is named by its hash, the same on every pass.
        let odd = child_name("patch", "n1", "r1", Some("Kernel_6.1"));
        assert!(odd.starts_with("patch-n1-r1-t") && odd.len() == "patch-n1-r1-t".len() + 12);
        assert_eq!(odd, child_name("patch", "n1", "r1", Some("Kernel_6.1")));
        assert_ne!(odd, child_name("patch", "n1", "r1", Some("kernel_6.1")));
        // A long node name gives way; the round and the trigger stay whole.
        let long = "n".repeat(250);
        let name = child_name("patch", &long, "0123456789ab", Some("1765027200"));
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-1765027200"), "{name}");
        assert_eq!(
            child_name("patch", &long, "r1", None).len(),
            253,
            "an untriggered plan's names are as they were"
        );
    }

    #[test]
    fn without_triggers_every_matched_node_is_selected_with_its_child_of_the_round() {
        let matched = vec![node("a", None), node("b", None)];
        let done = child("a", None, Some("Done"));
        let (selected, children) = of_round(matched, std::slice::from_ref(&done), None);
        assert_eq!(names(&selected), ["a", "b"]);
        assert_eq!(children.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_triggered_plan_selects_labelled_nodes_and_counts_a_child_only_for_the_current_value() {
        let matched = vec![
            node("a", None),
            node("b", None),
            node("c", None),
            node("d", Some("patch-d-r1-100")),
            node("e", None),
        ];
        let round = [
            // a: done for 100, now labelled 200: pending again.
            child("a", Some("100"), Some("Done")),
            // b: done for its value: done.
            child("b", Some("300"), Some("Done")),
            // c: under way for 100, its label gone since: kept, out until done.
            child("c", Some("100"), Some("AwaitingReady")),
            // d: failed for 100 with the node still cordoned, its label gone: kept.
            child("d", Some("100"), Some("Failed")),
            // e: done for 100, its label gone: no longer selected.
            child("e", Some("100"), Some("Done")),
        ];
        let triggers = BTreeMap::from([
            ("a".to_string(), "200".to_string()),
            ("b".to_string(), "300".to_string()),
            // Not matched by the selector: never selected.
            ("z".to_string(), "100".to_string()),
        ]);
        let (selected, children) = of_round(matched, &round, Some(&triggers));
        assert_eq!(names(&selected), ["a", "b", "c", "d"]);
        let made_for = |n: &str| {
            children
                .get(n)
                .and_then(|c| label(c, TRIGGER_VALUE_LABEL).cloned())
        };
        assert_eq!(made_for("a"), None, "100 was maintained; 200 is not yet");
        assert_eq!(made_for("b").as_deref(), Some("300"));
        assert_eq!(made_for("c").as_deref(), Some("100"));
        assert_eq!(made_for("d").as_deref(), Some("100"));
        // Where they stand: a pending again, b done, c under way, d failed and out.
        let spec = serde_json::from_value(
            json!({ "nodeSelector": "pool=a", "triggered": true, "step": { "hold": {} } }),
        )
        .expect("spec");
        let held = ["c".to_string(), "d".to_string()].into();
        let t = super::super::tally::tally(&selected, &children, &held, &spec);
        assert_eq!((t.done, t.active, t.failed), (1, 1, 1));
        let pending: Vec<&str> = (t.slots.iter())
            .filter(|s| s.pending)
            .map(|s| s.node.as_str())
            .collect();
        assert_eq!(pending, ["a"]);

        // With nothing labelled and nothing under way, nothing is selected.
        let (selected, children) = of_round(vec![node("e", None)], &round, Some(&BTreeMap::new()));
        assert!(selected.is_empty() && children.is_empty());
    }
}
