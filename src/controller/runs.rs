//! The drains the controller runs, one per NodeMaintenance in `Draining`. A drain takes
//! minutes, longer than a reconcile should: it runs as a task that tallies its progress
//! here, for the object's reconcile to report and act on.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::metrics::{Eviction, Metrics};
use crate::api::node_maintenance::{DrainProgress, HeldPod};
use crate::context::Context;
use crate::drain::{self, DrainError, DrainOptions, Event};
use crate::evict::Blocked;
use crate::names::NodeName;
use crate::snapshot::Reach;

/// How a drain ended.
#[derive(Debug, Clone)]
pub enum Ended {
    Drained,
    /// Its ladder gave up at the deadline; the message names what blocked.
    Abandoned(String),
    Failed(String),
}

#[derive(Default)]
struct Tally {
    total: u32,
    gone: u32,
    held: BTreeMap<String, Blocked>,
    ended: Option<Ended>,
}

struct Run {
    tally: Arc<Mutex<Tally>>,
    task: JoinHandle<()>,
}

pub struct Runs {
    runs: Mutex<HashMap<String, Run>>,
    metrics: Arc<Metrics>,
}

impl Runs {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            runs: Mutex::default(),
            metrics,
        }
    }

    /// The drain's progress and, once it ended, how; `None` when this process runs no
    /// drain for the object (it never started one, or a new leader took over).
    pub fn state(&self, name: &str) -> Option<(DrainProgress, Option<Ended>)> {
        let runs = self.runs.lock().ok()?;
        let tally = runs.get(name)?.tally.lock().ok()?;
        let progress = DrainProgress {
            total: tally.total,
            evicted: tally.gone,
            waiting: u32::try_from(tally.held.len()).unwrap_or(u32::MAX),
            held: tally
                .held
                .iter()
                .map(|(pod, b)| HeldPod {
                    pod: pod.clone(),
                    budget: b.budget.clone(),
                    detail: b.detail.clone(),
                })
                .collect(),
        };
        Some((progress, tally.ended.clone()))
    }

    /// Starts draining the node for the object. A drain started again after a restart
    /// plans afresh: what is gone is not evicted twice.
    pub fn start(&self, name: &str, ctx: Arc<Context>, node: NodeName, opts: DrainOptions) {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let counts = tally.clone();
        let metrics = self.metrics.clone();
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
                    _ => {}
                }
            };
            let result = async {
                let plan = drain::plan(&ctx, &node, &opts, Reach::Targets).await?;
                if let Ok(mut t) = counts.lock() {
                    t.total = u32::try_from(plan.evictable()).unwrap_or(u32::MAX);
                }
                drain::execute(&ctx, plan, &opts, &on_event).await
            }
            .await;
            let ended = match result {
                Ok(_) => Ended::Drained,
                Err(e @ DrainError::Abandoned { .. }) => Ended::Abandoned(e.to_string()),
                Err(e) => Ended::Failed(e.to_string()),
            };
            if let Ok(mut t) = counts.lock() {
                t.ended = Some(ended);
            }
        });
        if let Ok(mut runs) = self.runs.lock()
            && let Some(old) = runs.insert(name.to_string(), Run { tally, task })
        {
            old.task.abort();
        }
    }

    /// Stops the object's drain, if any: no eviction is issued after this.
    pub fn stop(&self, name: &str) {
        if let Ok(mut runs) = self.runs.lock()
            && let Some(run) = runs.remove(name)
        {
            run.task.abort();
        }
    }
}
