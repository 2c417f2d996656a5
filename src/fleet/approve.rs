//! `kordon approve`: a roll (or a MaintenancePlan) that a failing metric gate holds may
//! start one node anyway. The approval is the annotation `kordon.dev/approve`, valued
//! with the time it was given, on the roll's lease or on the plan: the roll's gate watch
//! and the controller read it there, and each value starts one node.
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use super::LOCK_NAME;
use crate::api::maintenance_plan::{APPROVE_ANNOTATION, MaintenancePlan};
use crate::cluster::{ClusterError, Connection};

/// A new approval's value: the time, to the nanosecond, so each is new.
fn value() -> String {
    jiff::Timestamp::now().to_string()
}

/// Approves one start of the roll holding the lock in `namespace`: the approval's value
/// and the run, or `None` when no roll holds it now.
pub async fn roll(
    conn: &Connection,
    namespace: &str,
) -> Result<Option<(String, String)>, ClusterError> {
    let api: Api<Lease> = Api::namespaced(conn.client.clone(), namespace);
    let action = format!("approve the roll in lease {namespace}/{LOCK_NAME}");
    // The run renews the lease meanwhile: a conflict is read again and retried.
    for attempt in 1..=5 {
        let Some(mut lease) = api
            .get_opt(LOCK_NAME)
            .await
            .map_err(|e| conn.error(action.clone(), e))?
        else {
            return Ok(None);
        };
        let state = crate::cluster::lease::LeaseState::of(&lease);
        let Some(run) =
            super::run::of_lease(&state).filter(|_| state.is_held(jiff::Timestamp::now()))
        else {
            return Ok(None);
        };
        let approval = value();
        lease
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(APPROVE_ANNOTATION.into(), approval.clone());
        match api.replace(LOCK_NAME, &PostParams::default(), &lease).await {
            Ok(_) => return Ok(Some((approval, run.run))),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {}
            Err(e) => return Err(conn.error(action, e)),
        }
    }
    Ok(None)
}

/// Approves one start of the MaintenancePlan `name`: the approval's value, or `None`
/// when there is no such plan.
pub async fn plan(conn: &Connection, name: &str) -> Result<Option<String>, ClusterError> {
    let api: Api<MaintenancePlan> = Api::all(conn.client.clone());
    let approval = value();
    let patch =
        serde_json::json!({ "metadata": { "annotations": { APPROVE_ANNOTATION: approval } } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Some(approval)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(conn.error(format!("approve MaintenancePlan {name}"), e)),
    }
}
