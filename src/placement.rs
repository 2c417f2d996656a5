//! Would a pod fit on a node? The scheduler's hard filters that decide most drains:
//! resource requests (cpu, memory, pod count), nodeSelector, required node affinity,
//! and taints against tolerations.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, Pod, ResourceRequirements, Taint, Toleration,
};
use kube::core::{Expression, SelectorExt};

/// cpu in millicores, memory in bytes, pods as a count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu_milli: f64,
    pub memory: f64,
    pub pods: f64,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_milli <= free.cpu_milli && self.memory <= free.memory && self.pods <= free.pods
    }

    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli + other.cpu_milli,
            memory: self.memory + other.memory,
            pods: self.pods + other.pods,
        }
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli - other.cpu_milli,
            memory: self.memory - other.memory,
            pods: self.pods - other.pods,
        }
    }
}

/// Parses a Kubernetes quantity ("250m", "1.5", "128Mi", "2G", "1e3") to a number of
/// base units; `None` when it is not one.
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// Whether a pod in this phase holds its requests on its node: every pod until it has
/// finished (a drain still removes a finished pod, but it reserves nothing).
pub fn holds(phase: Option<&str>) -> bool {
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// What the scheduler reserves for a pod: the sum of its containers' requests, or
/// the largest init container's if that is more, plus one pod slot.
pub fn requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    reserved(
        spec.containers.iter().map(|c| c.resources.as_ref()),
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| c.resources.as_ref()),
    )
}

/// [`requests`] from the containers' resource requirements alone.
pub fn reserved<'a>(
    containers: impl Iterator<Item = Option<&'a ResourceRequirements>>,
    init_containers: impl Iterator<Item = Option<&'a ResourceRequirements>>,
) -> Resources {
    let of = |r: Option<&ResourceRequirements>| {
        let r = r.and_then(|r| r.requests.as_ref());
        let get = |k: &str| {
            r.and_then(|r| r.get(k))
                .and_then(|q| quantity(&q.0))
                .unwrap_or(0.0)
        };
        (get("cpu") * 1000.0, get("memory"))
    };
    let (mut cpu, mut memory) = containers
        .map(of)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    for (c, m) in init_containers.map(of) {
        cpu = f64::max(cpu, c);
        memory = f64::max(memory, m);
    }
    Resources {
        cpu_milli: cpu,
        memory,
        pods: 1.0,
    }
}

pub fn allocatable(node: &Node) -> Resources {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| {
        a.and_then(|a| a.get(k))
            .and_then(|q| quantity(&q.0))
            .unwrap_or(0.0)
    };
    Resources {
        cpu_milli: get("cpu") * 1000.0,
        memory: get("memory"),
        pods: get("pods"),
    }
}

/// Why a pod cannot go to a node, for the report (in words: `output::plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Misfit {
    NodeSelector,
    NodeAffinity,
    Taint,
    Resources,
}

/// The taint that mirrors a cordon.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// The label, affinity and taint filters (resources are checked by the caller, which
/// keeps track of what earlier placements used).
pub fn eligible(pod: &Pod, node: &Node) -> Result<(), Misfit> {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    if let Some(selector) = &spec.node_selector
        && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return Err(Misfit::NodeSelector);
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required {
        // Terms are ORed; the expressions of a term are ANDed.
        // matchFields supports only metadata.name.
        let fields = BTreeMap::from([(
            "metadata.name".to_string(),
            node.metadata.name.clone().unwrap_or_default(),
        )]);
        let any = required.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|e| requirement(e, labels))
                && term
                    .match_fields
                    .iter()
                    .flatten()
                    .all(|e| requirement(e, &fields))
        });
        if !any {
            return Err(Misfit::NodeAffinity);
        }
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let blocking = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        // The node lifecycle controller mirrors the cordon with this taint and lifts it
        // a moment after the uncordon: on an uncordoned node it is about to go.
        .filter(|t| cordoned || t.key != UNSCHEDULABLE_TAINT)
        .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    if blocking {
        return Err(Misfit::Taint);
    }
    Ok(())
}

/// In, NotIn, Exists and DoesNotExist mean what they mean in a label selector, so kube's
/// `Expression` evaluates them; Gt and Lt exist only in node affinity: the label's value
/// and the one given value compared as integers, no match when either is not one.
fn requirement(e: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let key = e.key.clone();
    let values = || e.values.iter().flatten().cloned().collect();
    let expression = match e.operator.as_str() {
        "In" => Expression::In(key, values()),
        "NotIn" => Expression::NotIn(key, values()),
        "Exists" => Expression::Exists(key),
        "DoesNotExist" => Expression::DoesNotExist(key),
        "Gt" | "Lt" => {
            let number = |v: Option<&String>| v.and_then(|v| v.parse::<i64>().ok());
            let label = number(labels.get(&e.key));
            let bound = number(e.values.as_ref().and_then(|v| v.first()));
            return match (label, bound) {
                (Some(label), Some(bound)) if e.operator == "Gt" => label > bound,
                (Some(label), Some(bound)) => label < bound,
                _ => false,
            };
        }
        _ => return false,
    };
    expression.matches(labels)
}

/// Whether one of the pod's tolerations tolerates the taint.
pub fn tolerated(pod: &Pod, taint: &Taint) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| ts.iter().any(|tol| tolerates(tol, taint)))
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect_ok = tol
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = tol
        .key
        .as_deref()
        .is_none_or(|k| k.is_empty() || k == taint.key);
    let value_ok = match tol.operator.as_deref() {
        Some("Exists") => true,
        _ => tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    };
    // An empty key with operator Exists tolerates everything.
    effect_ok && key_ok && value_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("lots"), None);
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{ "name": "c", "resources": { "requests": { "cpu": "500m", "memory": "1Gi" } } }]);
        serde_json::from_value(json!({ "spec": spec })).expect("pod")
    }

    #[test]
    fn selectors_affinity_and_taints_filter_nodes() {
        let gpu = node(json!({
            "metadata": { "name": "n", "labels": { "gpu": "yes", "zone": "a" } },
            "spec": { "taints": [{ "key": "dedicated", "value": "ml", "effect": "NoSchedule" }] },
        }));
        assert_eq!(eligible(&pod(json!({})), &gpu), Err(Misfit::Taint));
        let tolerant = json!({ "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule" }] });
        assert_eq!(eligible(&pod(tolerant.clone()), &gpu), Ok(()));
        let mut wrong_zone = tolerant.clone();
        wrong_zone["nodeSelector"] = json!({ "zone": "b" });
        assert_eq!(eligible(&pod(wrong_zone), &gpu), Err(Misfit::NodeSelector));
        let mut affinity = tolerant;
        affinity["affinity"] = json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "gpu", "operator": "DoesNotExist" }] }]
        }}});
        assert_eq!(eligible(&pod(affinity), &gpu), Err(Misfit::NodeAffinity));
    }

    #[test]
    fn the_cordons_taint_counts_only_while_the_node_is_cordoned() {
        let taint = json!([{ "key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule" }]);
        let lagging = node(json!({ "metadata": { "name": "n" }, "spec": { "taints": taint } }));
        assert_eq!(
            eligible(&pod(json!({})), &lagging),
            Ok(()),
            "uncordoned a moment ago"
        );
        let cordoned = node(json!({
            "metadata": { "name": "n" },
            "spec": { "unschedulable": true, "taints": taint },
        }));
        assert_eq!(eligible(&pod(json!({})), &cordoned), Err(Misfit::Taint));
    }

    #[test]
    fn every_node_affinity_operator() {
        let labels: BTreeMap<String, String> = [("zone", "a"), ("cores", "8"), ("gen", "new")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let holds = |key: &str, operator: &str, values: &[&str]| {
            let e = NodeSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            };
            requirement(&e, &labels)
        };
        assert!(holds("zone", "In", &["a", "b"]));
        assert!(!holds("zone", "In", &["b"]));
        assert!(!holds("rack", "In", &["a"]));
        assert!(holds("zone", "NotIn", &["b"]));
        assert!(
            holds("rack", "NotIn", &["a"]),
            "NotIn holds when the label is absent"
        );
        assert!(!holds("zone", "NotIn", &["a"]));
        assert!(holds("zone", "Exists", &[]));
        assert!(!holds("rack", "Exists", &[]));
        assert!(holds("rack", "DoesNotExist", &[]));
        assert!(!holds("zone", "DoesNotExist", &[]));
        assert!(holds("cores", "Gt", &["4"]));
        assert!(!holds("cores", "Gt", &["8"]));
        assert!(holds("cores", "Lt", &["16"]));
        assert!(!holds("cores", "Lt", &["8"]));
        assert!(
            !holds("gen", "Gt", &["1"]),
            "a label that is not an integer never compares"
        );
        assert!(!holds("cores", "Lt", &["many"]));
        assert!(!holds("rack", "Gt", &["1"]));
        assert!(
            !holds("zone", "Matches", &["a"]),
            "an unknown operator matches nothing"
        );
    }

    #[test]
    fn requests_add_up_and_count_a_pod_slot() {
        let r = requests(&pod(json!({})));
        assert_eq!(
            r,
            Resources {
                cpu_milli: 500.0,
                memory: 1024f64.powi(3),
                pods: 1.0
            }
        );
        let free = Resources {
            cpu_milli: 400.0,
            memory: 1e12,
            pods: 10.0,
        };
        assert!(!r.fits_in(&free));
    }
}
