//! What wakes a MaintenancePlan besides its own NodeMaintenances: a change to one of its
//! nodes that its decision reads (labels, cordon, taints, readiness, kordon's marks),
//! and a change to another plan (whose cap may cover its nodes). Node heartbeats, which
//! change nothing of that, are filtered out, so a plan runs when something it depends
//! on changes rather than on a timer.
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::Stream;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::api::NodeMaintenance;
use crate::api::maintenance_plan::MaintenancePlan;
use crate::cluster::view::Watched;
use crate::selector::Selector;

/// The plans' controller: a plan wakes when one of its NodeMaintenances changes, when
/// one of its nodes changes in what it decides on, and when another plan changes.
pub(super) fn plan_controller(
    plans: Api<MaintenancePlan>,
    maintenances: Api<NodeMaintenance>,
    config: watcher::Config,
    every_plan: &Arc<Watched<MaintenancePlan>>,
) -> Controller<MaintenancePlan> {
    let client = plans.clone().into_client();
    Controller::new(plans.clone(), config.clone())
        .owns(maintenances, config.clone())
        .watches_stream(node_changes(&client), plans_of_node(every_plan.clone()))
        .watches(plans, config, other_plans(every_plan.clone()))
}

/// The nodes' changes that a plan's decision reads.
fn node_changes(
    client: &kube::Client,
) -> impl Stream<Item = Result<Node, watcher::Error>> + Send + 'static {
    let api: Api<Node> = Api::all(client.clone());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .predicate_filter(decided_on, PredicateConfig::default())
}

/// A hash of what a plan reads of a node: a heartbeat leaves it as it is.
fn decided_on(node: &Node) -> Option<u64> {
    let mut h = DefaultHasher::new();
    node.labels().hash(&mut h);
    let kordon: BTreeMap<&String, &String> = node
        .annotations()
        .iter()
        .filter(|(k, _)| k.starts_with("kordon.dev/"))
        .collect();
    kordon.hash(&mut h);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut h);
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    ready.hash(&mut h);
    Some(h.finish())
}

/// The plans that select the node.
fn plans_of_node(
    plans: Arc<Watched<MaintenancePlan>>,
) -> impl Fn(Node) -> Vec<ObjectRef<MaintenancePlan>> + Send + Sync + 'static {
    move |node| {
        plans
            .state()
            .iter()
            .filter(|p| {
                p.spec
                    .node_selector
                    .parse::<Selector>()
                    .is_ok_and(|s| s.matches(node.labels()))
            })
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
}

/// Every plan but the one that changed.
fn other_plans(
    plans: Arc<Watched<MaintenancePlan>>,
) -> impl Fn(MaintenancePlan) -> Vec<ObjectRef<MaintenancePlan>> + Send + Sync + 'static {
    move |changed| {
        plans
            .state()
            .iter()
            .filter(|p| p.name_any() != changed.name_any())
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(heartbeat: &str, unschedulable: bool, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": "n1", "labels": { "pool": "a" },
                          "annotations": { "node.alpha.kubernetes.io/ttl": "0" } },
            "spec": { "unschedulable": unschedulable },
            "status": { "conditions": [{ "type": "Ready", "status": ready,
                                          "lastHeartbeatTime": heartbeat }] }
        }))
        .expect("node")
    }

    #[test]
    fn a_heartbeat_wakes_no_plan_and_a_cordon_or_readiness_does() {
        let before = decided_on(&node("2026-12-06T01:00:00Z", false, "True"));
        assert_eq!(
            before,
            decided_on(&node("2026-12-06T01:00:40Z", false, "True"))
        );
        assert_ne!(
            before,
            decided_on(&node("2026-12-06T01:00:00Z", true, "True"))
        );
        assert_ne!(
            before,
            decided_on(&node("2026-12-06T01:00:00Z", false, "Unknown"))
        );
    }
}
