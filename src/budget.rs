//! PodDisruptionBudgets: which ones cover a pod.
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

use crate::cluster::{ClusterError, Connection};
use crate::selector;

/// Whether the budget's selector matches the pod (budgets only cover pods of their
/// own namespace).
pub fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    pdb.metadata.namespace == pod.metadata.namespace
        && pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|sel| selector::matches(sel, labels))
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
