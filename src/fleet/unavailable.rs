//! Whether a node is out of service because of someone other than kordon, and why. A
//! fleet is as short of a node a person cordoned, a node gone NotReady or a node an
//! autoscaler tainted as of one kordon drains, so a roll's and a plan's caps count them
//! too (as the NVIDIA maintenance operator and OpenShift's MachineConfigPools do). Pure.
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use serde::{Serialize, Serializer};

use crate::api::node_maintenance::holder_of;
use crate::cluster::nodes::{OUT_OF_SERVICE_TAINT, out_of_service_by_kordon};
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};

use super::mark::{Mark, Phase};

/// Why someone else has a node out of service: the first of these that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfService {
    /// `spec.unschedulable` (`kubectl cordon`, another tool, or kordon's own `cordon`,
    /// `drain` or `maintain` run by hand, which no record of a roll or a plan counts).
    Cordoned,
    /// The `Ready` condition is `False`: the kubelet says the node cannot run pods.
    NotReady,
    /// The `Ready` condition is `Unknown` (the node lifecycle controller's word for a
    /// kubelet gone silent), or the node never reported one.
    Unknown,
    /// A `NoSchedule` or `NoExecute` taint kordon did not set, e.g. Karpenter's
    /// `karpenter.sh/disrupted` or the Cluster Autoscaler's `ToBeDeletedByClusterAutoscaler`.
    Tainted { key: String, effect: String },
}

impl OutOfService {
    /// Why the node is out of service, leaving aside kordon's own taints and the taints
    /// Kubernetes only mirrors from the node's state (counted once, as that state).
    pub fn of(node: &Node) -> Option<Self> {
        let state = NodeState::of(node);
        if state.cordoned {
            return Some(Self::Cordoned);
        }
        match state.readiness {
            Readiness::Ready => {}
            Readiness::NotReady => return Some(Self::NotReady),
            Readiness::Unknown => return Some(Self::Unknown),
        }
        let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
        taints
            .unwrap_or_default()
            .iter()
            .find(|t| keeps_pods_off(t) && !mirrors_state(t) && !kordons(node, t))
            .map(|t| Self::Tainted {
                key: t.key.clone(),
                effect: t.effect.clone(),
            })
    }
}

/// Out of service by someone else: out for a reason of [`OutOfService`], and not under
/// a maintenance of kordon's (a NodeMaintenance, a roll that has not finished it), which
/// its own record counts already.
pub fn by_others(node: &Node) -> Option<OutOfService> {
    match held_by_kordon(node) {
        true => None,
        false => OutOfService::of(node),
    }
}

/// A node someone else has out, and why: what a roll's progress and report say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutNode {
    pub node: NodeName,
    pub reason: OutOfService,
}

/// The nodes of `scope` that someone else has out now, with why, in the order given.
pub fn in_scope<'a, N: Borrow<Node> + 'a>(
    nodes: impl IntoIterator<Item = &'a N>,
    scope: &BTreeSet<String>,
) -> Vec<(OutNode, &'a N)> {
    nodes
        .into_iter()
        .filter_map(|n| {
            let node: &Node = n.borrow();
            let name = node.name_any();
            let reason = by_others(node).filter(|_| scope.contains(name.as_str()))?;
            let node = NodeName::from(name.as_str());
            Some((OutNode { node, reason }, n))
        })
        .collect()
}

/// Under a maintenance kordon records: a NodeMaintenance holds it, or a `kordon roll`
/// has not finished it (under way, failed, stopped).
pub fn held_by_kordon(node: &Node) -> bool {
    holder_of(node).is_some() || Mark::of(node).is_some_and(|m| m.phase != Phase::Done)
}

/// The scheduler places no new pod on a node with this taint (`PreferNoSchedule` only
/// asks it not to).
fn keeps_pods_off(t: &Taint) -> bool {
    matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
}

/// The taints the node controllers add for a cordon and for a Ready condition that is
/// not `True` (`TaintNodesByCondition`, taint-based eviction): the state itself counts.
fn mirrors_state(t: &Taint) -> bool {
    matches!(
        t.key.as_str(),
        "node.kubernetes.io/unschedulable"
            | "node.kubernetes.io/not-ready"
            | "node.kubernetes.io/unreachable"
    )
}

/// kordon's own: its keys, and the out-of-service taint of `drain --node-down`.
fn kordons(node: &Node, t: &Taint) -> bool {
    t.key.starts_with("kordon.dev/")
        || (t.key == OUT_OF_SERVICE_TAINT && out_of_service_by_kordon(node))
}

impl fmt::Display for OutOfService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cordoned => f.write_str("cordoned"),
            Self::NotReady => f.write_str("NotReady"),
            Self::Unknown => f.write_str("Ready condition Unknown"),
            Self::Tainted { key, effect } => write!(f, "tainted {key}:{effect}"),
        }
    }
}

/// Written as it prints (`"tainted example.com/x:NoSchedule"`).
impl Serialize for OutOfService {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A Ready, schedulable node, with `extra` merged into it.
    fn node(extra: Value) -> Node {
        let mut node = json!({
            "metadata": { "name": "node-1", "annotations": {} },
            "spec": {},
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
        });
        merge(&mut node, extra);
        serde_json::from_value(node).expect("node")
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn taint(key: &str, effect: &str) -> Value {
        json!({ "key": key, "effect": effect })
    }

    fn why(extra: Value) -> Option<String> {
        by_others(&node(extra)).map(|o| o.to_string())
    }

    #[test]
    fn a_ready_schedulable_node_is_in_service() {
        assert_eq!(why(json!({})), None);
        let soft = json!({ "spec": { "taints": [taint("example.com/x", "PreferNoSchedule")] } });
        assert_eq!(why(soft), None, "PreferNoSchedule keeps no pod off");
    }

    #[test]
    fn a_cordon_notready_or_a_foreign_taint_is_out_and_says_why() {
        let cordoned = json!({ "spec": { "unschedulable": true } });
        assert_eq!(why(cordoned).as_deref(), Some("cordoned"));
        let down = json!({ "status": { "conditions": [{ "type": "Ready", "status": "False" }] } });
        assert_eq!(why(down).as_deref(), Some("NotReady"));
        let silent =
            json!({ "status": { "conditions": [{ "type": "Ready", "status": "Unknown" }] } });
        assert_eq!(why(silent).as_deref(), Some("Ready condition Unknown"));
        let never = json!({ "status": { "conditions": [] } });
        assert_eq!(why(never).as_deref(), Some("Ready condition Unknown"));
        let tainted = json!({ "spec": { "taints": [
            taint("example.com/soft", "PreferNoSchedule"),
            taint("example.com/x", "NoSchedule"),
        ] } });
        assert_eq!(
            why(tainted).as_deref(),
            Some("tainted example.com/x:NoSchedule")
        );
        let evicting =
            json!({ "spec": { "taints": [taint("karpenter.sh/disrupted", "NoExecute")] } });
        assert_eq!(
            why(evicting).as_deref(),
            Some("tainted karpenter.sh/disrupted:NoExecute")
        );
    }

    #[test]
    fn a_node_is_counted_once_as_its_state_not_as_the_taints_mirroring_it() {
        let cordoned = json!({ "spec": { "unschedulable": true, "taints": [
            taint("node.kubernetes.io/unschedulable", "NoSchedule"),
            taint("example.com/x", "NoSchedule"),
        ] } });
        assert_eq!(
            by_others(&node(cordoned)),
            Some(OutOfService::Cordoned),
            "one reason per node, the cordon first"
        );
        let unreachable = json!({
            "spec": { "taints": [
                taint("node.kubernetes.io/unreachable", "NoSchedule"),
                taint("node.kubernetes.io/unreachable", "NoExecute"),
            ] },
            "status": { "conditions": [{ "type": "Ready", "status": "Unknown" }] },
        });
        assert_eq!(by_others(&node(unreachable)), Some(OutOfService::Unknown));
        // The controller lifts its mirror a moment after the node is back: not a reason.
        let lagging =
            json!({ "spec": { "taints": [taint("node.kubernetes.io/not-ready", "NoExecute")] } });
        assert_eq!(why(lagging), None);
    }

    #[test]
    fn kordons_own_taints_and_maintenances_are_not_someone_elses() {
        let ours = json!({ "spec": { "taints": [taint("kordon.dev/draining", "NoExecute")] } });
        assert_eq!(why(ours), None);
        let node_down = json!({
            "metadata": { "annotations": { "kordon.dev/out-of-service-at": "2026-12-06T05:00:00Z" } },
            "spec": { "taints": [taint(OUT_OF_SERVICE_TAINT, "NoExecute")] },
        });
        assert_eq!(why(node_down), None);
        let theirs = json!({ "spec": { "taints": [taint(OUT_OF_SERVICE_TAINT, "NoExecute")] } });
        assert_eq!(
            why(theirs).as_deref(),
            Some("tainted node.kubernetes.io/out-of-service:NoExecute")
        );
        // A NodeMaintenance's node, and a node a roll has under way, are counted by
        // their own records.
        let held = json!({
            "metadata": { "annotations": { "kordon.dev/node-maintenance": "nm-1" } },
            "spec": { "unschedulable": true },
        });
        assert_eq!(why(held), None);
        let rolling = |phase: Phase| {
            let mut mark = Mark::new("r1", "ops", false, Vec::new());
            mark.enter(phase);
            let annotations: serde_json::Map<String, Value> = mark
                .annotations()
                .into_iter()
                .filter_map(|(k, v)| Some((k, Value::String(v?))))
                .collect();
            json!({
                "metadata": { "annotations": annotations },
                "spec": { "unschedulable": true },
            })
        };
        assert_eq!(why(rolling(Phase::Draining)), None);
        assert_eq!(
            why(rolling(Phase::Done)).as_deref(),
            Some("cordoned"),
            "a roll done with a node leaves someone else's cordon on it: that one counts"
        );
    }

    #[test]
    fn only_the_nodes_in_scope_count() {
        let named = |name: &str, extra: Value| {
            let mut n = node(extra);
            n.metadata.name = Some(name.into());
            n
        };
        let cordoned = || json!({ "spec": { "unschedulable": true } });
        let nodes = [
            named("a", cordoned()),
            named("b", json!({})),
            named("elsewhere", cordoned()),
        ];
        let scope: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let out: Vec<OutNode> = in_scope(&nodes, &scope)
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(
            serde_json::to_value(&out).expect("json"),
            json!([{ "node": "a", "reason": "cordoned" }])
        );
    }

    #[test]
    fn a_reason_is_written_as_it_prints() {
        let reason = OutOfService::Tainted {
            key: "example.com/x".into(),
            effect: "NoSchedule".into(),
        };
        assert_eq!(
            serde_json::to_value(&reason).expect("json"),
            json!("tainted example.com/x:NoSchedule")
        );
    }
}
