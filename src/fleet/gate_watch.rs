//! A roll's metric gates, asked every few seconds in the background while the roll
//! runs, so the scheduler reads the latest verdict without waiting on Prometheus or
//! Alertmanager (the nodes under way are driven by the same loop); while one fails, the
//! roll's lease is read too, for a `kordon approve`.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

use crate::api::maintenance_plan::APPROVE_ANNOTATION;
use crate::metric_gate::{self, Checker, Gates, Hold, Verdict};

/// How often the gates are asked.
pub(super) const GATE_AGAIN: Duration = Duration::from_secs(5);

/// What the gates said last, and the approval on the lease then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Now {
    verdict: Verdict,
    approval: Option<String>,
}

pub(super) struct GateWatch {
    now: watch::Receiver<Now>,
    /// The approval that last started a node; one given before the run never does.
    used: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl GateWatch {
    /// Asks the gates once (the first node waits for that answer), then every
    /// [`GATE_AGAIN`] in the background; `None` without gates. `lease`: the roll's
    /// lock, where `kordon approve` writes.
    pub(super) async fn start(
        gates: Option<&Arc<Gates>>,
        checker: Option<&Checker>,
        lease: (Api<Lease>, &str),
    ) -> Option<Self> {
        let (gates, checker) = (gates?.clone(), checker?.clone());
        let (api, name) = (lease.0, lease.1.to_string());
        let used = approval(&api, &name).await;
        let first = Now {
            verdict: checker.verdict(&gates).await,
            approval: used.clone(),
        };
        let (tx, now) = watch::channel(first);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(GATE_AGAIN).await;
                let verdict = checker.verdict(&gates).await;
                let approval = match verdict.is_healthy() {
                    true => tx.borrow().approval.clone(),
                    false => approval(&api, &name).await,
                };
                let now = Now { verdict, approval };
                // Woken only when something changes.
                tx.send_if_modified(|v| {
                    let changed = *v != now;
                    *v = now;
                    changed
                });
            }
        });
        Some(Self { now, used, task })
    }

    /// What the gates mean for the next fresh start now.
    pub(super) fn hold(&self) -> Hold {
        let now = self.now.borrow();
        metric_gate::hold(
            Some(&now.verdict),
            now.approval.as_deref(),
            self.used.as_deref(),
        )
    }

    /// A node started on `approval`: it is spent.
    pub(super) fn spend(&mut self, approval: &str) {
        self.used = Some(approval.to_string());
    }

    /// Until the verdict or the approval changes.
    pub(super) async fn changed(&mut self) {
        if self.now.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// The lease's approval, if any (a lease that cannot be read has none).
async fn approval(api: &Api<Lease>, name: &str) -> Option<String> {
    match api.get_opt(name).await {
        Ok(lease) => lease?
            .metadata
            .annotations?
            .get(APPROVE_ANNOTATION)
            .cloned(),
        Err(e) => {
            tracing::debug!("cannot read the lease {name} for an approval: {e}");
            None
        }
    }
}

impl Drop for GateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
