//! `kordon maintain` for people: a line per step as it happens, and the result.
use super::Report;
use crate::names::NodeName;
use crate::workflow::detach::Outcome;
use crate::workflow::{MaintainReport, Progress};

impl Report for MaintainReport {
    fn text(&self) -> String {
        format!("{}: maintained; now {}", self.node, self.final_state)
    }
}

/// One progress line (or several, for a plan's findings) of maintaining `node`.
pub fn progress_line(node: &NodeName, p: &Progress) -> String {
    match p {
        Progress::Planned(plan) => super::plan::forecast(plan).trim_end().to_string(),
        Progress::Step(step) => format!("== {step}"),
        Progress::Drain(e) => super::drain::event_line(e),
        Progress::Drained(report) => report.text(),
        Progress::Prompt(text) => text.clone(),
        Progress::WaitingForReady => {
            format!("waiting for {node} to be Ready with a fresh heartbeat")
        }
        Progress::WaitingForVolumes => {
            format!("waiting for no VolumeAttachment to name {node} before the maintenance")
        }
        Progress::Volumes(outcome) => volumes(node, outcome),
        Progress::WaitingForDaemonSets => {
            format!("waiting for the DaemonSet pods on {node} to be Ready before it takes pods")
        }
        Progress::WaitingForWorkloads => {
            "waiting for the drained workloads to be back at full Ready".to_string()
        }
        Progress::LeftCordoned => {
            format!("{node} was cordoned before kordon started: leaving it cordoned")
        }
    }
}

/// How the wait for the node's volumes ended (also a roll's line).
pub fn volumes(node: &NodeName, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skipped => {
            format!("not waiting for volumes on {node} (--volume-detach-timeout 0)")
        }
        Outcome::Detached { seconds } => {
            format!("no volume attached to {node} (waited {seconds:.1}s)")
        }
        Outcome::Proceeded(what) => format!("warning: {what}; proceeding as asked"),
    }
}
