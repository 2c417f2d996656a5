//! The eviction engine: every pod of the plan gets its own task, paced by its guard.
//! Tasks wait on watch events (a replacement became Ready, a budget moved), never on a
//! fixed sleep, so the next eviction goes out as soon as the budget allows it; at most
//! `--concurrency` requests are in flight.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::shared;
use super::step::{self, Seen, Step, WorkloadSeen};
use super::tracker::Watches;
use super::{DrainError, EarlyStop, Event, Progress};
use crate::budget::BudgetKey;
use crate::context::{Context, Turn};
use crate::endpoints;
use crate::evict::{self, Blocked, Outcome};
use crate::plan::guards::Guard;
use crate::pod::{self, PodKey, Uid};
use crate::workload::{Workload, WorkloadId};

/// Wakes a waiter even if no event comes, in case one was missed.
pub(super) const RECHECK: Duration = Duration::from_secs(5);

/// How often a hold that lasts is reported again.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// The hold last reported for a pod.
struct Shown {
    blocked: Blocked,
    since: Instant,
    reported: Instant,
}

pub struct Engine<'a> {
    pub ctx: &'a Context,
    pub request: evict::Request,
    pub watch: &'a Watches,
    pub progress: &'a Progress,
    pub on_event: &'a (dyn Fn(Event) + Sync),
    pub allow_disruption: bool,
    pub slots: tokio::sync::Semaphore,
    /// The shared budgets this drain holds.
    shared: Vec<BudgetKey>,
    surged: tokio::sync::Mutex<HashSet<WorkloadId>>,
}

impl<'a> Engine<'a> {
    pub fn new(
        ctx: &'a Context,
        request: evict::Request,
        watch: &'a Watches,
        progress: &'a Progress,
        on_event: &'a (dyn Fn(Event) + Sync),
        opts: &super::DrainOptions,
        shared: Vec<BudgetKey>,
    ) -> Self {
        Self {
            ctx,
            request,
            watch,
            progress,
            on_event,
            allow_disruption: opts.guards.allow_disruption,
            slots: tokio::sync::Semaphore::new(opts.concurrency.max(1)),
            shared,
            surged: tokio::sync::Mutex::default(),
        }
    }

    /// Gets one pod off the node and waits until it is gone. `guard` is `None` for a
    /// pod that was terminating already: it is only waited for. `workload` is the
    /// pod's workload as planned. Each round observes, lets [`step::next`] decide,
    /// carries the decision out, and sleeps until the view changes.
    pub async fn drain_pod(
        &self,
        target: &Pod,
        guard: Option<&Guard>,
        workload: Option<&WorkloadId>,
    ) -> Result<(), DrainError> {
        let key = PodKey::of(target);
        let mut leaving = guard.is_none();
        if !leaving {
            (self.on_event)(Event::Evicting { pod: key.clone() });
        }
        // Pods of one workload decide one at a time, so two never see the same count.
        let decide = match guard {
            Some(Guard::Implicit(w)) => Some(self.lock_for(Turn::Workload(w.id.clone()))),
            _ => None,
        };
        let mut held_by: Option<String> = None;
        let mut turn = None;
        let mut shown = None;
        // When kordon's eviction was accepted, and the Services routing to the pod then.
        let mut evicted: Option<(Instant, jiff::Timestamp, Vec<String>)> = None;
        loop {
            let mut changes = self.watch.subscribe();
            let mut deciding = match &decide {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            let seen = self
                .seen(target, workload, leaving, held_by.as_deref())
                .await;
            let stopped =
                || seen.gone || self.watch.current(target).is_some_and(|p| pod::stopped(&p));
            if evicted.is_some()
                && stopped()
                && let Some((at, wall, services)) = evicted.take()
            {
                self.stopped(target, at, wall, services);
            }
            match step::next(guard.unwrap_or(&Guard::Api), &seen, self.allow_disruption) {
                Step::Done => break,
                Step::AwaitGone | Step::WaitForBudget(_) => {}
                Step::WaitForRollout(rollout) => {
                    let id = workload.map(ToString::to_string).unwrap_or_default();
                    let detail = format!(
                        "{id} is not evicted into its own rollout ({rollout}); waiting until it is through"
                    );
                    self.waiting(target, detail, &mut shown);
                }
                Step::Surge => {
                    if let Some(Guard::Surge(w)) = guard {
                        self.surge(w).await?;
                    }
                    leaving = true;
                    continue;
                }
                Step::Evict => {
                    // Read before the eviction: the endpoint turns not-ready right after.
                    let routed = self.watch.reach(target).listed;
                    match self.evict(target).await? {
                        outcome @ (Outcome::Accepted | Outcome::AlreadyGone) => {
                            if outcome == Outcome::Accepted {
                                evicted = Some((Instant::now(), jiff::Timestamp::now(), routed));
                            }
                            self.ctx.turns.mark_evicted(target);
                            leaving = true;
                            continue;
                        }
                        Outcome::Blocked(b) => {
                            deciding = None;
                            held_by = b.budget.clone();
                            self.blocked(target, b, &mut shown);
                            // Pods under one budget take turns, so a freed disruption is not
                            // met by a burst of requests of which all but one are refused.
                            if let (Some(budget), None) = (&held_by, &turn) {
                                let namespace =
                                    target.metadata.namespace.as_deref().unwrap_or_default();
                                let lock =
                                    self.lock_for(Turn::Budget(BudgetKey::new(namespace, budget)));
                                turn = Some(lock.lock_owned().await);
                                continue;
                            }
                        }
                    }
                }
                Step::WaitForReplacement { serving, floor } => {
                    let Some(Guard::Implicit(w)) = guard else {
                        break;
                    };
                    let detail = format!(
                        "{} has {serving} serving pod(s) and keeps at least {floor}; waiting for a replacement to be Ready and reached by its Services",
                        w.id
                    );
                    self.waiting(target, detail, &mut shown);
                }
            }
            drop(deciding);
            self.watch.changed(&mut changes, RECHECK).await;
        }
        if let Ok(mut gone) = self.progress.gone.lock() {
            gone.push(key.clone());
        }
        (self.on_event)(Event::Gone { pod: key });
        Ok(())
    }

    /// A pod kordon evicted (at `at`, `wall` by the clock) has stopped; `routed` are the
    /// Services that listed it then. Stopping sooner than [`endpoints::EARLY_STOP`]
    /// means requests were still routed to it after it stopped: said, so its owner can
    /// give it a `preStop` hook or keep serving through SIGTERM.
    fn stopped(&self, target: &Pod, at: Instant, wall: jiff::Timestamp, routed: Vec<String>) {
        // Seen late (a busy watch, a slow status) it stopped no later than its kubelet
        // says; the kubelet's whole seconds only ever make it look sooner.
        let by_kubelet = self
            .watch
            .current(target)
            .and_then(|p| pod::stopped_at(&p))
            .map(|t| Duration::try_from(t.duration_since(wall)).unwrap_or_default());
        let seen = at.elapsed();
        let after = by_kubelet.map_or(seen, |k| k.min(seen));
        if routed.is_empty() || after >= endpoints::EARLY_STOP {
            return;
        }
        let early = EarlyStop {
            pod: PodKey::of(target),
            after_seconds: after.as_secs_f64(),
            services: routed,
        };
        if let Ok(mut stops) = self.progress.stopped_early.lock() {
            stops.push(early.clone());
        }
        (self.on_event)(Event::StoppedEarly(early));
    }

    /// What the view shows of the pod now.
    async fn seen(
        &self,
        target: &Pod,
        workload: Option<&WorkloadId>,
        leaving: bool,
        held_by: Option<&str>,
    ) -> Seen {
        let live = self.watch.current(target);
        let namespace = target.metadata.namespace.as_deref().unwrap_or_default();
        // A Deployment this drain restarted (`--surge`) removes its old pods itself.
        let surged = match workload {
            Some(id) => self.surged.lock().await.contains(id),
            None => false,
        };
        Seen {
            gone: live.is_none(),
            // Someone (the deadline's ladder, a user, a rollout) may have deleted it
            // meanwhile.
            leaving: leaving
                || surged
                || live
                    .as_deref()
                    .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            ready: live.as_deref().is_some_and(pod::is_ready),
            workload: workload.and_then(|id| {
                let pods = self.watch.pods_of(id);
                let (now, rollout) = self.watch.workload(id, &pods)?;
                Some(WorkloadSeen {
                    serving: self.serving(&pods),
                    workload: now,
                    rollout,
                })
            }),
            held_by: held_by.map(|b| (b.to_string(), self.watch.budget_allows(namespace, b))),
        }
    }

    /// A rollout restart: the Deployment brings new pods up (elsewhere: the node is
    /// cordoned) before it removes old ones, as its strategy's maxSurge allows. Done
    /// once per Deployment; the old pod is then removed by its controller.
    async fn surge(&self, w: &Workload) -> Result<(), DrainError> {
        let mut surged = self.surged.lock().await;
        if surged.contains(&w.id) {
            return Ok(());
        }
        let conn = &self.ctx.conn;
        let api: Api<Deployment> = Api::namespaced(conn.client.clone(), &w.id.namespace);
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
            "kubectl.kubernetes.io/restartedAt": now,
        }}}}});
        let params = PatchParams {
            dry_run: self.request.server_dry_run,
            ..Default::default()
        };
        api.patch(&w.id.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                conn.error(
                    format!("restart {} for --surge (patch deployments)", w.id),
                    e,
                )
            })?;
        (self.on_event)(Event::Surged {
            workload: w.id.to_string(),
        });
        surged.insert(w.id.clone());
        Ok(())
    }

    /// Evicts the pod. If a user's budget appeared next to one of our shared ones,
    /// ours gives way and the eviction is asked again.
    async fn evict(&self, target: &Pod) -> Result<Outcome, DrainError> {
        let _slot = self.slots.acquire().await;
        let conn = &self.ctx.conn;
        let give_up = Instant::now() + Duration::from_secs(600);
        let first = conn
            .retrying(give_up, || async {
                match evict::evict(conn, target, self.request).await {
                    Err(evict::EvictError::Cluster(e)) => Err(e),
                    other => Ok(other),
                }
            })
            .await
            .unwrap_or_else(|e| Err(e.into()));
        match first {
            Err(evict::EvictError::SeveralBudgets { pod, budgets }) => {
                let ns = target.metadata.namespace.as_deref().unwrap_or_default();
                let (ours, theirs): (Vec<String>, Vec<String>) = budgets
                    .iter()
                    .cloned()
                    .partition(|b| self.shared.contains(&BudgetKey::new(ns, b)));
                if ours.is_empty() {
                    return Err(evict::EvictError::SeveralBudgets { pod, budgets }.into());
                }
                for b in &ours {
                    shared::give_way(&self.ctx.conn, &BudgetKey::new(ns, b), &theirs).await?;
                }
                Ok(evict::evict(&self.ctx.conn, target, self.request).await?)
            }
            other => Ok(other?),
        }
    }

    /// Reports a hold when what holds the pod changes, and again every
    /// [`REMIND_EVERY`] while it keeps holding, with how long it has held.
    /// A hold of kordon's own (no budget's 429): reported as [`Engine::blocked`] is.
    fn waiting(&self, target: &Pod, detail: String, shown: &mut Option<Shown>) {
        let blocked = Blocked {
            budget: None,
            detail,
        };
        self.blocked(target, blocked, shown);
    }

    fn blocked(&self, target: &Pod, blocked: Blocked, shown: &mut Option<Shown>) {
        let now = Instant::now();
        match shown {
            Some(s) if s.blocked == blocked && now - s.reported < REMIND_EVERY => return,
            Some(s) if s.blocked == blocked => s.reported = now,
            _ => {
                *shown = Some(Shown {
                    blocked: blocked.clone(),
                    since: now,
                    reported: now,
                })
            }
        }
        let since = shown.as_ref().map_or(now, |s| s.since);
        let key = PodKey::of(target);
        if let Ok(mut b) = self.progress.blocks.lock() {
            b.push((key.clone(), blocked.clone()));
        }
        (self.on_event)(Event::Blocked {
            pod: key,
            blocked,
            waited: now - since,
        });
    }

    fn lock_for(&self, turn: Turn) -> Arc<tokio::sync::Mutex<()>> {
        self.ctx.turns.lock_for(turn)
    }

    /// How many of a workload's pods serve now: Ready, not terminating, not evicted by
    /// us, and reached by their Services.
    fn serving(&self, pods: &[Arc<Pod>]) -> i32 {
        let evicted = self
            .ctx
            .turns
            .evicted
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let count = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pod::is_ready(p))
            .filter(|p| !Uid::of(p).is_some_and(|u| evicted.contains(&u)))
            .filter(|p| self.watch.serves(p))
            .count();
        i32::try_from(count).unwrap_or(i32::MAX)
    }
}
