//! `kordon cordon` and `uncordon`: each node's state before and after.
use serde::Serialize;

use super::Report;
use crate::names::NodeName;
use crate::node_state::NodeState;

/// One node's state before and after, as `kubectl get nodes` shows it.
#[derive(Serialize)]
pub struct Transition {
    pub node: NodeName,
    pub before: NodeState,
    pub after: NodeState,
    pub changed: bool,
}

#[derive(Serialize)]
pub struct Transitions {
    pub nodes: Vec<Transition>,
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
}

impl Report for Transitions {
    fn text(&self) -> String {
        let suffix = if self.dry_run { " (dry run)" } else { "" };
        self.nodes
            .iter()
            .map(|t| {
                if t.changed {
                    format!("{}: {} -> {}{suffix}", t.node, t.before, t.after)
                } else {
                    format!("{}: {} (unchanged)", t.node, t.after)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
