//! One node's maintenance as a state machine, shared by `maintain`, each node of `roll`
//! and each NodeMaintenance of the controller. Pure: every cordon and uncordon decision
//! is made here, so "never lift someone else's cordon" holds in one place, and the
//! drivers only observe, carry out the transition and record it.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a node is in its maintenance. Each phase is entered by one patch that also
/// makes the change the phase is named after (the cordon enters `Draining`, the
/// uncordon enters `Verifying`), so a crash between two requests resumes correctly.
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

const PHASES: [Phase; 5] = [
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

/// What the driver observed since the last transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Nothing was done yet: the node is taken out of service.
    Start,
    /// A run that stopped (a crash, Ctrl-C, a new leader) takes the node up again.
    Resume,
    /// The current phase's work is complete.
    Completed,
    /// The current phase failed; `uncordon`: the operator asked for the node back in
    /// service on failure.
    Failed { uncordon: bool },
    /// The drain's deadline passed and its ladder abandoned it.
    Abandoned,
    /// The maintenance was withdrawn (its NodeMaintenance deleted).
    Withdrawn,
}

/// The next record and the cordon change that goes with it, in one patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The phase to record; `None`: the record goes, the node is as before.
    pub phase: Option<Phase>,
    /// `Some(true)` cordon, `Some(false)` uncordon, `None` leave it.
    pub cordon: Option<bool>,
}

/// `current` is `None` before the start. `was_unschedulable`: someone else had cordoned
/// the node before kordon came; that cordon is theirs to lift, never kordon's.
pub fn next(current: Option<Phase>, was_unschedulable: bool, observed: Observed) -> Transition {
    let ours = !was_unschedulable;
    let cordon = |wanted: bool, when: bool| (ours && when).then_some(wanted);
    let at = current.unwrap_or(Phase::Draining);
    match observed {
        Observed::Start => Transition {
            phase: Some(Phase::Draining),
            cordon: cordon(true, true),
        },
        Observed::Resume => Transition {
            phase: Some(at),
            cordon: cordon(true, at.out_of_service()),
        },
        Observed::Completed => {
            let to = match at {
                Phase::Draining => Phase::Maintaining,
                Phase::Maintaining => Phase::AwaitingReady,
                Phase::AwaitingReady => Phase::Verifying,
                Phase::Verifying | Phase::Done => Phase::Done,
            };
            Transition {
                phase: Some(to),
                cordon: cordon(false, at == Phase::AwaitingReady),
            }
        }
        Observed::Failed { uncordon } => Transition {
            phase: Some(at),
            cordon: cordon(false, uncordon && at.out_of_service()),
        },
        Observed::Abandoned | Observed::Withdrawn => Transition {
            phase: None,
            cordon: cordon(false, at.out_of_service()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(was_unschedulable: bool) -> Vec<Transition> {
        let mut at = None;
        let mut seen = Vec::new();
        let mut observed = Observed::Start;
        while at != Some(Phase::Done) {
            let t = next(at, was_unschedulable, observed);
            at = t.phase;
            seen.push(t);
            observed = Observed::Completed;
        }
        seen
    }

    #[test]
    fn a_maintenance_cordons_on_entry_and_uncordons_once_ready() {
        let cordons: Vec<_> = walk(false).iter().map(|t| (t.phase, t.cordon)).collect();
        assert_eq!(
            cordons,
            [
                (Some(Phase::Draining), Some(true)),
                (Some(Phase::Maintaining), None),
                (Some(Phase::AwaitingReady), None),
                (Some(Phase::Verifying), Some(false)),
                (Some(Phase::Done), None),
            ]
        );
    }

    #[test]
    fn someone_elses_cordon_is_never_touched() {
        assert!(walk(true).iter().all(|t| t.cordon.is_none()));
        for p in PHASES {
            for o in [
                Observed::Resume,
                Observed::Failed { uncordon: true },
                Observed::Abandoned,
                Observed::Withdrawn,
            ] {
                assert_eq!(next(Some(p), true, o).cordon, None, "{p} {o:?}");
            }
        }
    }

    #[test]
    fn a_resumed_node_stays_cordoned_until_its_uncordon() {
        assert_eq!(
            next(Some(Phase::AwaitingReady), false, Observed::Resume).cordon,
            Some(true)
        );
        assert_eq!(
            next(Some(Phase::Verifying), false, Observed::Resume).cordon,
            None
        );
    }

    #[test]
    fn failures_keep_the_cordon_unless_asked_and_withdrawals_put_the_node_back() {
        let failed = next(
            Some(Phase::Maintaining),
            false,
            Observed::Failed { uncordon: false },
        );
        assert_eq!(
            (failed.phase, failed.cordon),
            (Some(Phase::Maintaining), None)
        );
        let asked = next(
            Some(Phase::Draining),
            false,
            Observed::Failed { uncordon: true },
        );
        assert_eq!(asked.cordon, Some(false));
        for o in [Observed::Abandoned, Observed::Withdrawn] {
            let back = next(Some(Phase::Draining), false, o);
            assert_eq!((back.phase, back.cordon), (None, Some(false)));
            // Past the uncordon there is nothing left to lift.
            assert_eq!(next(Some(Phase::Done), false, o).cordon, None);
        }
    }

    #[test]
    fn phases_read_back_as_written() {
        for p in PHASES {
            assert_eq!(p.to_string().parse::<Phase>(), Ok(p));
        }
        assert!("rebooting".parse::<Phase>().is_err());
    }
}
