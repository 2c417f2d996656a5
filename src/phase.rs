//! Where a node is in its maintenance: one progression for `maintain`, `roll` (the
//! node's annotations) and the controller (a NodeMaintenance's status).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Each phase is entered by one write that also makes the change the phase is named
/// after (the cordon enters `Draining`, the uncordon enters `Verifying`), so a crash
/// between two requests resumes correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Cordoned; pods are being evicted.
    Draining,
    /// Empty; the maintenance runs (a command, a Job, a reboot, or someone else's work).
    Maintaining,
    /// The work is done; waiting for the node to be Ready with its DaemonSet pods.
    AwaitingReady,
    /// Uncordoned (unless someone else's cordon stays); waiting for the workloads it
    /// touched to recover.
    Verifying,
    Done,
}

pub const PHASES: [Phase; 5] = [
    Phase::Draining,
    Phase::Maintaining,
    Phase::AwaitingReady,
    Phase::Verifying,
    Phase::Done,
];

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Draining => "draining",
            Phase::Maintaining => "maintaining",
            Phase::AwaitingReady => "awaiting-ready",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
        }
    }

    /// The node is out of service: from the cordon to the uncordon.
    pub fn out_of_service(self) -> bool {
        self < Phase::Verifying
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PHASES
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown phase \"{s}\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_back_as_written() {
        for p in PHASES {
            assert_eq!(p.to_string().parse::<Phase>(), Ok(p));
        }
        assert!("rebooting".parse::<Phase>().is_err());
    }
}
