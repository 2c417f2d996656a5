//! Draining one node: look at every pod first, refuse before changing anything if a pod
//! needs a flag, then cordon, evict with bounded concurrency, and confirm each pod gone
//! by its UID while following its replacement on another node.
mod down;
mod engine;
mod escalate;
pub mod ladder;
pub mod shared;
mod step;
mod tracker;

pub use escalate::{DELETED_PAST_BUDGET, Escalation};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::advice::{Advice, Exit};
use crate::classify::{self, Permissions, Refusal, Verdict};
use crate::cluster::access::Permission;
use crate::cluster::nodes::{self, DryRun};
use crate::cluster::view::Watched;
use crate::cluster::{ClusterError, Connection};
use crate::context::Context;
use crate::evict::{self, Blocked, EvictError};
use crate::flag::Flag;
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};
use crate::pod::{self, Lifecycle, PodKey, Uid};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::plan::guards::{self, Guard, GuardOptions};
use crate::plan::{PlanOptions, PlanReport};
use crate::snapshot::{Reach, Snapshot};
use crate::workload::{Workload, WorkloadId};
pub use step::Recovery;
pub use tracker::ReplacementStatus;

#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub permissions: Permissions,
    /// Only pods matching this label selector are drained (`--pod-selector`).
    pub pod_selector: Option<String>,
    pub grace_period: Option<u32>,
    pub disable_eviction: bool,
    pub dry_run: DryRun,
    /// Give up after this long, naming what still blocks.
    pub timeout: Option<Duration>,
    /// Evictions in flight at once.
    pub concurrency: usize,
    /// How evictions are paced (see [`crate::guard`]).
    pub guards: GuardOptions,
    /// Drain even when the forecast finds replacements that no other node can take.
    pub allow_pending: bool,
    /// Make implicit budgets real PodDisruptionBudgets while the drain runs (see
    /// [`shared`]).
    pub shared_budgets: bool,
    /// What happens to pods a budget still holds at the deadline (see [`ladder`]).
    pub ladder: ladder::Ladder,
    /// The caller owns the node's cordon (a roll, which holds it cordoned): an
    /// abandoned drain leaves it to the caller to lift.
    pub keep_cordon: bool,
    /// The node is down (`--node-down`): when it has not been Ready and its kubelet
    /// silent for at least this long, taint it out of service and let the control plane
    /// delete its pods, instead of evicting.
    pub node_down: Option<Duration>,
    /// Ctrl-C at the edge: the drain stops between evictions.
    pub interrupt: crate::interrupt::Interrupt,
}

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
    pods: Vec<(Pod, Verdict)>,
    guards: HashMap<PodKey, Guard>,
    /// Each pod's workload, by pod key, for pods that have one.
    workloads: HashMap<PodKey, Workload>,
    /// What the pre-flight plan expects: where replacements land, what fits nowhere,
    /// budgets at 0, eviction waves. Left out when a fleet plan made it already.
    pub forecast: Option<PlanReport>,
    /// Keeps the view watching the budgets the plan read, for the drain to use.
    _budgets: Vec<Arc<Watched<PodDisruptionBudget>>>,
    /// Down for good (see [`DrainOptions::node_down`]): its pods leave through the
    /// out-of-service taint.
    pub down: bool,
}

impl Plan {
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

/// Progress as it happens, for the output layer.
#[derive(Debug, Clone)]
pub enum Event {
    Cordoned {
        node: NodeName,
        before: NodeState,
        after: NodeState,
    },
    Evicting {
        pod: PodKey,
    },
    /// A budget holds the pod; repeated while it keeps holding, with how long so far.
    Blocked {
        pod: PodKey,
        blocked: Blocked,
        waited: Duration,
    },
    Gone {
        pod: PodKey,
    },
    /// A rollout restart brings this workload's replacement up first (`--surge`).
    Surged {
        workload: String,
    },
    /// The deadline passed and the ladder deleted this pod past its budget.
    DeletedPastBudget(Escalation),
    /// The node is down: tainted out of service, so the control plane deletes its pods.
    OutOfService {
        node: NodeName,
    },
    Replacement {
        replaces: PodKey,
        pod: PodKey,
        stage: Lifecycle,
        node: Option<String>,
    },
    /// An evicted pod stopped while its Services could still route to it.
    StoppedEarly(EarlyStop),
}

/// A pod that stopped within [`crate::endpoints::EARLY_STOP`] of its eviction while it
/// was a ready endpoint of `services`: requests sent to it until every kube-proxy had
/// dropped it failed. The fix is the pod's: a `preStop` hook, or serving on through
/// SIGTERM for a few seconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStop {
    pub pod: PodKey,
    pub after_seconds: f64,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    pub node: NodeName,
    pub pods: Vec<PodVerdict>,
    pub evicted: Vec<PodKey>,
    pub replacements: Vec<ReplacementStatus>,
    /// Each workload the drain touched, and whether it is back at its budget.
    pub workloads: Vec<WorkloadRecovery>,
    /// Pods deleted past their budgets after the deadline, and by which rule.
    pub deleted_past_budget: Vec<Escalation>,
    /// Evicted pods that stopped while their Services still routed to them.
    pub stopped_early: Vec<EarlyStop>,
    pub elapsed_seconds: f64,
    pub dry_run: bool,
}

/// A workload the drain touched, and the pods that serve it now.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRecovery {
    pub workload: WorkloadId,
    #[serde(flatten)]
    pub recovery: Recovery,
}

impl WorkloadRecovery {
    pub fn is_short(&self) -> bool {
        matches!(self.recovery, Recovery::Short { .. })
    }
}

/// Pods still on the node when the drain stopped, with the budget that held each.
#[derive(Debug, Clone, Serialize)]
pub struct Remaining {
    pub pod: PodKey,
    pub blocked_by: Option<Blocked>,
    /// Not Ready: it serves nothing and a budget holds it only because the budget is
    /// short already (`--delete-unhealthy-past-budget` allows it after the deadline).
    pub unhealthy: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(
        "node {node} is {state}: its kubelet would not confirm pods leaving; fix the node first (kordon refuses to drain a node that is not Ready)"
    )]
    NotReady { node: NodeName, state: NodeState },
    #[error(
        "node {node} is {state}, but its kubelet reported {} ago, less than the {} it must be silent to count as down: it may still run its pods; nothing was changed", humantime::format_duration(*.silent), humantime::format_duration(*.after)
    )]
    NotDownLongEnough {
        node: NodeName,
        state: NodeState,
        silent: Duration,
        after: Duration,
    },
    #[error(
        "node {node} is Ready: only a node that is down is drained as down; nothing was changed"
    )]
    NotDown { node: NodeName },
    #[error("cannot drain node {node}: {} pod(s) need a decision ({}); nothing was changed", .pods.len(), explain(.pods))]
    Refused {
        node: NodeName,
        pods: Vec<(PodKey, Vec<Refusal>)>,
    },
    #[error("cannot drain node {node}: no other node can take the replacement of {}; they would stay Pending and their workloads lose availability. Nothing was changed: free capacity (or uncordon a node) first", .pods.join("; "))]
    WouldStrand { node: NodeName, pods: Vec<String> },
    #[error("drain of node {node} timed out after {} with {} pod(s) left: {}; the node stays cordoned", humantime::format_duration(*.timeout), .remaining.len(), describe(.remaining))]
    TimedOut {
        node: NodeName,
        timeout: Duration,
        remaining: Vec<Remaining>,
    },
    #[error("drain of node {node} abandoned at its {} deadline with {} pod(s) still held by their budgets: {}; nothing was deleted past a budget, and the node {}", humantime::format_duration(*.deadline), .remaining.len(), describe(.remaining), if *.uncordoned { "is uncordoned again" } else { "stays cordoned (kordon did not cordon it here)" })]
    Abandoned {
        node: NodeName,
        deadline: Duration,
        remaining: Vec<Remaining>,
        uncordoned: bool,
    },
    #[error("node {node} is drained, but {} later {} still below its budget: {}; the node stays cordoned", humantime::format_duration(*.waited), if .short.len() == 1 { "this workload is" } else { "these workloads are" }, short_of(.short))]
    NotRecovered {
        node: NodeName,
        waited: Duration,
        short: Vec<WorkloadRecovery>,
    },
    #[error("invalid delete-past-budget rule {rule}: {message}")]
    InvalidRule { rule: String, message: String },
    #[error("interrupted: stopped issuing evictions with {} pod(s) left on node {node}, which stays cordoned", .remaining.len())]
    Interrupted {
        node: NodeName,
        remaining: Vec<Remaining>,
    },
    #[error("interrupted before node {node} was drained: none of its pods was evicted")]
    InterruptedBefore { node: NodeName },
    #[error("invalid pod selector \"{selector}\": {message}")]
    InvalidPodSelector { selector: String, message: String },
    #[error(transparent)]
    Evict(#[from] EvictError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl DrainError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::Refused { .. } | Self::WouldStrand { .. } => Exit::Refused,
            Self::TimedOut { .. } | Self::NotRecovered { .. } => Exit::TimedOut,
            Self::Abandoned { .. } => Exit::Abandoned,
            Self::Interrupted { .. } | Self::InterruptedBefore { .. } => Exit::Interrupted,
            Self::InvalidRule { .. } | Self::InvalidPodSelector { .. } => Exit::Usage,
            Self::Cluster(ClusterError::InvalidSelector { .. }) => Exit::Usage,
            _ => Exit::Failed,
        }
    }

    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::NotReady { .. } => vec![Advice::Give(
                Flag::NodeDown,
                "move its workloads through Kubernetes' non-graceful shutdown (the out-of-service taint) if it is down for good",
            )],
            Self::NotDown { .. } => vec![Advice::Omit(Flag::NodeDown)],
            Self::Refused { pods, .. } => vec![crate::advice::decide(pods)],
            Self::WouldStrand { .. } => vec![Advice::Give(Flag::AllowPending, "drain anyway")],
            Self::Cluster(e) | Self::Evict(EvictError::Cluster(e)) => e.advice(),
            _ => Vec::new(),
        }
    }
}

/// "default/a has no controller, so nothing would recreate it".
fn explain(pods: &[(PodKey, Vec<Refusal>)]) -> String {
    pods.iter()
        .map(|(pod, reasons)| {
            let why: Vec<String> = reasons.iter().map(Refusal::explain).collect();
            format!("{pod} {}", why.join(" and "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "Deployment shop/web (2 Ready, needs 3)".
fn short_of(short: &[WorkloadRecovery]) -> String {
    short
        .iter()
        .map(|w| match &w.recovery {
            Recovery::Short {
                serving,
                needs,
                budget,
            } => {
                let by = budget
                    .as_ref()
                    .map(|b| format!(" by PodDisruptionBudget {b}"))
                    .unwrap_or_default();
                format!(
                    "{} ({} Ready, needs {needs}{by})",
                    w.workload,
                    serving.len()
                )
            }
            _ => w.workload.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(remaining: &[Remaining]) -> String {
    remaining
        .iter()
        .map(|r| {
            let unhealthy = if r.unhealthy { "not Ready, " } else { "" };
            match &r.blocked_by {
                Some(b) => format!("{} ({unhealthy}held by {})", r.pod, b.detail),
                None if r.unhealthy => format!("{} (not Ready)", r.pod),
                None => r.pod.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the node and classifies its pods. Changes nothing. With
/// [`Reach::Placement`] it also forecasts where the replacements land, which reads
/// every node's usage.
pub async fn plan(
    ctx: &Context,
    node: &NodeName,
    opts: &DrainOptions,
    reach: Reach,
) -> Result<Plan, DrainError> {
    // One scoped read serves the node's state, its pods, the guards and the forecast.
    let mut snapshot = Snapshot::live(&ctx.view, std::slice::from_ref(node), reach).await?;
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
    let workloads = pods
        .iter()
        .filter_map(|(p, _)| Some((PodKey::of(p), snapshot.workload_of(p)?)))
        .collect();
    let forecast = match reach {
        Reach::Targets => None,
        Reach::Placement => Some(
            crate::plan::plan(
                &snapshot,
                std::slice::from_ref(node),
                PlanOptions {
                    permissions: opts.permissions,
                    guards: opts.guards,
                },
            )
            .map_err(|_| ClusterError::NodeNotFound(node.clone()))?,
        ),
    };
    Ok(Plan {
        node: node.clone(),
        state,
        cordoned_by_someone_else,
        pods,
        guards,
        workloads,
        forecast,
        _budgets: std::mem::take(&mut snapshot.budget_watches),
        down,
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

/// Cordons the node and empties it. The plan must have no refused pods.
pub async fn execute(
    ctx: &Context,
    plan: Plan,
    opts: &DrainOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<DrainReport, DrainError> {
    let started = Instant::now();
    if let Some(refusal) = plan.refusal(opts.allow_pending) {
        return Err(refusal);
    }
    let verdicts = plan.verdicts();
    let dry_run = opts.dry_run != DryRun::None;
    let conn = &ctx.conn;
    ctx.require(
        &format!("drain node {}", plan.node),
        &needed_permissions(&plan, opts),
    )
    .await?;
    // Resolved before anything changes, so a bad rule changes nothing.
    let named = match opts.ladder.deadline {
        Some(_) => escalate::named_pods(ctx, &plan.node, &opts.ladder.delete).await?,
        None => HashMap::new(),
    };
    // Whether an abandoned drain lifts the cordon: kordon cordoned the node (now, or
    // in an earlier run), and no caller holds it cordoned.
    let lift_on_abandon = !opts.keep_cordon && !plan.cordoned_by_someone_else;
    if opts.dry_run == DryRun::Client {
        return Ok(DrainReport {
            node: plan.node,
            pods: verdicts,
            evicted: Vec::new(),
            replacements: Vec::new(),
            workloads: Vec::new(),
            deleted_past_budget: Vec::new(),
            stopped_early: Vec::new(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            dry_run,
        });
    }

    // Interrupted before this node (a drain of several): it is left untouched.
    if opts.interrupt.is_requested() {
        return Err(DrainError::InterruptedBefore { node: plan.node });
    }
    opts.interrupt.arm();
    if !plan.state.cordoned {
        let after = nodes::set_unschedulable(conn, &plan.node, true, opts.dry_run).await?;
        on_event(Event::Cordoned {
            node: plan.node.clone(),
            before: plan.state,
            after: NodeState::of(&after),
        });
    }
    if plan.down && !dry_run {
        nodes::set_out_of_service(conn, &plan.node, true).await?;
        on_event(Event::OutOfService {
            node: plan.node.clone(),
        });
    }

    let request = evict::Request {
        grace_period: opts.grace_period,
        bypass_budgets: opts.disable_eviction,
        server_dry_run: opts.dry_run == DryRun::Server,
    };
    let to_evict: Vec<&Pod> = plan
        .pods
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
        .map(|(p, _)| p)
        .collect();
    let to_await: Vec<&Pod> = plan
        .pods
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::AwaitTermination))
        .map(|(p, _)| p)
        .collect();

    if dry_run {
        for p in &to_evict {
            evict::evict(conn, p, request).await?;
        }
        return Ok(DrainReport {
            node: plan.node,
            pods: verdicts,
            evicted: to_evict.iter().map(|p| PodKey::of(p)).collect(),
            replacements: Vec::new(),
            workloads: Vec::new(),
            deleted_past_budget: Vec::new(),
            stopped_early: Vec::new(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            dry_run,
        });
    }

    let involved: Vec<&Workload> = {
        let mut seen = HashSet::new();
        to_evict
            .iter()
            .filter_map(|p| plan.workloads.get(&PodKey::of(p)))
            .filter(|w| seen.insert(&w.id))
            .collect()
    };
    let evicted_from = namespaces(&to_evict);
    let exposed = routable(ctx, &evicted_from).await?;
    let watch =
        tracker::Watches::start(&ctx.view, &plan.node, &involved, &evicted_from, &exposed).await?;
    let progress = Progress::default();
    let recoveries = |watch: &tracker::Watches<'_>| -> Vec<WorkloadRecovery> {
        involved
            .iter()
            .map(|w| WorkloadRecovery {
                workload: w.id.clone(),
                recovery: watch.recovery(w, &plan.node),
            })
            .collect()
    };
    let replacements = tracker::Replacements::new(&plan.node, &to_evict, |p| {
        plan.workloads.get(&PodKey::of(p)).map(|w| w.id.clone())
    });
    let shared = if opts.shared_budgets && !dry_run && !opts.disable_eviction && !plan.down {
        Some(share_budgets(ctx, &plan, &to_evict, &watch).await?)
    } else {
        None
    };
    let engine = engine::Engine::new(
        ctx,
        request,
        &watch,
        &progress,
        on_event,
        opts,
        shared
            .as_ref()
            .map(|s| s.budgets.clone())
            .unwrap_or_default(),
    );
    // Pods terminating already are only waited for (no guard), and so are all on a node
    // that is down: the control plane deletes them.
    let work = async {
        let pods = to_evict
            .iter()
            .map(|p| {
                let guard = plan.guards.get(&PodKey::of(p)).unwrap_or(&Guard::Api);
                (p, (!plan.down).then_some(guard))
            })
            .chain(to_await.iter().map(|p| (p, None)));
        futures::future::join_all(pods.map(|(p, guard)| {
            let workload = plan.workloads.get(&PodKey::of(p)).map(|w| &w.id);
            engine.drain_pod(p, guard, workload)
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
    };
    let work = async {
        let tracking = replacements.follow(&watch, on_event);
        tokio::pin!(tracking);
        tokio::select! {
            r = work => r,
            _ = &mut tracking => unreachable!("follow runs until cancelled"),
        }
    };

    let remaining = |progress: &Progress| -> Vec<Remaining> {
        let gone = progress.gone.lock().map(|g| g.clone()).unwrap_or_default();
        let blocks = progress
            .blocks
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        to_evict
            .iter()
            .chain(&to_await)
            .map(|p| Remaining {
                blocked_by: blocks
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == PodKey::of(p))
                    .map(|(_, b)| b.clone()),
                unhealthy: watch.current(p).is_some_and(|live| !pod::is_ready(&live)),
                pod: PodKey::of(p),
            })
            .filter(|r| !gone.contains(&r.pod))
            .collect()
    };

    // The ladder: from the deadline on, what still blocks is handled by policy. Runs
    // until the drain ends, unless it abandons the drain.
    let escalation = async {
        let Some(deadline) = opts.ladder.deadline else {
            return futures::future::pending().await;
        };
        tokio::time::sleep_until((started + deadline).into()).await;
        loop {
            let mut changes = watch.subscribe();
            match opts
                .ladder
                .decide(blockers(ctx, &to_evict, &watch, &progress, &named))
            {
                ladder::Decision::Abandon(held) => return Ok::<_, DrainError>(held),
                ladder::Decision::Delete(allowed) => {
                    for (b, allowance) in allowed {
                        let Some(p) = to_evict.iter().find(|p| PodKey::of(p) == b.pod) else {
                            continue;
                        };
                        let so_far = progress
                            .escalations
                            .lock()
                            .map(|e| e.clone())
                            .unwrap_or_default();
                        let deleted = escalate::delete_past_budget(
                            ctx,
                            &plan.node,
                            p,
                            allowance,
                            b.held,
                            opts.grace_period,
                            &so_far,
                        )
                        .await?;
                        if let Some(e) = deleted {
                            if let (Ok(mut evicted), Some(uid)) =
                                (ctx.turns.evicted.lock(), Uid::of(p))
                            {
                                evicted.insert(uid);
                            }
                            if let Ok(mut all) = progress.escalations.lock() {
                                all.push(e.clone());
                            }
                            on_event(Event::DeletedPastBudget(e));
                        }
                    }
                }
                ladder::Decision::Wait => {}
            }
            let _ = tokio::time::timeout(engine::RECHECK, changes.changed()).await;
        }
    };

    let deadline = async {
        match opts.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => futures::future::pending().await,
        }
    };
    let outcome = async {
        tokio::select! {
            result = work => { result?; }
            _ = deadline => {
                return Err(DrainError::TimedOut {
                    node: plan.node.clone(),
                    timeout: opts.timeout.unwrap_or_default(),
                    remaining: remaining(&progress),
                });
            }
            held = escalation => {
                return Err(DrainError::Abandoned {
                    node: plan.node.clone(),
                    deadline: opts.ladder.deadline.unwrap_or_default(),
                    remaining: held?
                        .into_iter()
                        .map(|b| Remaining {
                            pod: b.pod,
                            blocked_by: Some(b.held),
                            unhealthy: !b.ready,
                        })
                        .collect(),
                    uncordoned: false,
                });
            }
            _ = opts.interrupt.requested() => {
                return Err(DrainError::Interrupted { node: plan.node.clone(), remaining: remaining(&progress) });
            }
        }

        // The pods are gone; each workload they belonged to is waited for until it is
        // back at its budget, whichever pods provide it: until the timeout, or without
        // one as long as it takes (as `--timeout 0` says). With `--allow-pending` the user
        // accepted replacements that may never run, so a minute at most.
        let settle = match opts.timeout {
            Some(t) => t.saturating_sub(started.elapsed()),
            None if opts.allow_pending => Duration::from_secs(60),
            None => Duration::MAX,
        };
        let waited = Instant::now();
        let back = async {
            loop {
                let mut changes = watch.subscribe();
                if !recoveries(&watch).iter().any(WorkloadRecovery::is_short) {
                    return;
                }
                watch.changed(&mut changes, engine::RECHECK).await;
            }
        };
        let tracking = replacements.follow(&watch, on_event);
        tokio::select! {
            _ = tokio::time::timeout(settle, back) => {}
            _ = tracking => unreachable!("follow runs until cancelled"),
            _ = opts.interrupt.requested() => {
                return Err(DrainError::Interrupted { node: plan.node.clone(), remaining: Vec::new() });
            }
        }
        let short: Vec<WorkloadRecovery> = recoveries(&watch)
            .into_iter()
            .filter(WorkloadRecovery::is_short)
            .collect();
        // With --allow-pending the user accepted replacements that stay Pending.
        if short.is_empty() || opts.allow_pending {
            return Ok(());
        }
        Err(DrainError::NotRecovered {
            node: plan.node.clone(),
            waited: waited.elapsed(),
            short,
        })
    }
    .await;
    if let Some(shared) = shared {
        shared.release().await;
    }
    if let Err(DrainError::Abandoned {
        node,
        deadline,
        remaining,
        ..
    }) = outcome
    {
        let uncordoned = lift_on_abandon
            && match nodes::set_unschedulable(conn, &node, false, DryRun::None).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("cannot uncordon abandoned node {node}: {e}");
                    false
                }
            };
        return Err(DrainError::Abandoned {
            node,
            deadline,
            remaining,
            uncordoned,
        });
    }
    outcome?;

    // One last look, so the report shows the replacements as the recoveries saw them.
    replacements.look(&watch, on_event);
    let workloads = recoveries(&watch);
    Ok(DrainReport {
        node: plan.node,
        pods: verdicts,
        // Gone pods that this drain evicted (not those that were leaving already).
        evicted: progress
            .gone
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|k| to_evict.iter().any(|p| PodKey::of(p) == *k))
            .collect(),
        replacements: replacements.statuses(),
        workloads,
        deleted_past_budget: progress
            .escalations
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default(),
        stopped_early: progress
            .stopped_early
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        dry_run,
    })
}

/// Makes the implicit budgets of the workloads being drained real (see [`shared`]) and
/// waits until the disruption controller has counted each, so that the first
/// evictions are not turned away by a budget it has not seen yet.
async fn share_budgets(
    ctx: &Context,
    plan: &Plan,
    to_evict: &[&Pod],
    watch: &tracker::Watches<'_>,
) -> Result<shared::SharedBudgets, DrainError> {
    let mut seen = HashSet::new();
    let uncovered: Vec<shared::Uncovered> = to_evict
        .iter()
        .filter_map(|p| match plan.guards.get(&PodKey::of(p)) {
            Some(Guard::Implicit(w)) => Some(shared::Uncovered {
                workload: w,
                pod: p,
            }),
            _ => None,
        })
        .filter(|u| seen.insert(u.workload.id.clone()))
        .collect();
    let held = shared::SharedBudgets::hold(&ctx.conn, &ctx.run, &plan.node, &uncovered, |ns| {
        watch.budgets_in(ns)
    })
    .await?;
    let counted = async {
        loop {
            let mut changes = watch.subscribe();
            if held.budgets.iter().all(|b| watch.budget_counted(b)) {
                return;
            }
            let _ = changes.changed().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), counted)
        .await
        .is_err()
    {
        tracing::warn!(
            "the disruption controller has not counted kordon's shared budgets within 30 s; evictions may be turned away until it does"
        );
    }
    Ok(held)
}

/// Cordoning, watching pods and budgets, evicting (or deleting) pods in each
/// namespace the plan touches, and restarting Deployments for `--surge`.
fn needed_permissions(plan: &Plan, opts: &DrainOptions) -> Vec<Permission> {
    let mut wanted = vec![
        Permission::cluster("patch", "", "nodes"),
        Permission::cluster("watch", "", "pods"),
    ];
    let evicted: Vec<&Pod> = plan
        .pods
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Evict(_)))
        .map(|(p, _)| p)
        .collect();
    for ns in namespaces(&evicted) {
        wanted.push(Permission::namespaced(
            "watch",
            "policy",
            "poddisruptionbudgets",
            None,
            &ns,
        ));
        wanted.push(if opts.disable_eviction {
            Permission::namespaced("delete", "", "pods", None, &ns)
        } else {
            Permission::namespaced("create", "", "pods", Some("eviction"), &ns)
        });
        // The ladder may delete pods past their budgets here.
        let ladder = &opts.ladder;
        if ladder.engaged() && !opts.disable_eviction {
            let named = ladder
                .delete
                .iter()
                .any(|r| r.namespace.as_deref().is_none_or(|n| n == ns));
            if named || ladder.unhealthy {
                wanted.push(Permission::namespaced("delete", "", "pods", None, &ns));
            }
        }
    }
    for guard in plan.guards.values() {
        if let Guard::Implicit(w) = guard
            && opts.shared_budgets
            && !opts.disable_eviction
        {
            let ns = &w.id.namespace;
            for verb in ["create", "patch"] {
                wanted.push(Permission::namespaced(
                    verb,
                    "policy",
                    "poddisruptionbudgets",
                    None,
                    ns,
                ));
            }
            for verb in ["create", "list", "patch", "delete"] {
                wanted.push(Permission::namespaced(
                    verb,
                    "coordination.k8s.io",
                    "leases",
                    None,
                    ns,
                ));
            }
        }
        if let Guard::Surge(w) = guard {
            wanted.push(Permission::namespaced(
                "patch",
                "apps",
                "deployments",
                None,
                &w.id.namespace,
            ));
        }
    }
    wanted
}

/// The namespaces among `namespaces` whose Services and EndpointSlices kordon may
/// watch. Without those rights a replacement counts once Ready, as kubectl's does:
/// said once, not refused.
async fn routable(ctx: &Context, namespaces: &[String]) -> Result<Vec<String>, DrainError> {
    let wanted = |ns: &String| {
        [("", "services"), ("discovery.k8s.io", "endpointslices")]
            .into_iter()
            .flat_map(|(group, resource)| {
                ["list", "watch"]
                    .map(|verb| Permission::namespaced(verb, group, resource, None, ns))
            })
            .collect::<Vec<_>>()
    };
    let all: Vec<Permission> = namespaces.iter().flat_map(wanted).collect();
    let missing = ctx.missing(&all).await?;
    if !missing.is_empty() {
        let rights: Vec<String> = missing.iter().map(Permission::describe).collect();
        tracing::warn!(
            "missing {}: replacements there count once Ready, not once their Services reach them",
            rights.join(", ")
        );
    }
    Ok(namespaces
        .iter()
        .filter(|ns| !missing.iter().any(|p| p.namespace.as_ref() == Some(*ns)))
        .cloned()
        .collect())
}

/// The namespaces of the pods, each once.
fn namespaces(pods: &[&Pod]) -> Vec<String> {
    let mut namespaces: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// What has happened so far, kept outside the futures so that a timeout or Ctrl-C can
/// still report it.
#[derive(Default)]
struct Progress {
    gone: Mutex<Vec<PodKey>>,
    stopped_early: Mutex<Vec<EarlyStop>>,
    blocks: Mutex<Vec<(PodKey, Blocked)>>,
    escalations: Mutex<Vec<Escalation>>,
}

/// The pods a budget holds now: held at least once, still on the node, and not leaving.
fn blockers(
    ctx: &Context,
    to_evict: &[&Pod],
    watch: &tracker::Watches<'_>,
    progress: &Progress,
    named: &HashMap<Uid, ladder::DeleteRule>,
) -> Vec<ladder::Blocker> {
    let blocks = progress
        .blocks
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    let evicted = ctx
        .turns
        .evicted
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    to_evict
        .iter()
        .filter_map(|p| {
            let live = watch.current(p)?;
            let uid = Uid::of(p)?;
            if live.metadata.deletion_timestamp.is_some() || evicted.contains(&uid) {
                return None;
            }
            let key = PodKey::of(p);
            let (_, held) = blocks.iter().rev().find(|(k, _)| *k == key)?;
            Some(ladder::Blocker {
                ready: pod::is_ready(&live),
                held: held.clone(),
                named_by: named.get(&uid).cloned(),
                pod: key,
            })
        })
        .collect()
}
