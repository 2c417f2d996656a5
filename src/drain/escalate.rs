//! Carries out the [`ladder`](super::ladder) once a drain's deadline has passed: which
//! pods its rules name (the API server evaluates the selectors, before anything
//! changes), and each deletion past a budget with its audit trail: a Warning Event on
//! the pod and on the node, and the node annotation [`DELETED_PAST_BUDGET`] listing
//! every such deletion of the drain.
use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::DrainError;
use super::ladder::{Allowance, DeleteRule};
use crate::cluster::events::{Events, Severity};
use crate::cluster::nodes::{self, Annotations, DryRun};
use crate::context::Context;
use crate::evict::{self, Blocked, Outcome};
use crate::names::NodeName;
use crate::pod::{PodKey, Uid};

/// On the node: JSON list of the pods its last drain deleted past their budgets.
pub const DELETED_PAST_BUDGET: &str = "kordon.dev/deleted-past-budget";

/// One pod deleted past its budget: what the report, `-o json` and the node annotation
/// say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    pub pod: PodKey,
    pub allowed_by: Allowance,
    /// What held it: a PodDisruptionBudget or kordon's implicit budget.
    pub blocked_by: Blocked,
    pub at: Timestamp,
    /// The grace the deletion gave it, which ends by the deadline unless it was longer
    /// than the deadline itself.
    pub grace_seconds: u64,
    /// The drain's deadline this deletion came ahead of.
    pub deadline: Timestamp,
}

impl Escalation {
    pub fn describe(&self) -> String {
        format!(
            "{} deleted past its budget ({}), allowed by {}",
            self.pod, self.blocked_by.detail, self.allowed_by
        )
    }
}

/// The node's pods each delete rule names, by UID, with the first rule naming each.
pub async fn named_pods(
    ctx: &Context,
    node: &NodeName,
    rules: &[DeleteRule],
) -> Result<HashMap<Uid, DeleteRule>, DrainError> {
    let mut named = HashMap::new();
    for rule in rules {
        let api: Api<Pod> = match &rule.namespace {
            Some(ns) => Api::namespaced(ctx.conn.client.clone(), ns),
            None => Api::all(ctx.conn.client.clone()),
        };
        let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        if let Some(selector) = &rule.selector {
            lp = lp.labels(selector);
        }
        let pods = api.list(&lp).await.map_err(|e| match e {
            kube::Error::Api(status) if status.code == 400 => DrainError::InvalidRule {
                rule: rule.to_string(),
                message: status.message.clone(),
            },
            e => DrainError::from(ctx.conn.error(
                format!("list the pods --delete-past-budget {rule} names"),
                e,
            )),
        })?;
        for uid in pods.items.iter().filter_map(Uid::of) {
            named.entry(uid).or_insert_with(|| rule.clone());
        }
    }
    Ok(named)
}

/// One deletion past a budget, as the ladder decided it.
pub struct Deletion<'a> {
    pub target: &'a Pod,
    pub allowed_by: Allowance,
    pub blocked_by: Blocked,
    /// `--grace-period`, or `None` for the pod's own.
    pub grace_period: Option<u32>,
    /// The grace the pod gets ([`super::ladder::grace_of`]), for the record.
    pub grace: std::time::Duration,
    pub deadline: Timestamp,
}

/// Deletes the pod past its budget (UID precondition: never a successor of the same
/// name) and leaves the audit trail. `so_far` holds the drain's earlier escalations,
/// since the node annotation lists them all.
pub async fn delete_past_budget(
    ctx: &Context,
    node: &NodeName,
    deletion: Deletion<'_>,
    so_far: &[Escalation],
) -> Result<Option<Escalation>, DrainError> {
    let target = deletion.target;
    let request = evict::Request {
        grace_period: deletion.grace_period,
        bypass_budgets: true,
        server_dry_run: false,
    };
    if evict::evict(&ctx.conn, target, request).await? != Outcome::Accepted {
        return Ok(None);
    }
    let escalation = Escalation {
        pod: PodKey::of(target),
        allowed_by: deletion.allowed_by,
        blocked_by: deletion.blocked_by,
        at: Timestamp::now(),
        grace_seconds: deletion.grace.as_secs(),
        deadline: deletion.deadline,
    };
    tracing::warn!("{}", escalation.describe());
    let mut all = so_far.to_vec();
    all.push(escalation.clone());
    let record: Annotations = [(
        DELETED_PAST_BUDGET.to_string(),
        Some(serde_json::to_string(&all).unwrap_or_default()),
    )]
    .into();
    let events = Events::new(&ctx.conn, &format!("kordon-{}", ctx.run));
    let note = format!("kordon: {} on node {node}", escalation.describe());
    events
        .publish(target, Severity::Warning, "DeletedPastBudget", note.clone())
        .await;
    // The record on the node is best effort like the events: the pod is gone already.
    match nodes::patch(&ctx.conn, node, None, &record, DryRun::None).await {
        Ok(n) => {
            events
                .publish(&n, Severity::Warning, "DeletedPastBudget", note)
                .await
        }
        Err(e) => tracing::warn!("cannot record the deletion on node {node}: {e}"),
    }
    Ok(Some(escalation))
}
