//! A pod's verdict in the words of the CLI, naming the flags that decide it.
use crate::classify::{Replacement, SkipReason, Verdict};

/// Displays a verdict as the drain and plan lines show it.
pub struct Said<'a>(pub &'a Verdict);

impl std::fmt::Display for Said<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Verdict::Evict(e) => {
                match &e.replacement {
                    Replacement::ByController { kind, name } => {
                        write!(f, "evict ({kind} {name} recreates it elsewhere)")?
                    }
                    Replacement::NotNeeded { phase } => write!(f, "remove ({phase})")?,
                    Replacement::None => write!(
                        f,
                        "evict (no controller: gone for good, allowed by --force)"
                    )?,
                    Replacement::DaemonSet { name } => write!(
                        f,
                        "evict last (DaemonSet {name} puts it back after the uncordon, allowed by --evict-daemonsets)"
                    )?,
                }
                if !e.lost_volumes.is_empty() {
                    write!(f, "; emptyDir data lost: {}", e.lost_volumes.join(", "))?;
                }
                Ok(())
            }
            Verdict::Skip {
                reason: SkipReason::DaemonSet,
            } => f.write_str("skip (DaemonSet-managed, ignored by --ignore-daemonsets)"),
            Verdict::Skip {
                reason: SkipReason::Mirror,
            } => f.write_str("skip (static pod mirror)"),
            Verdict::Skip {
                reason: SkipReason::MaintenanceJob,
            } => f.write_str("skip (the pod of a NodeMaintenance's Job, doing its work)"),
            Verdict::Skip {
                reason: SkipReason::ToleratesDrainingTaint,
            } => f.write_str(
                "skip (its DaemonSet tolerates the kordon.dev/draining taint, so it would come straight back)",
            ),
            Verdict::AwaitTermination => f.write_str("wait (already terminating)"),
            Verdict::Refuse { reasons } => {
                let parts: Vec<String> = reasons
                    .iter()
                    .map(|r| format!("{}: pass {}", r.explain(), r.flag().cli()))
                    .collect();
                write!(f, "refused ({})", parts.join("; "))
            }
        }
    }
}
