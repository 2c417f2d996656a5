//! The Events a node's maintenance publishes, the same whether a roll or a
//! NodeMaintenance carries it out: one named constructor per moment.
use crate::phase::Phase;

/// An Event's reason and note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub reason: &'static str,
    pub note: String,
}

fn note(reason: &'static str, note: impl Into<String>) -> Note {
    Note {
        reason,
        note: note.into(),
    }
}

/// A phase began. `was_unschedulable`: someone else's cordon stays; `evicted`: pods the
/// drain evicted.
pub fn entered(phase: Phase, was_unschedulable: bool, evicted: usize) -> Note {
    match phase {
        Phase::Draining if was_unschedulable => note(
            "Draining",
            "already cordoned by someone else; evicting its pods",
        ),
        Phase::Draining => note("Draining", "cordoned; evicting its pods"),
        Phase::Maintaining => note(
            "Maintaining",
            format!("drained ({evicted} pods evicted); maintenance running"),
        ),
        Phase::AwaitingReady => note(
            "AwaitingReady",
            "maintenance done; waiting for the node and its DaemonSet pods to be Ready",
        ),
        Phase::Verifying if was_unschedulable => note(
            "Verifying",
            "Ready; left cordoned as it was before; waiting for its workloads to recover",
        ),
        Phase::Verifying => note(
            "Uncordoned",
            "Ready and uncordoned; waiting for its workloads to recover",
        ),
        Phase::Done => note(
            "MaintenanceDone",
            "maintenance done and workloads recovered",
        ),
    }
}

/// A phase failed, and the driver changed the cordon as `cordon` says: the node stays
/// out of service unless it was past its uncordon or the failure lifted the cordon.
pub fn failed(phase: Phase, message: &str, cordon: Option<bool>) -> Note {
    let node = if phase.out_of_service() && cordon != Some(false) {
        "the node stays cordoned"
    } else {
        "the node is back in service"
    };
    note(
        "MaintenanceFailed",
        format!("{phase} failed: {message}; {node}"),
    )
}

/// The drain was abandoned at its deadline; the message says how the node was left.
pub fn abandoned(message: &str) -> Note {
    note("MaintenanceAbandoned", message)
}

/// The maintenance was withdrawn (its NodeMaintenance deleted); `uncordoned`: kordon
/// lifted its own cordon.
pub fn withdrawn(uncordoned: bool) -> Note {
    note(
        "MaintenanceWithdrawn",
        if uncordoned {
            "NodeMaintenance deleted: evictions stopped, node uncordoned"
        } else {
            "NodeMaintenance deleted: evictions stopped; the node stays cordoned as someone else had it"
        },
    )
}
