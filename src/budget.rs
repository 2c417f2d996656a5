//! PodDisruptionBudgets: which ones cover a pod.
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};

use crate::cluster::{ClusterError, Connection};

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
}
