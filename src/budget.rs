//! PodDisruptionBudgets: which ones cover a pod.
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use serde::Serialize;

use crate::cluster::{ClusterError, Connection};

/// A PodDisruptionBudget by namespace and name, for what is kept per budget. Shown and
/// serialized as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    pub namespace: String,
    pub name: String,
}

impl BudgetKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(pdb: &PodDisruptionBudget) -> Self {
        Self::new(
            pdb.metadata.namespace.as_deref().unwrap_or_default(),
            pdb.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// `namespace/name` byte by byte: a namespace has no `/`, so equal keys read alike.
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.namespace
            .bytes()
            .chain(std::iter::once(b'/'))
            .chain(self.name.bytes())
    }
}

/// In the order of their `namespace/name`, as reports list budgets.
impl Ord for BudgetKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl PartialOrd for BudgetKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BudgetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Serialize for BudgetKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The label that marks what kordon created, and its value on the PodDisruptionBudgets
/// a drain shares (see `drain::shared`).
pub const ROLE: &str = "kordon.dev/role";
pub const ROLE_BUDGET: &str = "shared-budget";

/// Whether kordon made this budget to share an implicit one: it stands for a budget
/// kordon works out itself, so plans and drains read past it.
pub fn is_shared(b: &PodDisruptionBudget) -> bool {
    b.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE))
        .is_some_and(|r| r == ROLE_BUDGET)
}

/// Whether the budget's selector matches the pod (budgets only cover pods of their
/// own namespace). As in policy/v1, an empty selector covers every pod of the
/// namespace and a missing one covers none.
pub fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdb.metadata.namespace == pod.metadata.namespace
        && selector(pdb).is_some_and(|sel| sel.matches(labels))
}

/// An invalid selector (unknown operator, `In`/`NotIn` without values) covers no pod: Kubernetes' PDB lister skips it.
fn selector(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let selector = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(selector).ok()
}

/// Names of the budgets in the pod's namespace whose selector matches it.
pub async fn covering(conn: &Connection, target: &Pod) -> Result<Vec<String>, ClusterError> {
    let namespace = target.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(conn.client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| conn.error(format!("list PodDisruptionBudgets in {namespace}"), e))?;
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|pdb| covers(pdb, target))
        .filter_map(|pdb| pdb.metadata.name.clone())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A budget in `ns` with the given `spec.selector` (`null` for none).
    fn budget(ns: &str, selector: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": { "name": "pdb", "namespace": ns },
            "spec": { "selector": selector },
        }))
        .expect("budget")
    }

    /// A pod in `ns` labelled app=web, tier=fe.
    fn web_pod(ns: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-0", "namespace": ns, "labels": { "app": "web", "tier": "fe" } },
        }))
        .expect("pod")
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let pod = web_pod("shop");
        let covers_pod = |selector| covers(&budget("shop", selector), &pod);
        assert!(covers_pod(json!({})), "an empty selector covers every pod");
        assert!(covers_pod(json!({ "matchLabels": { "app": "web" } })));
        assert!(!covers_pod(json!({ "matchLabels": { "app": "db" } })));
        assert!(covers_pod(json!({ "matchExpressions": [
            { "key": "tier", "operator": "In", "values": ["fe", "be"] },
            { "key": "canary", "operator": "DoesNotExist" },
        ]})));
        assert!(!covers_pod(json!({
            "matchLabels": { "app": "web" },
            "matchExpressions": [{ "key": "app", "operator": "NotIn", "values": ["web"] }],
        })));
        assert!(covers_pod(
            json!({ "matchExpressions": [{ "key": "tier", "operator": "Exists" }] })
        ));
    }

    #[test]
    fn a_missing_or_invalid_selector_covers_nothing() {
        let pod = web_pod("shop");
        let covers_pod = |selector| covers(&budget("shop", selector), &pod);
        assert!(!covers_pod(serde_json::Value::Null));
        assert!(!covers_pod(json!({ "matchExpressions": [
            { "key": "app", "operator": "Matches", "values": ["web"] },
        ]})));
        assert!(!covers_pod(
            json!({ "matchExpressions": [{ "key": "canary", "operator": "NotIn" }] })
        ));
    }

    #[test]
    fn a_budget_covers_only_its_own_namespace() {
        assert!(!covers(&budget("other", json!({})), &web_pod("shop")));
    }

    #[test]
    fn budget_keys_read_and_sort_as_namespace_slash_name() {
        let shop = BudgetKey::of(&budget("shop", json!({})));
        assert_eq!(shop.to_string(), "shop/pdb");
        assert_eq!(
            serde_json::to_value(&shop).expect("json"),
            json!("shop/pdb")
        );
        // "shop-2/a" comes before "shop/pdb" as strings ('-' < '/'), though "shop" is
        // a prefix of "shop-2".
        let mut keys = vec![shop.clone(), BudgetKey::new("shop-2", "a")];
        keys.sort();
        assert_eq!(keys, [BudgetKey::new("shop-2", "a"), shop]);
    }
}
