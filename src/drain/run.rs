//! Carrying a plan out: cordon, evict under the guards, follow replacements and
//! workloads, the deadline's ladder, the timeout, and the report.
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::access::{namespaces, needed_permissions, routable};
use super::{
    DrainError, DrainOptions, DrainReport, EarlyStop, Escalation, Event, Plan, Remaining,
    WorkloadRecovery, engine, escalate, ladder, shared, tracker,
};
use crate::classify::Verdict;
use crate::cluster::nodes::{self, DryRun};
use crate::context::Context;
use crate::evict::{self, Blocked};
use crate::node_state::NodeState;
use crate::plan::guards::Guard;
use crate::pod::{self, PodKey, Uid};
use crate::workload::Workload;

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
