//! Shared budgets: while a drain runs, each implicit budget it keeps (a workload that
//! no PodDisruptionBudget covers) is also a real PodDisruptionBudget, so every other
//! evictor in the cluster (another kordon, `kubectl drain`, the cluster autoscaler,
//! Karpenter) meets it at the Eviction API, which admits evictions one at a time
//! against the disruption controller's count. No in-process lock can do that.
//!
//! What is created, per namespace involved:
//! - a Lease `kordon-run-<run>-<node>`, the drain's token, renewed while it runs;
//! - for each uncovered workload, a PodDisruptionBudget `kordon-<kind>-<name>` with the
//!   workload's selector and its implicit `maxUnavailable`, owned by that Lease.
//!
//! The drain deletes its Lease when it ends and Kubernetes' garbage collector deletes
//! the budgets it alone owned. Two drains sharing a workload both own its budget, so it
//! lives until the last one ends. After a crash the Lease expires and the next drain in
//! that namespace deletes it, and with it the budgets. `--no-shared-budgets` opts out.
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::budget::{self, BudgetKey, ROLE, ROLE_BUDGET, is_shared};
use crate::cluster::lease::LeaseState;
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;
use crate::workload::Workload;

/// The [`ROLE`] of a drain's Lease.
const ROLE_RUN: &str = "drain-run";
/// The label on a drain's Lease naming the node it drains, so that whoever drains that
/// node next finds what a crashed drain left, in any namespace.
const NODE: &str = "kordon.dev/node";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kordon");
/// Set on a user's budget when kordon's shared one gives way to it: when, and the
/// change that makes the disruption controller count its pods again.
const HANDOVER: &str = "kordon.dev/budget-handover";

/// A drain's Lease expires this long after its last renewal by default: short, so that
/// what a crashed drain left is cleared soon by the next one.
pub const LEASE: Duration = Duration::from_secs(15);

/// A workload whose implicit budget is to be shared, with one of its pods (to find the
/// budgets that cover it).
pub struct Uncovered<'a> {
    pub workload: &'a Workload,
    pub pod: &'a Pod,
}

/// What the drain holds; [`SharedBudgets::release`] gives it back.
pub struct SharedBudgets {
    conn: Connection,
    node: NodeName,
    leases: Vec<(String, String)>,
    /// Budgets this drain owns (created or joined).
    pub budgets: Vec<BudgetKey>,
    renewer: tokio::task::JoinHandle<()>,
}

impl SharedBudgets {
    /// Makes each uncovered workload's implicit budget a PodDisruptionBudget, or joins
    /// the one another drain made. `existing` are the namespace's budgets as the view
    /// has them: a workload that a budget of someone else's covers is left alone.
    pub async fn hold(
        conn: &Connection,
        run: &str,
        node: &NodeName,
        lease: Duration,
        uncovered: &[Uncovered<'_>],
        existing: impl Fn(&str) -> Vec<Arc<PodDisruptionBudget>>,
    ) -> Result<Self, ClusterError> {
        let mut namespaces: Vec<&str> = uncovered
            .iter()
            .map(|u| u.workload.id.namespace.as_str())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        let lease_name = format!("kordon-run-{run}-{node}");
        let mut leases = Vec::new();
        let mut budgets = Vec::new();
        let made = async {
            for ns in namespaces {
                remove_expired(conn, ns).await?;
                let owner = create_lease(conn, ns, &lease_name, node, lease).await?;
                leases.push((ns.to_string(), lease_name.clone()));
                let existing = existing(ns);
                for u in uncovered.iter().filter(|u| u.workload.id.namespace == ns) {
                    let covered_by_others = existing
                        .iter()
                        .any(|b| budget::covers(b, u.pod) && !is_shared(b));
                    if covered_by_others {
                        continue;
                    }
                    let name = budget_name(u.workload);
                    let seen = existing.iter().find(|b| b.name_any() == name);
                    join_or_create(conn, ns, &name, u.workload, &owner, seen).await?;
                    budgets.push(BudgetKey::new(ns, name));
                }
            }
            Ok::<_, ClusterError>(())
        }
        .await;
        let held = Self {
            conn: conn.clone(),
            node: node.clone(),
            renewer: tokio::spawn(renew(conn.clone(), leases.clone(), lease)),
            leases,
            budgets,
        };
        match made {
            Ok(()) => Ok(held),
            // Nothing half made stays behind.
            Err(e) => {
                held.release().await;
                Err(e)
            }
        }
    }

    /// Deletes the drain's Leases: the garbage collector removes the budgets no other
    /// drain owns. Then it takes over what earlier drains of the node left (see
    /// [`remove_left_behind`]). Failures are logged; the Leases expire anyway.
    pub async fn release(self) {
        self.renewer.abort();
        for (ns, name) in &self.leases {
            let api: Api<Lease> = Api::namespaced(self.conn.client.clone(), ns);
            if let Err(e) = api.delete(name, &DeleteParams::background()).await {
                tracing::warn!("could not delete lease {ns}/{name}: {e}; it expires by itself");
            }
        }
        if let Err(e) = remove_left_behind(&self.conn, &self.node, &self.leases).await {
            tracing::warn!(
                "could not remove what earlier drains of node {} left: {e}; the next drain in each namespace removes it once expired",
                self.node
            );
        }
    }
}

/// Removes the Leases (and so the budgets) of earlier drains of the same node that
/// ended without removing them: a controller leader killed mid-drain, a CLI killed with
/// `kill -9`. Its work was taken over by the drain that now ends, so a budget the user
/// never wrote must not keep applying to every evictor. A Lease still held may belong to
/// a drain that is alive (two drains of one node at once): it is given until it expires,
/// and left alone if it was renewed meanwhile.
///
/// Looks in every namespace (one labelled list); where the caller may only list Leases
/// in the namespaces it drains, there.
async fn remove_left_behind(
    conn: &Connection,
    node: &NodeName,
    own: &[(String, String)],
) -> Result<(), ClusterError> {
    let Some(value) = node_label(node) else {
        return Ok(());
    };
    let selector = ListParams::default().labels(&format!("{ROLE}={ROLE_RUN},{NODE}={value}"));
    let everywhere: Api<Lease> = Api::all(conn.client.clone());
    let leases = match everywhere.list(&selector).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let mut found = Vec::new();
            for (ns, _) in own {
                let api: Api<Lease> = Api::namespaced(conn.client.clone(), ns);
                let list = api
                    .list(&selector)
                    .await
                    .map_err(|e| conn.error(format!("list kordon's leases in {ns}"), e))?;
                found.extend(list.items);
            }
            found
        }
        Err(e) => return Err(conn.error("list kordon's leases of the node", e)),
    };
    let theirs = leases.into_iter().filter(|l| {
        let key = (
            l.metadata.namespace.clone().unwrap_or_default(),
            l.name_any(),
        );
        !own.contains(&key)
    });
    let waits = theirs.map(|lease| async move {
        let ns = lease.metadata.namespace.clone().unwrap_or_default();
        let name = lease.name_any();
        let api: Api<Lease> = Api::namespaced(conn.client.clone(), &ns);
        let seen = LeaseState::of(&lease);
        if let Some(expires) = seen.expires.filter(|_| seen.is_held(Timestamp::now())) {
            let left = Duration::try_from(Timestamp::now().duration_until(expires));
            tokio::time::sleep(left.unwrap_or_default() + Duration::from_millis(500)).await;
            let again = api
                .get_opt(&name)
                .await
                .map_err(|e| conn.error(format!("read lease {ns}/{name}"), e))?;
            if again.is_none_or(|l| LeaseState::of(&l).is_held(Timestamp::now())) {
                // Gone already, or renewed: its drain is alive.
                return Ok(());
            }
        }
        tracing::info!(
            "removing lease {ns}/{name} of an earlier drain of node {node} that did not finish"
        );
        delete(&api, &name, &DeleteParams::background())
            .await
            .map_err(|e| conn.error(format!("delete lease {ns}/{name}"), e))
    });
    futures::future::try_join_all(waits).await?;
    Ok(())
}

/// The node's name as a label value, when it fits one (63 characters; a node name is a
/// DNS subdomain, whose characters a label value allows).
fn node_label(node: &NodeName) -> Option<&str> {
    (node.as_str().len() <= 63).then_some(node.as_str())
}

/// Steps aside for budgets of the user's (`theirs`) that now cover the same pods as a
/// shared one: two budgets on one pod make every eviction of it fail, for everyone.
///
/// While two budgets covered them, the disruption controller counted the pods' changes
/// under one of the two only, so theirs may be stale until something makes it count
/// again. A change to a pod would go to whichever budget the controller's cache still
/// matches (ours, if it has not seen the deletion yet); a change to their budget is
/// counted for that budget itself, so each is marked with the moment of the handover.
pub async fn give_way(
    conn: &Connection,
    ours: &BudgetKey,
    theirs: &[String],
) -> Result<(), ClusterError> {
    let ns = ours.namespace.as_str();
    tracing::warn!(
        "a PodDisruptionBudget of someone else's ({}) now covers the pods of kordon's shared budget {ours}: removing kordon's, the other governs",
        theirs.join(", ")
    );
    let api: Api<PodDisruptionBudget> = Api::namespaced(conn.client.clone(), ns);
    delete(&api, &ours.name, &DeleteParams::default())
        .await
        .map_err(|e| conn.error(format!("delete PodDisruptionBudget {ours}"), e))?;
    let mark = json!({ "metadata": { "annotations": {
        HANDOVER: Timestamp::now().to_string() } } });
    for name in theirs {
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&mark))
            .await
        {
            tracing::warn!(
                "could not mark PodDisruptionBudget {ns}/{name} for the disruption controller to count its pods again: {e}"
            );
        }
    }
    Ok(())
}

/// Deletes the object; one already gone is fine.
async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// `kordon-deployment-web`, cut to the 253 characters a name may have.
fn budget_name(w: &Workload) -> String {
    let mut name = format!(
        "kordon-{}-{}",
        w.id.kind.to_string().to_lowercase(),
        w.id.name
    );
    name.truncate(253);
    name
}

fn labels(role: &str) -> std::collections::BTreeMap<String, String> {
    [
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (ROLE.to_string(), role.to_string()),
    ]
    .into()
}

/// Deletes drain Leases in the namespace that expired (their drain crashed); the
/// garbage collector follows with their budgets.
async fn remove_expired(conn: &Connection, ns: &str) -> Result<(), ClusterError> {
    let api: Api<Lease> = Api::namespaced(conn.client.clone(), ns);
    let leases = api
        .list(&ListParams::default().labels(&format!("{ROLE}={ROLE_RUN}")))
        .await
        .map_err(|e| conn.error(format!("list kordon's leases in {ns}"), e))?;
    let now = Timestamp::now();
    for lease in leases.items {
        if LeaseState::of(&lease).is_held(now) {
            continue;
        }
        let name = lease.metadata.name.unwrap_or_default();
        tracing::info!("removing expired lease {ns}/{name} of a drain that did not finish");
        delete(&api, &name, &DeleteParams::background())
            .await
            .map_err(|e| conn.error(format!("delete lease {ns}/{name}"), e))?;
    }
    Ok(())
}

async fn create_lease(
    conn: &Connection,
    ns: &str,
    name: &str,
    node: &NodeName,
    duration: Duration,
) -> Result<OwnerReference, ClusterError> {
    let api: Api<Lease> = Api::namespaced(conn.client.clone(), ns);
    let mut labels = labels(ROLE_RUN);
    if let Some(value) = node_label(node) {
        labels.insert(NODE.to_string(), value.to_string());
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let created = api
        .create(&PostParams::default(), &lease)
        .await
        .map_err(|e| conn.error(format!("create lease {ns}/{name}"), e))?;
    Ok(OwnerReference {
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        name: name.to_string(),
        uid: created.metadata.uid.unwrap_or_default(),
        ..Default::default()
    })
}

/// Creates the workload's budget owned by `owner`, or adds `owner` to the owners of
/// the one another drain made (a strategic merge adds to the list, so two drains
/// joining at once both stay owners). `seen`: the budget by that name as the view has
/// it.
async fn join_or_create(
    conn: &Connection,
    ns: &str,
    name: &str,
    w: &Workload,
    owner: &OwnerReference,
    seen: Option<&Arc<PodDisruptionBudget>>,
) -> Result<(), ClusterError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(conn.client.clone(), ns);
    let join = json!({ "metadata": { "ownerReferences": [owner] } });
    // One the view shows (another drain's, of this process or another) is joined at
    // once: one request, not a refused create and a read first.
    if seen.is_some_and(|b| is_shared(b) && b.metadata.deletion_timestamp.is_none()) {
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&join))
            .await
        {
            Ok(_) => return Ok(()),
            // Collected since the view saw it: create it anew.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(conn.error(format!("join PodDisruptionBudget {ns}/{name}"), e)),
        }
    }
    let pdb = PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels(ROLE_BUDGET)),
            owner_references: Some(vec![owner.clone()]),
            annotations: Some(
                [(
                    "kordon.dev/stands-for".to_string(),
                    format!("the implicit budget of {} while kordon drains", w.id),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(w.selector.clone()),
            max_unavailable: Some(IntOrString::Int(w.max_unavailable)),
            ..Default::default()
        }),
        status: None,
    };
    // A budget that a crashed drain left may vanish under us (the garbage collector
    // follows its expired Lease): then create it anew.
    for _ in 0..5 {
        match api.create(&PostParams::default(), &pdb).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(conn.error(format!("create PodDisruptionBudget {ns}/{name}"), e)),
        }
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| conn.error(format!("read PodDisruptionBudget {ns}/{name}"), e))?;
        let Some(found) = found.filter(|b| b.metadata.deletion_timestamp.is_none()) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if !is_shared(&found) {
            // Someone else's budget by that name: the implicit budget stays in this
            // process.
            tracing::warn!(
                "PodDisruptionBudget {ns}/{name} is not kordon's; not sharing the implicit budget of {}",
                w.id
            );
            return Ok(());
        }
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(&join))
            .await
        {
            Ok(_) => return Ok(()),
            // Collected between the read and the join: create it anew.
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(conn.error(format!("join PodDisruptionBudget {ns}/{name}"), e)),
        }
    }
    Err(ClusterError::Unreachable {
        server: conn.server.clone(),
        reason: format!("PodDisruptionBudget {ns}/{name} kept appearing and vanishing"),
    })
}

/// Renews every lease a third of its duration, until aborted.
async fn renew(conn: Connection, leases: Vec<(String, String)>, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        for (ns, name) in &leases {
            let api: Api<Lease> = Api::namespaced(conn.client.clone(), ns);
            let patch = json!({ "spec": { "renewTime": MicroTime(Timestamp::now()) } });
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!("could not renew lease {ns}/{name}: {e}");
            }
        }
    }
}
