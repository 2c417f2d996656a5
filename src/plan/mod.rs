//! The pre-flight plan: for the nodes to drain, what happens to every pod, where its
//! replacement would land, what blocks, and how many waves of evictions to expect.
//! Pure over a [`Snapshot`], so the same answer comes from the live cluster and from a
//! dump of it. `guards` decides how each eviction is paced; `placement` simulates the
//! scheduler's hard filters.
pub mod guards;
mod room;

pub use room::plan_finding_room;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Serialize;

use crate::budget::BudgetKey;
use crate::classify::{self, Permissions, Replacement, Verdict};
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};
use crate::placement::{self, Misfit, Resources};
use crate::pod::PodKey;
use crate::snapshot::Snapshot;
use crate::tiers::{self, DrainOrder, Tier};
use crate::workload::{WorkloadId, scaled};
use guards::{Guard, GuardOptions};

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub permissions: Permissions,
    pub guards: GuardOptions,
    /// `--drain-order`: the tiers the pods are evicted in (see [`crate::tiers`]).
    pub drain_order: DrainOrder,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub nodes: Vec<NodeName>,
    pub pods: Vec<PlannedPod>,
    /// Replacements no remaining node can take, with why, per node count.
    pub fits_nowhere: Vec<Unplaceable>,
    /// Budgets covering pods to evict that allow no disruption right now.
    pub budgets_at_zero: Vec<BudgetAtZero>,
    /// Workloads that would lose availability (their replacements fit nowhere).
    pub at_risk: Vec<String>,
    /// How many rounds of evictions the budgets make the drain take.
    pub waves: usize,
    /// The pods to evict in the order the drain takes them: a tier starts once every
    /// pod of the one before is gone.
    pub tiers: Vec<Tier>,
    pub safe: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPod {
    pub pod: PodKey,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Where its replacement would be scheduled.
    pub lands_on: Option<String>,
}

/// A replacement no remaining node can take; `output::plan` says why in words.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unplaceable {
    pub pod: PodKey,
    pub nodes_rejecting: BTreeMap<Misfit, usize>,
}

impl PlanReport {
    /// Whether draining must not start: a pod needs a flag, or (unless the operator
    /// accepts Pending replacements, `--allow-pending`) a replacement fits nowhere.
    pub fn blocks(&self, allow_pending: bool) -> bool {
        let refused = self
            .pods
            .iter()
            .any(|p| matches!(p.verdict, Verdict::Refuse { .. }));
        refused || (!allow_pending && !self.fits_nowhere.is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetAtZero {
    pub budget: BudgetKey,
    pub current_healthy: i32,
    pub desired_healthy: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("node \"{0}\" not found; `kordon status` lists the nodes")]
    UnknownNode(NodeName),
}

pub fn plan(
    snapshot: &Snapshot,
    targets: &[NodeName],
    opts: &PlanOptions,
) -> Result<PlanReport, PlanError> {
    let draining: HashSet<&str> = targets.iter().map(NodeName::as_str).collect();
    for t in targets {
        if !snapshot
            .nodes
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(t.as_str()))
        {
            return Err(PlanError::UnknownNode(t.clone()));
        }
    }
    let node_of = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };

    let mut pods: Vec<(Pod, Verdict)> = snapshot
        .pods
        .iter()
        .filter(|p| draining.contains(node_of(p).as_str()))
        .map(|p| (p.clone(), classify::classify(p, opts.permissions)))
        .collect();
    pods.sort_by_key(|(p, _)| PodKey::of(p));
    let guards = guards::assign(snapshot, &mut pods, opts.guards);

    let mut remaining = Remaining::new(snapshot, &draining);
    let mut planned = Vec::new();
    let mut fits_nowhere = Vec::new();
    let mut at_risk = BTreeSet::new();
    let mut order: Vec<usize> = (0..pods.len()).collect();
    // Biggest first, as a packing heuristic.
    order.sort_by(|a, b| {
        placement::requests(&pods[*b].0)
            .cpu_milli
            .total_cmp(&placement::requests(&pods[*a].0).cpu_milli)
    });
    let mut lands: HashMap<usize, String> = HashMap::new();
    for i in order {
        let (p, verdict) = &pods[i];
        let needs_home = matches!(verdict, Verdict::Evict(e) if matches!(e.replacement, Replacement::ByController { .. }));
        if !needs_home {
            continue;
        }
        match remaining.place(p) {
            Ok(node) => {
                lands.insert(i, node);
            }
            Err(why) => {
                at_risk.insert(
                    snapshot
                        .workload_of(p)
                        .map(|w| w.id.to_string())
                        .unwrap_or_else(|| PodKey::of(p).to_string()),
                );
                fits_nowhere.push(Unplaceable {
                    pod: PodKey::of(p),
                    nodes_rejecting: why,
                });
            }
        }
    }
    for (i, (p, verdict)) in pods.iter().enumerate() {
        planned.push(PlannedPod {
            pod: PodKey::of(p),
            verdict: verdict.clone(),
            lands_on: lands.get(&i).cloned(),
        });
    }
    fits_nowhere.sort_by(|a, b| a.pod.cmp(&b.pod));

    let budgets_at_zero = budgets_at_zero(snapshot, &pods);
    let waves = waves(snapshot, &pods, &guards);
    let tiers = tiers::of_evicted(&pods, &opts.drain_order);
    let refused = pods
        .iter()
        .any(|(_, v)| matches!(v, Verdict::Refuse { .. }));
    Ok(PlanReport {
        nodes: targets.to_vec(),
        pods: planned,
        safe: !refused && fits_nowhere.is_empty(),
        fits_nowhere,
        budgets_at_zero,
        at_risk: at_risk.into_iter().collect(),
        waves,
        tiers,
    })
}

/// The nodes that stay schedulable, with what is still free on each.
struct Remaining<'a> {
    nodes: Vec<(&'a Node, Resources)>,
}

impl<'a> Remaining<'a> {
    fn new(snapshot: &'a Snapshot, draining: &HashSet<&str>) -> Self {
        let nodes = snapshot
            .nodes
            .iter()
            .filter(|n| {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                let state = NodeState::of(n);
                !draining.contains(name)
                    && !state.cordoned
                    && state.readiness == Readiness::Ready
                    && snapshot.usage_known(name)
            })
            .map(|n| {
                let name = n.metadata.name.as_deref().unwrap_or_default();
                let free = placement::allocatable(n)
                    .minus(&snapshot.usage.get(name).copied().unwrap_or_default());
                (n.as_ref(), free)
            })
            .collect();
        Self { nodes }
    }

    /// Puts the pod on the eligible node with the most free CPU (the scheduler
    /// prefers the least allocated), or says why each node refused it.
    fn place(&mut self, p: &Pod) -> Result<String, BTreeMap<Misfit, usize>> {
        let need = placement::requests(p);
        let mut why = BTreeMap::new();
        let mut best: Option<usize> = None;
        for (i, (node, free)) in self.nodes.iter().enumerate() {
            let verdict = placement::eligible(p, node).and_then(|()| {
                if need.fits_in(free) {
                    Ok(())
                } else {
                    Err(Misfit::Resources)
                }
            });
            match verdict {
                Ok(()) => {
                    if best.is_none_or(|b| free.cpu_milli > self.nodes[b].1.cpu_milli) {
                        best = Some(i);
                    }
                }
                Err(m) => *why.entry(m).or_insert(0) += 1,
            }
        }
        let i = best.ok_or(why)?;
        let (node, free) = &mut self.nodes[i];
        *free = free.minus(&need);
        Ok(node.metadata.name.clone().unwrap_or_default())
    }
}

fn budgets_at_zero(snapshot: &Snapshot, pods: &[(Pod, Verdict)]) -> Vec<BudgetAtZero> {
    let mut seen = BTreeMap::new();
    for (p, v) in pods {
        if !matches!(v, Verdict::Evict(_)) {
            continue;
        }
        for b in snapshot.budgets_covering(p) {
            let Some(status) = &b.status else { continue };
            if status.disruptions_allowed == 0 {
                let budget = BudgetKey::of(b);
                seen.insert(
                    budget.clone(),
                    BudgetAtZero {
                        budget,
                        current_healthy: status.current_healthy,
                        desired_healthy: status.desired_healthy,
                    },
                );
            }
        }
    }
    seen.into_values().collect()
}

/// What paces a group of evictions in [`waves`].
#[derive(Debug, PartialEq, Eq, Hash)]
enum Group {
    /// The workload's implicit budget, or its rollout restart.
    Workload(WorkloadId),
    /// The first PodDisruptionBudget covering the pods.
    Budget(BudgetKey),
    /// Nothing: the pod goes in the first wave.
    Pod(PodKey),
}

/// Rounds of evictions: per workload (or budget), its pods on the drained nodes
/// divided by how many may go at once; the drain takes as many rounds as its
/// slowest group, since groups drain in parallel.
fn waves(snapshot: &Snapshot, pods: &[(Pod, Verdict)], guards: &HashMap<PodKey, Guard>) -> usize {
    let mut groups: HashMap<Group, (usize, usize)> = HashMap::new();
    for (p, v) in pods {
        if !matches!(v, Verdict::Evict(_)) {
            continue;
        }
        let key = PodKey::of(p);
        let (group, per_wave) = match guards.get(&key) {
            Some(Guard::Implicit(w)) => (
                Group::Workload(w.id.clone()),
                (w.max_unavailable.min(w.replicas - 1)).max(1) as usize,
            ),
            Some(Guard::Surge(w)) => (Group::Workload(w.id.clone()), usize::MAX),
            _ => match snapshot.budgets_covering(p).first() {
                Some(b) => {
                    let expected = b.status.as_ref().map(|s| s.expected_pods).unwrap_or(1);
                    let spec = b.spec.as_ref();
                    let allowed = match (
                        spec.and_then(|s| s.max_unavailable.as_ref()),
                        spec.and_then(|s| s.min_available.as_ref()),
                    ) {
                        (Some(max), _) => scaled(max, expected, true),
                        (None, Some(min)) => expected - scaled(min, expected, true),
                        (None, None) => 1,
                    };
                    (Group::Budget(BudgetKey::of(b)), allowed.max(1) as usize)
                }
                None => (Group::Pod(key), usize::MAX),
            },
        };
        let entry = groups.entry(group).or_insert((0, per_wave));
        entry.0 += 1;
    }
    groups
        .values()
        .map(|(n, k)| n.div_ceil(*k))
        .max()
        .unwrap_or(0)
}
