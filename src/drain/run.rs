//! Carrying a plan out: cordon, evict under the guards, follow replacements and
//! workloads, the deadline's ladder, the timeout, and the report.
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::access::{namespaces, needed_permissions, routable};
use super::{
    Deregistration, DrainError, DrainOptions, DrainReport, EarlyStop, Escalation, Event, Plan,
    Remaining, WorkloadRecovery, engine, escalate, ladder, shared, tracker,
};
use crate::classify::Verdict;
use crate::cluster::nodes::{self, DryRun};
use crate::context::Context;
use crate::evict::{self, Blocked};
use crate::exclusion::{self, Exclusion};
use crate::node_state::NodeState;
use crate::plan::guards::Guard;
use crate::pod::{self, PodKey, Uid};
use crate::tiers::PodType;
use crate::workload::Workload;

/// Cordons the node and empties it. The plan must have no refused pods.
pub async fn execute(
    ctx: &Context,
    plan: Plan,
    opts: &DrainOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<DrainReport, DrainError> {
    let started = Instant::now();
    let named = enter(ctx, &plan, opts).await?;
    let unchanged = |evicted: Vec<PodKey>| DrainReport {
        node: plan.node.clone(),
        pods: plan.verdicts(),
        tiers: plan.tiers.clone(),
        evicted,
        replacements: Vec::new(),
        workloads: Vec::new(),
        deleted_past_budget: Vec::new(),
        stopped_early: Vec::new(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        dry_run: opts.dry_run != DryRun::None,
    };
    if opts.dry_run == DryRun::Client {
        return Ok(unchanged(Vec::new()));
    }
    // Interrupted before this node (a drain of several): it is left untouched.
    if opts.interrupt.is_requested() {
        return Err(DrainError::InterruptedBefore { node: plan.node });
    }
    opts.interrupt.arm();
    take_out(ctx, &plan, opts, on_event).await?;
    let to_evict = plan.pods_to(|v| matches!(v, Verdict::Evict(_)));
    let to_await = plan.pods_to(|v| matches!(v, Verdict::AwaitTermination));
    if opts.dry_run == DryRun::Server {
        for p in &to_evict {
            evict::evict(&ctx.conn, p, request(opts)).await?;
        }
        return Ok(unchanged(to_evict.iter().map(|p| PodKey::of(p)).collect()));
    }

    let mut run = Run::start(ctx, &plan, opts, on_event, to_evict, to_await).await?;
    let outcome = run.until_done(&named, started).await;
    if let Some(shared) = run.shared.take() {
        shared.release().await;
    }
    // An abandoned drain leaves the cordon: whose it is, and whether it goes, is the
    // driver's to say (`workflow::driver`).
    outcome.map(|()| run.report(started))
}

/// Before anything changes: the plan refuses nothing, the rights are there, and the
/// ladder's rules name the pods they name (a bad rule changes nothing).
async fn enter(
    ctx: &Context,
    plan: &Plan,
    opts: &DrainOptions,
) -> Result<HashMap<Uid, ladder::DeleteRule>, DrainError> {
    if let Some(refusal) = plan.refusal(opts.allow_pending) {
        return Err(refusal);
    }
    ctx.require(
        &format!("drain node {}", plan.node),
        &needed_permissions(plan, opts),
    )
    .await?;
    Ok(match opts.ladder.deadline {
        Some(_) => escalate::named_pods(ctx, &plan.node, &opts.ladder.delete).await?,
        None => HashMap::new(),
    })
}

/// Cordons the node (unless it is), with the fence and the load-balancer exclusion
/// when asked, taints a node that is down out of service, and gives load balancers
/// their deregistration delay.
async fn take_out(
    ctx: &Context,
    plan: &Plan,
    opts: &DrainOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(), DrainError> {
    let mut fence = match opts.fence {
        true => crate::fence::raise(&plan.annotations),
        false => nodes::Annotations::new(),
    };
    let now = jiff::Timestamp::now();
    if opts.load_balancers.is_some() {
        fence.extend(exclusion::exclude(plan.excluded, now));
    }
    if !plan.state.cordoned {
        let after =
            nodes::set_unschedulable_with(&ctx.conn, &plan.node, true, &fence, opts.dry_run)
                .await?;
        on_event(Event::Cordoned {
            node: plan.node.clone(),
            before: plan.state,
            after: NodeState::of(&after),
        });
    } else if !fence.is_empty() {
        // Cordoned already (a roll's, the controller's, someone else's): the fence and
        // the exclusion go up on their own.
        nodes::patch(&ctx.conn, &plan.node, None, &fence, opts.dry_run).await?;
    }
    if plan.down && opts.dry_run == DryRun::None {
        nodes::set_out_of_service(&ctx.conn, &plan.node, true).await?;
        on_event(Event::OutOfService {
            node: plan.node.clone(),
        });
    }
    // Before any DaemonSet pod is evicted, so that none is recreated here.
    let daemons = plan
        .tiers
        .iter()
        .any(|t| t.rank.pod_type == PodType::DaemonSet);
    if daemons && opts.dry_run == DryRun::None {
        nodes::set_draining(&ctx.conn, &plan.node, true, None).await?;
        on_event(Event::Tainted {
            node: plan.node.clone(),
        });
    }
    if let Some(delay) = opts.load_balancers {
        let excluded = match plan.excluded {
            Exclusion::Included => Exclusion::Ours { since: now },
            before => before,
        };
        deregister(ctx, plan, opts, excluded.left_to_wait(delay, now), on_event).await?;
    }
    Ok(())
}

/// Waits what is left of the load balancers' deregistration delay, when a Service of
/// type LoadBalancer is there to have the node in it; Ctrl-C ends the wait.
async fn deregister(
    ctx: &Context,
    plan: &Plan,
    opts: &DrainOptions,
    left: Duration,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(), DrainError> {
    let deregistration = if plan.excluded == Exclusion::Theirs {
        Deregistration::ExcludedBefore
    } else if left.is_zero() || opts.dry_run != DryRun::None {
        Deregistration::Waiting(Duration::ZERO)
    } else if !ctx.view.any_load_balancer().await? {
        Deregistration::NoLoadBalancers
    } else {
        Deregistration::Waiting(left)
    };
    on_event(Event::ExcludedFromLoadBalancers {
        node: plan.node.clone(),
        deregistration,
    });
    if let Deregistration::Waiting(wait) = deregistration {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = opts.interrupt.requested() => {}
        }
    }
    Ok(())
}

fn request(opts: &DrainOptions) -> evict::Request {
    evict::Request {
        grace_period: opts.grace_period,
        bypass_budgets: opts.disable_eviction,
        server_dry_run: opts.dry_run == DryRun::Server,
    }
}

/// A drain under way: what it watches, what it holds, and how far it got.
struct Run<'a> {
    ctx: &'a Context,
    plan: &'a Plan,
    opts: &'a DrainOptions,
    on_event: &'a (dyn Fn(Event) + Sync),
    to_evict: Vec<&'a Pod>,
    /// Pods terminating already: only waited for.
    to_await: Vec<&'a Pod>,
    /// The workloads of the pods to evict, each once.
    involved: Vec<&'a Workload>,
    watch: tracker::Watches,
    progress: Progress,
    replacements: tracker::Replacements,
    shared: Option<shared::SharedBudgets>,
}

impl<'a> Run<'a> {
    /// Starts the watches and, unless told otherwise, shares the implicit budgets.
    async fn start(
        ctx: &'a Context,
        plan: &'a Plan,
        opts: &'a DrainOptions,
        on_event: &'a (dyn Fn(Event) + Sync),
        to_evict: Vec<&'a Pod>,
        to_await: Vec<&'a Pod>,
    ) -> Result<Self, DrainError> {
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
            tracker::Watches::start(&ctx.view, &plan.node, &involved, &evicted_from, &exposed)
                .await?;
        let replacements = tracker::Replacements::new(&plan.node, &to_evict, |p| {
            plan.workloads.get(&PodKey::of(p)).map(|w| w.id.clone())
        });
        let shared = match opts.shared_budgets {
            Some(lease) if !opts.disable_eviction && !plan.down => {
                Some(share_budgets(ctx, plan, &to_evict, &watch, lease).await?)
            }
            _ => None,
        };
        Ok(Self {
            ctx,
            plan,
            opts,
            on_event,
            to_evict,
            to_await,
            involved,
            watch,
            progress: Progress::default(),
            replacements,
            shared,
        })
    }

    /// Until every pod is gone and every workload back, or the timeout, the ladder or an
    /// interrupt ends it.
    async fn until_done(
        &self,
        named: &HashMap<Uid, ladder::DeleteRule>,
        started: Instant,
    ) -> Result<(), DrainError> {
        let opts = self.opts;
        let node = || self.plan.node.clone();
        let timeout = async {
            match opts.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            result = self.evict_all() => result?,
            _ = timeout => {
                return Err(DrainError::TimedOut {
                    node: node(),
                    timeout: opts.timeout.unwrap_or_default(),
                    remaining: self.remaining(),
                });
            }
            held = self.escalation(named, started) => {
                return Err(DrainError::Abandoned {
                    node: node(),
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
                return Err(DrainError::Interrupted { node: node(), remaining: self.remaining() });
            }
        }
        self.settle(started).await
    }

    /// Every pod gone: tier by tier ([`crate::tiers`]), each pod under its guard; those
    /// terminating already (and all on a node that is down: the control plane deletes
    /// them) only waited for, from the start; while the replacements are followed.
    async fn evict_all(&self) -> Result<(), DrainError> {
        let engine = engine::Engine::new(
            self.ctx,
            request(self.opts),
            &self.watch,
            &self.progress,
            self.on_event,
            self.opts,
            self.shared
                .as_ref()
                .map(|s| s.budgets.clone())
                .unwrap_or_default(),
        );
        let plan = self.plan;
        let all = |pods: Vec<&'a Pod>, evicted: bool| {
            futures::future::join_all(pods.into_iter().map(|p| {
                let key = PodKey::of(p);
                let guard = plan.guards.get(&key).unwrap_or(&Guard::Api);
                let workload = plan.workloads.get(&key).map(|w| &w.id);
                engine.drain_pod(p, (evicted && !plan.down).then_some(guard), workload)
            }))
        };
        let gone = |results: Vec<Result<(), DrainError>>| -> Result<(), DrainError> {
            results.into_iter().collect()
        };
        let tiers = async {
            let count = plan.tiers.len();
            for (i, tier) in plan.tiers.iter().enumerate() {
                let pods: Vec<&Pod> = self
                    .to_evict
                    .iter()
                    .copied()
                    .filter(|p| tier.pods.contains(&PodKey::of(p)))
                    .collect();
                (self.on_event)(Event::Tier {
                    number: i + 1,
                    of: count,
                    tier: tier.clone(),
                });
                gone(all(pods, true).await)?;
            }
            Ok(())
        };
        let work = async {
            let (awaited, tiers) = futures::join!(all(self.to_await.clone(), false), tiers);
            gone(awaited).and(tiers)
        };
        let tracking = self.replacements.follow(&self.watch, self.on_event);
        tokio::select! {
            result = work => result,
            _ = tracking => unreachable!("follow runs until cancelled"),
        }
    }

    /// The ladder: from the first moment it engages for a pod (its deadline less the
    /// pod's grace), what still blocks is handled by policy. Runs until the drain ends,
    /// unless it abandons the drain (with what held it).
    async fn escalation(
        &self,
        named: &HashMap<Uid, ladder::DeleteRule>,
        started: Instant,
    ) -> Result<Vec<ladder::Blocker>, DrainError> {
        let ladder = &self.opts.ladder;
        let graces: Vec<Duration> = self
            .to_evict
            .iter()
            .map(|p| ladder::grace_of(p, self.opts.grace_period))
            .collect();
        let Some(first) = ladder.next_engagement(graces.iter().copied(), Duration::ZERO) else {
            return futures::future::pending().await;
        };
        // The deadline as a time of day, for the audit trail.
        let deadline = ladder.deadline.unwrap_or_default();
        let deadline_at = jiff::Timestamp::now()
            .checked_sub(started.elapsed())
            .and_then(|t| t.checked_add(deadline))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        tokio::time::sleep_until((started + first).into()).await;
        loop {
            let mut changes = self.watch.subscribe();
            let elapsed = started.elapsed();
            let blockers = blockers(
                self.ctx,
                self.opts,
                &self.to_evict,
                &self.watch,
                &self.progress,
                named,
            );
            match ladder.decide(blockers, elapsed) {
                ladder::Decision::Abandon(held) => return Ok(held),
                ladder::Decision::Delete(allowed) => {
                    for (b, allowance) in allowed {
                        self.delete_past_budget(b, allowance, deadline_at).await?;
                    }
                }
                ladder::Decision::Wait => {}
            }
            // Looks again on a change, at the next pod's moment, or after a while.
            let wake = ladder
                .next_engagement(graces.iter().copied(), elapsed)
                .map_or(engine::RECHECK, |at| at.saturating_sub(started.elapsed()));
            let _ = tokio::time::timeout(wake.min(engine::RECHECK), changes.changed()).await;
        }
    }

    /// Deletes one held pod past its budget, as a rule allows, and records it.
    async fn delete_past_budget(
        &self,
        b: ladder::Blocker,
        allowance: ladder::Allowance,
        deadline: jiff::Timestamp,
    ) -> Result<(), DrainError> {
        let Some(p) = self.to_evict.iter().find(|p| PodKey::of(p) == b.pod) else {
            return Ok(());
        };
        let so_far = self
            .progress
            .escalations
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let deletion = escalate::Deletion {
            target: p,
            allowed_by: allowance,
            blocked_by: b.held,
            grace_period: self.opts.grace_period,
            grace: b.grace,
            deadline,
        };
        let deleted =
            escalate::delete_past_budget(self.ctx, &self.plan.node, deletion, &so_far).await?;
        if let Some(e) = deleted {
            self.ctx.turns.mark_evicted(p);
            if let Ok(mut all) = self.progress.escalations.lock() {
                all.push(e.clone());
            }
            (self.on_event)(Event::DeletedPastBudget(e));
        }
        Ok(())
    }

    /// The pods are gone; each workload they belonged to is waited for until it is back
    /// at its budget, whichever pods provide it: until the timeout, or without one as
    /// long as it takes (as `--timeout 0` says). With `--allow-pending` the user accepted
    /// replacements that may never run, so a minute at most.
    async fn settle(&self, started: Instant) -> Result<(), DrainError> {
        let opts = self.opts;
        let settle = match opts.timeout {
            Some(t) => t.saturating_sub(started.elapsed()),
            None if opts.allow_pending => Duration::from_secs(60),
            None => Duration::MAX,
        };
        let waited = Instant::now();
        let back = async {
            loop {
                let mut changes = self.watch.subscribe();
                if !self.recoveries().iter().any(WorkloadRecovery::is_short) {
                    return;
                }
                self.watch.changed(&mut changes, engine::RECHECK).await;
            }
        };
        let tracking = self.replacements.follow(&self.watch, self.on_event);
        let recovered = tokio::select! {
            done = tokio::time::timeout(settle, back) => done.is_ok(),
            _ = tracking => unreachable!("follow runs until cancelled"),
            _ = opts.interrupt.requested() => {
                return Err(DrainError::Interrupted { node: self.plan.node.clone(), remaining: Vec::new() });
            }
        };
        // Back once is back: another drain of a roll may take one of its pods the moment
        // after, and that is that drain's to wait for.
        if recovered {
            return Ok(());
        }
        let short: Vec<WorkloadRecovery> = self
            .recoveries()
            .into_iter()
            .filter(WorkloadRecovery::is_short)
            .collect();
        // With --allow-pending the user accepted replacements that stay Pending.
        if short.is_empty() || opts.allow_pending {
            return Ok(());
        }
        Err(DrainError::NotRecovered {
            node: self.plan.node.clone(),
            waited: waited.elapsed(),
            short,
        })
    }

    fn recoveries(&self) -> Vec<WorkloadRecovery> {
        self.involved
            .iter()
            .map(|w| WorkloadRecovery {
                workload: w.id.clone(),
                recovery: self.watch.recovery(w, &self.plan.node),
            })
            .collect()
    }

    /// The pods not gone yet, with what held each last.
    fn remaining(&self) -> Vec<Remaining> {
        let gone = locked(&self.progress.gone);
        let blocks = locked(&self.progress.blocks);
        self.to_evict
            .iter()
            .chain(&self.to_await)
            .map(|p| Remaining {
                blocked_by: blocks
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == PodKey::of(p))
                    .map(|(_, b)| b.clone()),
                unhealthy: self
                    .watch
                    .current(p)
                    .is_some_and(|live| !pod::is_ready(&live)),
                pod: PodKey::of(p),
            })
            .filter(|r| !gone.contains(&r.pod))
            .collect()
    }

    fn report(&self, started: Instant) -> DrainReport {
        // One last look, so the report shows the replacements as the recoveries saw them.
        self.replacements.look(&self.watch, self.on_event);
        DrainReport {
            node: self.plan.node.clone(),
            pods: self.plan.verdicts(),
            tiers: self.plan.tiers.clone(),
            // Gone pods that this drain evicted (not those that were leaving already).
            evicted: locked(&self.progress.gone)
                .into_iter()
                .filter(|k| self.to_evict.iter().any(|p| PodKey::of(p) == *k))
                .collect(),
            replacements: self.replacements.statuses(),
            workloads: self.recoveries(),
            deleted_past_budget: locked(&self.progress.escalations),
            stopped_early: locked(&self.progress.stopped_early),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            dry_run: false,
        }
    }
}

/// A copy of what a progress list holds now.
fn locked<T: Clone>(list: &Mutex<Vec<T>>) -> Vec<T> {
    list.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Makes the implicit budgets of the workloads being drained real (see [`shared`]) and
/// waits until the disruption controller has counted each, so that the first
/// evictions are not turned away by a budget it has not seen yet.
async fn share_budgets(
    ctx: &Context,
    plan: &Plan,
    to_evict: &[&Pod],
    watch: &tracker::Watches,
    lease: Duration,
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
    let held =
        shared::SharedBudgets::hold(&ctx.conn, &ctx.run, &plan.node, lease, &uncovered, |ns| {
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

/// What has happened so far, kept outside the futures so that a timeout or Ctrl-C can
/// still report it.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) gone: Mutex<Vec<PodKey>>,
    pub(super) stopped_early: Mutex<Vec<EarlyStop>>,
    pub(super) blocks: Mutex<Vec<(PodKey, Blocked)>>,
    pub(super) escalations: Mutex<Vec<Escalation>>,
}

/// The pods a budget holds now: held at least once, still on the node, and not leaving.
fn blockers(
    ctx: &Context,
    opts: &DrainOptions,
    to_evict: &[&Pod],
    watch: &tracker::Watches,
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
                grace: ladder::grace_of(p, opts.grace_period),
                pod: key,
            })
        })
        .collect()
}
