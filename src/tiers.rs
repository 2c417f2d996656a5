//! The order in which a drain empties a node, in tiers: a tier's evictions start only
//! once every pod of the tier before it is gone (deleted, not just accepted for
//! eviction). Named as KEP-4212's `drainPlan` names it (podType, podPriority,
//! podSelector), so a user can move to it when Kubernetes has it. Tiers are ordered by:
//!
//! 1. **pod type**: ordinary pods, then DaemonSet pods (evicted only with
//!    `--evict-daemonsets`, after the node is tainted). Static pods' mirrors are never
//!    evicted and are in no tier;
//! 2. **drain order**: the `order` of the `drainOrder` entries whose selector matches the
//!    pod, the largest when several do (a pod someone asked to keep late stays late);
//!    0 when none does, so a negative order goes before unlisted pods;
//! 3. **priority**: lower `spec.priority` first. Critical pods (priority classes
//!    `system-cluster-critical`, `system-node-critical`: 2 000 000 000 and up) thus go
//!    after every other pod of their order, as Karpenter's `groupPodsByPriority` puts
//!    non-critical before critical.
//!
//! An explicit drain order comes before priority: it is what the user asked for. Pure:
//! the drain consumes the tiers, `plan` shows them.
use std::collections::BTreeMap;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use crate::classify::Verdict;
use crate::pod::{self, PodKey};
use crate::selector::{Selector, SelectorError};

/// The priority the `system-cluster-critical` class gives; `system-node-critical` is
/// 1000 more. A pod read before the Priority admission plugin filled `spec.priority`
/// in (a dump) gets its class's number from here.
const SYSTEM_CRITICAL: i32 = 2_000_000_000;

/// What a pod is, as far as the order is concerned (KEP-4212's podType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PodType {
    /// Every pod a drain evicts but a DaemonSet's.
    Default,
    /// A DaemonSet's pod: after every other, and only with `--evict-daemonsets`.
    DaemonSet,
}

/// Where a pod stands in the order: tiers are sorted by it, and pods of equal rank are
/// one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rank {
    pub pod_type: PodType,
    pub order: i32,
    pub priority: i32,
}

/// One tier: its rank and its pods, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    #[serde(flatten)]
    pub rank: Rank,
    pub pods: Vec<PodKey>,
}

/// One `--drain-order SELECTOR=N` (a `drainOrder` entry of a spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRule {
    pub selector: Selector,
    pub order: i32,
}

/// The user's drain order; empty by default, when type and priority alone decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOrder(pub Vec<OrderRule>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRuleError {
    #[error("write SELECTOR=N, a label selector and a whole number, e.g. app=db=10")]
    Form,
    #[error("the order \"{0}\" is not a whole number (e.g. -1, 0, 10)")]
    Order(String),
    #[error("the selector is empty: it would put every pod in one order")]
    Empty,
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

impl FromStr for OrderRule {
    type Err = OrderRuleError;

    /// `SELECTOR=N`: the order is after the last `=`, so the selector keeps its own.
    fn from_str(s: &str) -> Result<Self, OrderRuleError> {
        let (selector, order) = s.rsplit_once('=').ok_or(OrderRuleError::Form)?;
        let selector = selector.trim();
        if selector.is_empty() {
            return Err(OrderRuleError::Empty);
        }
        let order = order
            .trim()
            .parse()
            .map_err(|_| OrderRuleError::Order(order.to_string()))?;
        Ok(Self {
            selector: selector.parse()?,
            order,
        })
    }
}

impl DrainOrder {
    /// The pod's order number: the largest of the matching rules, 0 without one.
    pub fn order_of(&self, p: &Pod) -> i32 {
        let empty = BTreeMap::new();
        let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
        self.0
            .iter()
            .filter(|r| r.selector.matches(labels))
            .map(|r| r.order)
            .max()
            .unwrap_or(0)
    }
}

/// The pod's priority: `spec.priority`, or its critical class's number when the API
/// server has not filled it in.
fn priority(p: &Pod) -> i32 {
    let spec = p.spec.as_ref();
    if let Some(n) = spec.and_then(|s| s.priority) {
        return n;
    }
    match spec.and_then(|s| s.priority_class_name.as_deref()) {
        Some("system-node-critical") => SYSTEM_CRITICAL + 1000,
        Some("system-cluster-critical") => SYSTEM_CRITICAL,
        _ => 0,
    }
}

pub fn rank(p: &Pod, order: &DrainOrder) -> Rank {
    Rank {
        pod_type: if pod::is_daemon(p) {
            PodType::DaemonSet
        } else {
            PodType::Default
        },
        order: order.order_of(p),
        priority: priority(p),
    }
}

/// The pods to evict, in tiers, first tier first.
pub fn tiers<'a>(pods: impl IntoIterator<Item = &'a Pod>, order: &DrainOrder) -> Vec<Tier> {
    let mut by_rank: BTreeMap<Rank, Vec<PodKey>> = BTreeMap::new();
    for p in pods {
        by_rank
            .entry(rank(p, order))
            .or_default()
            .push(PodKey::of(p));
    }
    by_rank
        .into_iter()
        .map(|(rank, mut pods)| {
            pods.sort();
            Tier { rank, pods }
        })
        .collect()
}

/// The tiers of the pods a plan evicts (its `Evict` verdicts).
pub fn of_evicted(pods: &[(Pod, Verdict)], order: &DrainOrder) -> Vec<Tier> {
    tiers(
        pods.iter()
            .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
            .map(|(p, _)| p),
        order,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut p: serde_json::Value = json!({
            "metadata": { "name": name, "namespace": "ns", "labels": { "app": name } },
            "spec": { "containers": [{ "name": "c", "image": "nginx" }] },
        });
        if let (Some(base), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                let merged = match (base.get(k), v) {
                    (Some(serde_json::Value::Object(a)), serde_json::Value::Object(b)) => {
                        let mut a = a.clone();
                        a.extend(b.clone());
                        serde_json::Value::Object(a)
                    }
                    _ => v.clone(),
                };
                base.insert(k.clone(), merged);
            }
        }
        serde_json::from_value(p).expect("pod")
    }

    fn daemon(name: &str) -> Pod {
        pod(
            name,
            json!({ "metadata": { "ownerReferences": [{ "apiVersion": "apps/v1",
                "kind": "DaemonSet", "name": name, "uid": "u", "controller": true }] } }),
        )
    }

    fn with_priority(name: &str, n: i32) -> Pod {
        pod(name, json!({ "spec": { "priority": n } }))
    }

    fn rules(rules: &[&str]) -> DrainOrder {
        DrainOrder(rules.iter().map(|r| r.parse().expect(r)).collect())
    }

    /// The tiers as lists of pod names.
    fn names(tiers: &[Tier]) -> Vec<Vec<String>> {
        tiers
            .iter()
            .map(|t| {
                t.pods
                    .iter()
                    .map(|k| k.to_string().trim_start_matches("ns/").to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ordinary_pods_go_before_daemonset_pods_whatever_their_priority() {
        let pods = [daemon("agent"), with_priority("critical", SYSTEM_CRITICAL)];
        let tiers = tiers(&pods, &DrainOrder::default());
        assert_eq!(names(&tiers), [["critical"], ["agent"]]);
        assert_eq!(tiers[1].rank.pod_type, PodType::DaemonSet);
    }

    #[test]
    fn lower_priority_goes_first_and_critical_pods_last() {
        let pods = [
            with_priority("dns", SYSTEM_CRITICAL),
            with_priority("batch", -10),
            pod("web", json!({})),
            pod(
                "node-agent",
                json!({ "spec": { "priorityClassName": "system-node-critical" } }),
            ),
        ];
        let tiers = tiers(&pods, &DrainOrder::default());
        assert_eq!(
            names(&tiers),
            [vec!["batch"], vec!["web"], vec!["dns"], vec!["node-agent"]]
        );
    }

    #[test]
    fn equal_rank_is_one_tier_sorted_by_pod() {
        let pods = [pod("b", json!({})), pod("a", json!({}))];
        assert_eq!(names(&tiers(&pods, &DrainOrder::default())), [["a", "b"]]);
        assert!(tiers(std::iter::empty(), &DrainOrder::default()).is_empty());
    }

    #[test]
    fn drain_order_beats_priority_and_unmatched_pods_are_order_zero() {
        let pods = [
            with_priority("db", -100),
            with_priority("cache", 1000),
            pod("web", json!({})),
            pod("frontend", json!({})),
        ];
        let order = rules(&["app=db=10", "app in (frontend)=-1"]);
        assert_eq!(
            names(&tiers(&pods, &order)),
            [vec!["frontend"], vec!["web"], vec!["cache"], vec!["db"]]
        );
    }

    #[test]
    fn a_pod_matched_twice_takes_the_largest_order() {
        let p = pod(
            "db",
            json!({ "metadata": { "labels": { "app": "db", "tier": "data" } } }),
        );
        assert_eq!(
            rules(&["app=db=1", "tier=data=5", "app=web=9"]).order_of(&p),
            5
        );
    }

    #[test]
    fn daemonset_pods_keep_their_own_order_among_themselves() {
        let pods = [daemon("logs"), daemon("net")];
        let order = rules(&["app=net=-5"]);
        assert_eq!(names(&tiers(&pods, &order)), [["net"], ["logs"]]);
    }

    #[test]
    fn a_rule_reads_the_order_after_the_last_equals_sign() {
        let r: OrderRule = "app=db=10".parse().expect("rule");
        assert_eq!((r.selector.to_string(), r.order), ("app=db".into(), 10));
        let r: OrderRule = "tier in (a,b)=-2".parse().expect("rule");
        assert_eq!(r.order, -2);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |s: &str| s.parse::<OrderRule>().expect_err(s).to_string();
        assert!(err("app").contains("write SELECTOR=N"));
        assert!(err("app=db").contains("\"db\" is not a whole number"));
        assert!(err("=3").contains("selector is empty"));
        assert!(err("app=db=1.5").contains("not a whole number"));
        assert!(err("bad key!=x=1").contains("not a label key"));
    }

    #[test]
    fn tiers_serialize_in_the_words_of_kep_4212() {
        let t = tiers(&[with_priority("web", 5)], &DrainOrder::default());
        assert_eq!(
            serde_json::to_value(&t).expect("json"),
            json!([{ "podType": "Default", "order": 0, "priority": 5,
                     "pods": ["ns/web"] }])
        );
    }
}
