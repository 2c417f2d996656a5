//! Whether the node needs maintenance, as a sentinel says (kured's model), and the
//! trigger label that tells a MaintenancePlan with `triggered: true` so.
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;

pub use crate::api::maintenance_plan::TRIGGER_LABEL;

/// What says the node needs maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sentinel {
    /// A file on the host exists (e.g. `/var/run/reboot-required`).
    File(PathBuf),
    /// A command on the host exits 0.
    Command(Vec<String>),
    /// A condition of the node is True (set by another agent, e.g.
    /// node-problem-detector).
    Condition(String),
}

impl Sentinel {
    /// Where a file sentinel is seen from inside the agent: under the host's root.
    pub fn file_under(root: &Path, file: &Path) -> PathBuf {
        root.join(file.strip_prefix("/").unwrap_or(file))
    }
}

/// Whether the node has the condition `type_` True.
pub fn condition_true(node: &Node, type_: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The change to the node's trigger label, if any: `Some(Some(value))` sets it,
/// `Some(None)` removes it. A need that holds keeps its value (the time it was first
/// seen, in Unix seconds), so a plan maintains it once; a need that goes away takes the
/// label off, but not while a maintenance of the node is under way (a reboot that clears
/// the sentinel must not take the node from the plan that is rebooting it).
pub fn trigger_change(
    node: &Node,
    needed: bool,
    under_way: bool,
    now: jiff::Timestamp,
) -> Option<Option<String>> {
    let current = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TRIGGER_LABEL));
    match (needed, current) {
        (true, None) => Some(Some(now.as_second().to_string())),
        (false, Some(_)) if !under_way => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({ "metadata": { "name": "n1", "labels": labels } }))
            .expect("node")
    }

    #[test]
    fn a_need_is_labelled_once_with_when_it_was_first_seen_and_lifted_when_gone() {
        let now: jiff::Timestamp = "2026-12-06T10:00:00Z".parse().expect("time");
        let clean = node(json!({}));
        assert_eq!(
            trigger_change(&clean, true, false, now),
            Some(Some("1796551200".into()))
        );
        assert_eq!(trigger_change(&clean, false, false, now), None);
        let triggered = node(json!({ TRIGGER_LABEL: "1765000000" }));
        assert_eq!(trigger_change(&triggered, true, false, now), None);
        assert_eq!(trigger_change(&triggered, false, false, now), Some(None));
        // Cleared by the reboot the plan is doing: kept until the maintenance ends.
        assert_eq!(trigger_change(&triggered, false, true, now), None);
    }

    #[test]
    fn a_file_sentinel_is_looked_for_under_the_host_s_root() {
        assert_eq!(
            Sentinel::file_under(Path::new("/host"), Path::new("/var/run/reboot-required")),
            PathBuf::from("/host/var/run/reboot-required")
        );
    }

    #[test]
    fn a_condition_sentinel_holds_only_while_true() {
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": "n1" },
            "status": { "conditions": [
                { "type": "KernelDeadlock", "status": "True" },
                { "type": "Ready", "status": "True" },
                { "type": "RebootRequired", "status": "False" }
            ] }
        }))
        .expect("node");
        assert!(condition_true(&node, "KernelDeadlock"));
        assert!(!condition_true(&node, "RebootRequired"));
        assert!(!condition_true(&node, "Missing"));
    }
}
