//! The long waits the controller runs, at most one per NodeMaintenance: its drain (in
//! `Draining`), "Ready again" or a health gate (in `AwaitingReady` and `Verifying`). Each takes
//! minutes, longer than a reconcile should: it runs as a task that tallies its progress
//! here, for the object's reconcile to report and act on.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::metrics::{Eviction, Metrics};
use crate::api::node_maintenance::{DrainProgress, HeldPod};
use crate::context::Context;
use crate::drain::{self, DrainError, DrainOptions, Event};
use crate::evict::Blocked;
use crate::names::NodeName;
use crate::pod::PodKey;
use crate::snapshot::Reach;
use crate::workflow::driver::Task;

/// How a drain or a gate ended.
#[derive(Debug, Clone)]
pub enum Ended {
    Done,
    /// Its ladder gave up at the deadline; the message names what blocked.
    Abandoned(String),
    Failed(String),
}

#[derive(Default, Debug)]
struct Tally {
    total: u32,
    gone: u32,
    held: BTreeMap<PodKey, Blocked>,
    /// Out of external load balancers, and what the drain waits for.
    load_balancers: Option<String>,
    ended: Option<Ended>,
}

impl Tally {
    /// The count a drain starts from. One that takes over from an earlier leader (its
    /// `earlier` status) keeps the pods that leader got off the node; either way the
    /// total is what is gone already plus what the plan finds still on the node, to
    /// evict or already leaving, and every one of those ends as a `Gone` event. So
    /// `gone` reaches `total` exactly when the node is empty.
    fn start(earlier: Option<&DrainProgress>, evicting: usize, leaving: usize) -> Self {
        let before = earlier.map_or(0, |e| e.evicted);
        let on_node = u32::try_from(evicting + leaving).unwrap_or(u32::MAX);
        Self {
            total: before.saturating_add(on_node),
            gone: before,
            ..Default::default()
        }
    }
}

struct Run {
    /// The driver's task it carries out: a result is only ever read for that task.
    task_of: Task,
    tally: Arc<Mutex<Tally>>,
    task: JoinHandle<()>,
    /// When its progress last went to the status.
    reported: Option<Instant>,
}

/// How often a running drain's progress goes to the status at most: each status write
/// wakes the object again, and a drain's counts change at every pod. As often as a
/// plan's status tells of its nodes.
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct Runs {
    runs: Mutex<HashMap<String, Run>>,
    metrics: Arc<Metrics>,
    /// Told the object's name when one of its tasks ends, so its reconcile acts at
    /// once rather than at its next look.
    ended: futures::channel::mpsc::UnboundedSender<String>,
}

impl Runs {
    /// The runs, and the names of the objects whose task ended, as they end.
    pub fn new(metrics: Arc<Metrics>) -> (Self, futures::channel::mpsc::UnboundedReceiver<String>) {
        let (ended, ends) = futures::channel::mpsc::unbounded();
        let runs = Self {
            runs: Mutex::default(),
            metrics,
            ended,
        };
        (runs, ends)
    }

    /// The task's progress and, once it ended, how; `None` when this process runs no
    /// task for the object in this phase (it never started one, or a new leader took
    /// over).
    pub fn state(&self, name: &str, task: Task) -> Option<(DrainProgress, Option<Ended>)> {
        let runs = self.runs.lock().ok()?;
        let run = runs.get(name).filter(|r| r.task_of == task)?;
        let tally = run.tally.lock().ok()?;
        let progress = DrainProgress {
            total: tally.total,
            evicted: tally.gone,
            waiting: u32::try_from(tally.held.len()).unwrap_or(u32::MAX),
            held: tally
                .held
                .iter()
                .map(|(pod, b)| HeldPod {
                    pod: pod.to_string(),
                    budget: b.budget.clone(),
                    detail: b.detail.clone(),
                })
                .collect(),
            load_balancers: tally.load_balancers.clone(),
        };
        Some((progress, tally.ended.clone()))
    }

    /// Whether the object's progress is due in its status again (see [`REPORT_EVERY`]);
    /// if so, counts it as reported now.
    pub fn report_due(&self, name: &str) -> bool {
        let Ok(mut runs) = self.runs.lock() else {
            return true;
        };
        let Some(run) = runs.get_mut(name) else {
            return true;
        };
        let due = run.reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY);
        if due {
            run.reported = Some(Instant::now());
        }
        due
    }

    /// Starts draining the node for the object. A drain started again after a restart
    /// plans afresh: what is gone is not evicted twice, and its count goes on from the
    /// `earlier` status.
    pub fn start(
        &self,
        name: &str,
        ctx: Arc<Context>,
        node: NodeName,
        opts: DrainOptions,
        earlier: Option<&DrainProgress>,
    ) {
        let tally = Arc::new(Mutex::new(Tally {
            total: earlier.map_or(0, |e| e.total),
            gone: earlier.map_or(0, |e| e.evicted),
            ..Default::default()
        }));
        let earlier = earlier.cloned();
        let counts = tally.clone();
        let metrics = self.metrics.clone();
        let (tell, told) = (self.ended.clone(), name.to_string());
        let task = tokio::spawn(async move {
            let on_event = |e: Event| {
                let Ok(mut t) = counts.lock() else { return };
                match e {
                    Event::Blocked {
                        pod,
                        blocked,
                        waited,
                    } => {
                        metrics.eviction(Eviction::Refused);
                        metrics.held(&pod, waited);
                        t.held.insert(pod, blocked);
                    }
                    Event::Gone { pod } => {
                        metrics.eviction(Eviction::Done);
                        t.held.remove(&pod);
                        t.gone += 1;
                    }
                    Event::DeletedPastBudget(_) => metrics.eviction(Eviction::DeletedPastBudget),
                    Event::ExcludedFromLoadBalancers { deregistration, .. } => {
                        t.load_balancers = Some(deregistration.to_string());
                    }
                    _ => {}
                }
            };
            let result = async {
                let plan = drain::plan(&ctx, &node, &opts, Reach::Targets).await?;
                if let Ok(mut t) = counts.lock() {
                    *t = Tally::start(earlier.as_ref(), plan.evictable(), plan.leaving());
                }
                drain::execute(&ctx, plan, &opts, &on_event).await
            }
            .await;
            let ended = match result {
                Ok(_) => Ended::Done,
                Err(e @ DrainError::Abandoned { .. }) => Ended::Abandoned(e.to_string()),
                Err(e) => Ended::Failed(e.to_string()),
            };
            if let Ok(mut t) = counts.lock() {
                t.ended = Some(ended);
            }
            let _ = tell.unbounded_send(told);
        });
        self.insert(name, Task::Drain, tally, task);
    }

    /// Starts waiting for a condition of the object: "Ready again", or a health gate.
    /// The receiver hears when it ends.
    pub fn wait<E: std::fmt::Display + Send + 'static>(
        &self,
        name: &str,
        task_of: Task,
        wait: impl Future<Output = Result<(), E>> + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let result = tally.clone();
        let (tell, told) = (self.ended.clone(), name.to_string());
        let (ended_now, ends) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let ended = match wait.await {
                Ok(()) => Ended::Done,
                Err(e) => Ended::Failed(e.to_string()),
            };
            if let Ok(mut t) = result.lock() {
                t.ended = Some(ended);
            }
            let _ = ended_now.send(());
            let _ = tell.unbounded_send(told);
        });
        self.insert(name, task_of, tally, task);
        ends
    }

    /// The task the object's run carries out, if it has one.
    pub fn running(&self, name: &str) -> Option<Task> {
        self.runs.lock().ok()?.get(name).map(|r| r.task_of)
    }

    fn insert(&self, name: &str, task_of: Task, tally: Arc<Mutex<Tally>>, task: JoinHandle<()>) {
        let run = Run {
            task_of,
            tally,
            task,
            reported: None,
        };
        if let Ok(mut runs) = self.runs.lock()
            && let Some(old) = runs.insert(name.to_string(), run)
        {
            old.task.abort();
        }
    }

    /// Stops the object's task, if any: no eviction is issued after this.
    pub fn stop(&self, name: &str) {
        if let Ok(mut runs) = self.runs.lock()
            && let Some(run) = runs.remove(name)
        {
            run.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_after_a_new_leader_resumes_a_drain() {
        // The dead leader got 3 of 8 pods off; its last evictions are still leaving
        // (2), and 3 are left to evict.
        let earlier = DrainProgress {
            total: 8,
            evicted: 3,
            ..Default::default()
        };
        let mut t = Tally::start(Some(&earlier), 3, 2);
        assert_eq!((t.gone, t.total), (3, 8));
        // Every pod still on the node ends as one Gone event.
        t.gone += 5;
        assert_eq!(t.gone, t.total, "evicted reaches the total exactly");
    }

    #[test]
    fn a_fresh_drain_counts_pods_already_leaving() {
        let t = Tally::start(None, 4, 1);
        assert_eq!((t.gone, t.total), (0, 5));
    }
}
