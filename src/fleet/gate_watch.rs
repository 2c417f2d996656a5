//! A roll's metric gates, asked every few seconds in the background while the roll
//! runs, so the scheduler reads the latest verdict without waiting on Prometheus or
//! Alertmanager (the nodes under way are driven by the same loop).
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metric_gate::{Checker, Gates, Verdict};

/// How often the gates are asked.
pub(super) const GATE_AGAIN: Duration = Duration::from_secs(5);

pub(super) struct GateWatch {
    verdict: watch::Receiver<Verdict>,
    task: tokio::task::JoinHandle<()>,
}

impl GateWatch {
    /// Asks the gates once (the first node waits for that answer), then every
    /// [`GATE_AGAIN`] in the background; `None` without gates.
    pub(super) async fn start(
        gates: Option<&Arc<Gates>>,
        checker: Option<&Checker>,
    ) -> Option<Self> {
        let (gates, checker) = (gates?.clone(), checker?.clone());
        let first = checker.verdict(&gates).await;
        let (tx, verdict) = watch::channel(first);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(GATE_AGAIN).await;
                let now = checker.verdict(&gates).await;
                // Woken only when the verdict changes.
                tx.send_if_modified(|v| {
                    let changed = *v != now;
                    *v = now;
                    changed
                });
            }
        });
        Some(Self { verdict, task })
    }

    /// The latest verdict.
    pub(super) fn now(&self) -> Verdict {
        self.verdict.borrow().clone()
    }

    /// Until the verdict changes.
    pub(super) async fn changed(&mut self) {
        if self.verdict.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

impl Drop for GateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
