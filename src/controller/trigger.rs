//! Triggered nodes (a plan's `spec.triggered`): a node that needs maintenance carries
//! [`TRIGGER_LABEL`] with when the need arose. One watch of those nodes' metadata keeps
//! each one's value for the plans' passes, and wakes the triggered plans that select a
//! node when its value is set, changes or goes: a newly labelled node starts at once,
//! not at a plan's next look (a complete plan has none).
use std::collections::{BTreeMap, HashMap};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use crate::api::maintenance_plan::{MaintenancePlan, TRIGGER_LABEL};
use crate::selector::Selector;

/// A triggered node's metadata, as the watch has it.
type Meta = PartialObjectMeta<Node>;

/// Each triggered node's value, from the watch.
pub struct Triggers {
    store: Store<Meta>,
    /// True once the first list is in the store. Kept here rather than asked of the
    /// store: its `wait_until_ready` wakes only the last of several concurrent waiters,
    /// and every triggered plan waits for it when the controller starts.
    listed: tokio::sync::watch::Receiver<bool>,
}

impl Triggers {
    /// Each triggered node's value now, by node. The watch writes a change here before
    /// it wakes a plan, so the pass it wakes reads the new value.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.store
            .state()
            .iter()
            .filter_map(|n| Some((n.name_any(), n.labels().get(TRIGGER_LABEL)?.clone())))
            .collect()
    }

    /// Waits for the watch's first list; false once the controller stops.
    pub async fn ready(&self) -> bool {
        self.listed.clone().wait_for(|l| *l).await.is_ok()
    }
}

/// The watch of the nodes that carry the label, metadata only: their values, and the
/// nodes whose value changed (see [`changes`]) to wake their plans by.
pub(super) fn watched(
    client: &kube::Client,
) -> (
    Triggers,
    impl Stream<Item = Result<Meta, watcher::Error>> + Send + 'static,
) {
    // `PartialObjectMeta`: the API server sends metadata only.
    let api: Api<Meta> = Api::all(client.clone());
    let config = watcher::Config::default().labels(TRIGGER_LABEL);
    let (store, writer) = reflector::store();
    let mut told = Told::default();
    let (listed, ready) = tokio::sync::watch::channel(false);
    let stream = watcher::watcher(api, config)
        .default_backoff()
        .modify(|n| n.managed_fields_mut().clear())
        .reflect(writer)
        .flat_map(move |event| {
            if matches!(event, Ok(Event::InitDone)) {
                listed.send_replace(true);
            }
            let changed = match event {
                Ok(event) => told.changes(event).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(changed)
        });
    let triggers = Triggers {
        store,
        listed: ready,
    };
    (triggers, stream)
}

/// The values told so far, and a new list as it comes in.
#[derive(Default)]
struct Told {
    values: HashMap<String, Meta>,
    relisted: Vec<Meta>,
}

impl Told {
    /// The nodes whose value this event sets, changes or takes away. A new list (after
    /// the watch lost its place) is compared once it is complete: the store holds it
    /// from then on.
    fn changes(&mut self, event: Event<Meta>) -> Vec<Meta> {
        match event {
            Event::Apply(node) => self.apply(node).into_iter().collect(),
            Event::Delete(node) => {
                self.values.remove(&node.name_any());
                vec![node]
            }
            Event::Init => {
                self.relisted.clear();
                Vec::new()
            }
            Event::InitApply(node) => {
                self.relisted.push(node);
                Vec::new()
            }
            Event::InitDone => {
                let listed = std::mem::take(&mut self.relisted);
                let names: Vec<String> = listed.iter().map(ResourceExt::name_any).collect();
                let gone: Vec<String> = (self.values.keys())
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                let mut changed: Vec<Meta> = (gone.iter())
                    .filter_map(|n| self.values.remove(n))
                    .collect();
                changed.extend(listed.into_iter().filter_map(|n| self.apply(n)));
                changed
            }
        }
    }

    /// The node, when its value is not the one told last.
    fn apply(&mut self, node: Meta) -> Option<Meta> {
        let value = |n: &Meta| n.labels().get(TRIGGER_LABEL).cloned();
        let before = self.values.get(&node.name_any()).map(value);
        if before == Some(value(&node)) {
            return None;
        }
        self.values.insert(node.name_any(), node.clone());
        Some(node)
    }
}

/// The triggered plans whose selector matches `node`: the plans a change of its value
/// concerns (a node whose label went is matched as it was, with its other labels).
pub(super) fn plans_of(
    plans: &Store<MaintenancePlan>,
    node: &Meta,
) -> Vec<ObjectRef<MaintenancePlan>> {
    plans
        .state()
        .iter()
        .filter(|p| p.spec.triggered)
        .filter(|p| {
            (p.spec.node_selector.parse::<Selector>()).is_ok_and(|s| s.matches(node.labels()))
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, value: Option<&str>) -> Meta {
        let mut labels = json!({ "pool": "a" });
        if let Some(v) = value {
            labels[TRIGGER_LABEL] = json!(v);
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": labels },
        }))
        .expect("node metadata")
    }

    fn names(nodes: &[Meta]) -> Vec<String> {
        nodes.iter().map(ResourceExt::name_any).collect()
    }

    #[test]
    fn a_plan_is_woken_when_a_value_is_set_changes_or_goes_and_not_for_other_changes() {
        let mut told = Told::default();
        let apply = |t: &mut Told, n| names(&t.changes(Event::Apply(n)));
        assert_eq!(apply(&mut told, node("a", Some("100"))), ["a"]);
        assert!(
            apply(&mut told, node("a", Some("100"))).is_empty(),
            "the same value: a status or a cordon changed"
        );
        assert_eq!(apply(&mut told, node("a", Some("200"))), ["a"]);
        assert_eq!(
            names(&told.changes(Event::Delete(node("a", Some("200"))))),
            ["a"]
        );
        assert_eq!(apply(&mut told, node("b", Some("300"))), ["b"]);
        assert_eq!(apply(&mut told, node("c", Some("400"))), ["c"]);

        // A new list: b as it was, c gone (its label lifted while the watch was away),
        // d new. Told once the list is complete.
        assert!(told.changes(Event::Init).is_empty());
        for n in [node("b", Some("300")), node("d", Some("500"))] {
            assert!(told.changes(Event::InitApply(n)).is_empty());
        }
        let mut relisted = names(&told.changes(Event::InitDone));
        relisted.sort();
        assert_eq!(relisted, ["c", "d"]);
    }

    #[test]
    fn a_change_wakes_the_triggered_plans_that_select_the_node() {
        let plan = |name: &str, selector: &str, triggered: bool| {
            let spec =
                json!({ "nodeSelector": selector, "triggered": triggered, "step": { "hold": {} } });
            MaintenancePlan::new(name, serde_json::from_value(spec).expect("spec"))
        };
        let (store, mut writer) = reflector::store::<MaintenancePlan>();
        for p in [
            plan("pool-a", "pool=a", true),
            plan("pool-b", "pool=b", true),
            plan("everyone", "pool=a", false),
        ] {
            writer.apply_watcher_event(&Event::Apply(p));
        }
        let woken: Vec<String> = plans_of(&store, &node("n1", None))
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, ["pool-a"]);
    }
}
