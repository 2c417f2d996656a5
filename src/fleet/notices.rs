//! What a roll tells its webhook (`--notify`): each node's start, the first time a
//! budget holds one of its pods, its failure, each new reason no node may start, and the
//! run's end. Made from the roll's own progress, so the webhook hears what the terminal
//! shows.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{RollProgress, RollReport, RunState, WaitReason};
use crate::drain::Event;
use crate::names::NodeName;
use crate::notify::{
    Blocking, Delivery, Kind, Notification, Notifier, NotifyError, Source, Webhook,
};
use crate::phase::Phase;

/// How long the end of a run waits for its notifications to go out.
const FLUSH: Duration = Duration::from_secs(30);

/// The notifications one run has still to decide: what it already said.
#[derive(Debug)]
pub(super) struct Notices {
    run: String,
    /// Pods (by node) a budget was said to hold.
    blocked: HashSet<(NodeName, String)>,
    /// The last wait said, until a node starts.
    waiting: Option<WaitReason>,
}

impl Notices {
    pub(super) fn new(run: &str) -> Self {
        Self {
            run: run.to_string(),
            blocked: HashSet::new(),
            waiting: None,
        }
    }

    fn notification(&self, kind: Kind, node: Option<&NodeName>, message: String) -> Notification {
        Notification {
            kind,
            source: Source {
                kind: "roll",
                namespace: None,
                name: self.run.clone(),
            },
            node: node.map(ToString::to_string),
            phase: None,
            message,
            blocking: Vec::new(),
            at: jiff::Timestamp::now(),
        }
    }

    /// The notification `progress` makes, if any.
    pub(super) fn of(&mut self, progress: &RollProgress) -> Option<Notification> {
        match progress {
            RollProgress::Phase {
                node,
                phase: Phase::Draining,
            } => {
                self.waiting = None;
                let mut n = self.notification(
                    Kind::Started,
                    Some(node),
                    format!("{node} is taken out of service"),
                );
                n.phase = Some(Phase::Draining.to_string());
                Some(n)
            }
            RollProgress::Drain {
                node,
                event: Event::Blocked { pod, blocked, .. },
            } => {
                if !self.blocked.insert((node.clone(), pod.to_string())) {
                    return None;
                }
                let mut n = self.notification(
                    Kind::Blocked,
                    Some(node),
                    format!("a disruption budget keeps {pod} on {node} for now"),
                );
                n.phase = Some(Phase::Draining.to_string());
                n.blocking = vec![Blocking {
                    pod: pod.to_string(),
                    budget: blocked.budget.clone(),
                    detail: blocked.detail.clone(),
                }];
                Some(n)
            }
            RollProgress::Failed { node, phase, error } => {
                let mut n =
                    self.notification(Kind::Failed, Some(node), format!("{node} failed: {error}"));
                n.phase = Some(phase.to_string());
                Some(n)
            }
            RollProgress::Waiting { until, why } => {
                if self.waiting.as_ref() == Some(why) {
                    return None;
                }
                self.waiting = Some(why.clone());
                let reason = match why {
                    WaitReason::Gate { why } => {
                        return Some(self.notification(
                            Kind::Paused,
                            None,
                            format!("no node starts while a metric gate fails: {why}"),
                        ));
                    }
                    WaitReason::Window => "outside every maintenance window",
                    WaitReason::Pause => "pausing between nodes (--pause-between)",
                    WaitReason::Rate { .. } => {
                        "as many nodes started as --max-per allows in its period"
                    }
                    WaitReason::Others => "NodeMaintenances have the rest of the cap out",
                    WaitReason::OthersOut => "nodes someone else has out take the rest of the cap",
                };
                Some(self.notification(
                    Kind::Paused,
                    None,
                    format!("no node starts until {until}: {reason}"),
                ))
            }
            _ => None,
        }
    }

    /// The notification of the run's end.
    pub(super) fn completed(&self, report: &RollReport) -> Notification {
        let done = report.nodes.iter().filter(|r| !r.failed()).count();
        let failed = report.nodes.iter().filter(|r| r.failed()).count();
        let state = match report.state {
            RunState::Done => "done",
            RunState::Failed => "done with failures",
            RunState::Halted => "halted by failures",
            RunState::Interrupted => "interrupted",
            RunState::LockLost => "stopped: another run took the lock",
            RunState::Running => "still running",
        };
        self.notification(
            Kind::Completed,
            None,
            format!(
                "run {} {state}: {done} node(s) through, {failed} failed",
                self.run
            ),
        )
    }
}

/// A run's notifications on their way to the webhook.
pub(super) struct Told {
    notifier: Notifier,
    webhook: Arc<Webhook>,
    notices: Mutex<Notices>,
}

impl Told {
    pub(super) fn start(webhook: &Webhook, run: &str) -> Result<Self, NotifyError> {
        Ok(Self {
            notifier: Notifier::start()?,
            webhook: Arc::new(webhook.clone()),
            notices: Mutex::new(Notices::new(run)),
        })
    }

    pub(super) fn tell(&self, progress: &RollProgress) {
        let notification = match self.notices.lock() {
            Ok(mut notices) => notices.of(progress),
            Err(_) => None,
        };
        if let Some(n) = notification {
            self.notifier.send(&self.webhook, n);
        }
    }

    /// Says the run ended, and waits (a while) for everything to go out.
    pub(super) async fn end(self, report: &RollReport) -> Delivery {
        if let Ok(notices) = self.notices.lock() {
            self.notifier.send(&self.webhook, notices.completed(report));
        }
        self.notifier.finish(FLUSH).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_gate_is_a_paused_notification_said_once_per_reason() {
        let mut notices = Notices::new("r1");
        let until = jiff::Timestamp::UNIX_EPOCH;
        let gate = |why: &str| RollProgress::Waiting {
            until,
            why: WaitReason::Gate { why: why.into() },
        };
        let said = notices
            .of(&gate("alert ShopErrors {} is active (matching team=shop)"))
            .expect("a notification");
        assert_eq!(said.kind, Kind::Paused);
        assert_eq!(
            said.message,
            "no node starts while a metric gate fails: alert ShopErrors {} is active (matching team=shop)"
        );
        assert!(
            notices
                .of(&gate("alert ShopErrors {} is active (matching team=shop)"))
                .is_none(),
            "the same reason again is no news"
        );
        assert!(
            notices
                .of(&gate("query `x` returns 1 series: {}"))
                .is_some()
        );
    }
}
