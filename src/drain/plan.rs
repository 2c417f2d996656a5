//! A drain's plan: the node and every pod's verdict, read before anything changes.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::{DrainError, DrainOptions, down};
use crate::classify::{self, Refusal, Verdict};
use crate::cluster::nodes::{self};
use crate::cluster::view::Held;
use crate::cluster::{ClusterError, Connection};
use crate::context::Context;
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};
use crate::plan::guards::{self, Guard};
use crate::plan::{PlanOptions, PlanReport};
use crate::pod::{PodKey, Uid};
use crate::snapshot::{Reach, Snapshot, Then};
use crate::tiers::{self, Tier};
use crate::workload::Workload;

/// A pod and what draining does with it.
#[derive(Debug, Clone, Serialize)]
pub struct PodVerdict {
    pub pod: PodKey,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The node's pods, classified; nothing has changed yet.
pub struct Plan {
    pub node: NodeName,
    pub state: NodeState,
    /// The node was cordoned, not by kordon: that cordon is its owner's to lift
    /// ([`nodes::cordoned_by_someone_else`]).
    pub cordoned_by_someone_else: bool,
    pub(super) pods: Vec<(Pod, Verdict)>,
    /// The pods to evict, in the tiers the drain takes them in.
    pub(super) tiers: Vec<Tier>,
    pub(super) guards: HashMap<PodKey, Guard>,
    /// Each pod's workload, by pod key, for pods that have one.
    pub(super) workloads: HashMap<PodKey, Workload>,
    /// What the pre-flight plan expects: where replacements land, what fits nowhere,
    /// budgets at 0, eviction waves. Left out when a fleet plan made it already.
    pub forecast: Option<PlanReport>,
    /// Keeps the view watching what the plan read (the node's pods, budgets,
    /// Deployments), for the drain to use.
    pub(super) _watches: Vec<Held>,
    /// Down for good (see [`DrainOptions::node_down`]): its pods leave through the
    /// out-of-service taint.
    pub down: bool,
    /// The node's annotations as read, for a fence's record of what was there.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Whether, and by whom, the node was out of external load balancers as read.
    pub excluded: crate::exclusion::Exclusion,
}

impl Plan {
    /// The pods whose verdict `which` picks.
    pub(super) fn pods_to(&self, which: impl Fn(&Verdict) -> bool) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|(_, v)| which(v))
            .map(|(p, _)| p)
            .collect()
    }

    pub fn verdicts(&self) -> Vec<PodVerdict> {
        self.pods
            .iter()
            .map(|(p, v)| PodVerdict {
                pod: PodKey::of(p),
                verdict: v.clone(),
            })
            .collect()
    }

    /// How many pods the drain will evict.
    pub fn evictable(&self) -> usize {
        self.pods
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
            .count()
    }

    /// How many pods are leaving already (terminating): the drain only waits for them.
    pub fn leaving(&self) -> usize {
        self.pods
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::AwaitTermination))
            .count()
    }

    /// The workloads whose pods the drain evicts: the health gate after the node is
    /// back waits for each to be at full Ready again.
    pub fn touched_workloads(&self) -> Vec<crate::workload::WorkloadId> {
        let mut ids: Vec<_> = self
            .pods
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
            .filter_map(|(p, _)| self.workloads.get(&PodKey::of(p)))
            .map(|w| w.id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Why the plan may not be carried out, before anything changes: pods that need a
    /// flag ([`DrainError::Refused`]), or, unless `allow_pending`, replacements that no
    /// other node can take ([`DrainError::WouldStrand`]).
    pub fn refusal(&self, allow_pending: bool) -> Option<DrainError> {
        let refused = self.refused();
        if !refused.is_empty() {
            return Some(DrainError::Refused {
                node: self.node.clone(),
                pods: refused,
            });
        }
        let stranded = &self.forecast.as_ref()?.fits_nowhere;
        (!allow_pending && !stranded.is_empty()).then(|| DrainError::WouldStrand {
            node: self.node.clone(),
            pods: stranded
                .iter()
                .map(|u| format!("{} ({})", u.pod, u.why()))
                .collect(),
        })
    }

    /// Pods that block the drain, each with its reasons.
    pub fn refused(&self) -> Vec<(PodKey, Vec<Refusal>)> {
        self.pods
            .iter()
            .filter_map(|(p, v)| match v {
                Verdict::Refuse { reasons } => {
                    Some((PodKey::of(p), reasons.iter().cloned().collect()))
                }
                _ => None,
            })
            .collect()
    }
}

/// Reads the node and classifies its pods. Changes nothing. With any other reach than
/// [`Reach::Targets`] it also forecasts where the replacements land, which reads the
/// usage of as many nodes as that takes.
pub async fn plan(
    ctx: &Context,
    node: &NodeName,
    opts: &DrainOptions,
    reach: Reach,
) -> Result<Plan, DrainError> {
    // One scoped read serves the node's state, its pods, the guards and the forecast.
    let mut snapshot =
        Snapshot::live(&ctx.view, std::slice::from_ref(node), reach, Then::Drain).await?;
    let found: &Node = snapshot
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
        .ok_or_else(|| ClusterError::NodeNotFound(node.clone()))?;
    let state = NodeState::of(found);
    let down = match (state.readiness == Readiness::Ready, opts.node_down) {
        (true, None) => false,
        (true, Some(_)) => return Err(DrainError::NotDown { node: node.clone() }),
        (false, None) => {
            return Err(DrainError::NotReady {
                node: node.clone(),
                state,
            });
        }
        (false, Some(after)) => {
            let silent = down::silent_for(&ctx.conn, found).await?;
            if silent < after {
                return Err(DrainError::NotDownLongEnough {
                    node: node.clone(),
                    state,
                    silent: silent.min(Duration::from_secs(u64::from(u32::MAX))),
                    after,
                });
            }
            true
        }
    };
    let cordoned_by_someone_else = nodes::cordoned_by_someone_else(found);
    let annotations = found.metadata.annotations.clone().unwrap_or_default();
    let labels = found.metadata.labels.clone().unwrap_or_default();
    let excluded = crate::exclusion::Exclusion::of(&labels, &annotations);
    if let Some(selector) = &opts.pod_selector {
        // The API server parses and applies the selector, as for kubectl; the forecast
        // then covers exactly the pods that are drained.
        let selected = selected_uids(&ctx.conn, node, selector).await?;
        snapshot
            .pods
            .retain(|p| Uid::of(p).is_some_and(|u| selected.contains(&u)));
    }
    let mut pods: Vec<(Pod, Verdict)> = snapshot
        .pods
        .iter()
        .map(|p| (p.clone(), classify::classify(p, opts.permissions)))
        .collect();
    pods.sort_by_key(|(p, _)| PodKey::of(p));
    let guards = guards::assign(&snapshot, &mut pods, opts.guards);
    let tiers = tiers::of_evicted(&pods, &opts.drain_order);
    let workloads = pods
        .iter()
        .filter_map(|(p, _)| Some((PodKey::of(p), snapshot.workload_of(p)?)))
        .collect();
    let forecast = match reach {
        Reach::Targets => None,
        Reach::Placement | Reach::Room => Some(
            crate::plan::plan_finding_room(
                &ctx.conn,
                &mut snapshot,
                std::slice::from_ref(node),
                &PlanOptions {
                    permissions: opts.permissions,
                    guards: opts.guards,
                    drain_order: opts.drain_order.clone(),
                },
            )
            .await?,
        ),
    };
    Ok(Plan {
        node: node.clone(),
        state,
        cordoned_by_someone_else,
        pods,
        tiers,
        guards,
        workloads,
        forecast,
        _watches: std::mem::take(&mut snapshot.held),
        down,
        annotations,
        excluded,
    })
}

/// UIDs of the node's pods matching a label selector, which the API server validates.
async fn selected_uids(
    conn: &Connection,
    node: &NodeName,
    selector: &str,
) -> Result<HashSet<Uid>, DrainError> {
    let api: Api<Pod> = Api::all(conn.client.clone());
    let lp = ListParams::default()
        .fields(&format!("spec.nodeName={node}"))
        .labels(selector);
    let uids = |l: kube::core::ObjectList<Pod>| l.items.iter().filter_map(Uid::of).collect();
    api.list(&lp).await.map(uids).map_err(|e| match e {
        kube::Error::Api(status) if status.code == 400 => DrainError::InvalidPodSelector {
            selector: selector.to_string(),
            message: status.message.clone(),
        },
        e => conn.error(format!("list pods on node {node}"), e).into(),
    })
}
