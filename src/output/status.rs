//! The node/pod tree of `kordon status`, drawn as the seed article draws it.
use serde::Serialize;

use super::Report;
use crate::fleet::RunRecord;
use crate::status::{Mark, NodeStatus};

#[derive(Serialize)]
pub struct StatusReport {
    /// The last roll, from its lease (absent when none ran or it cannot be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunRecord>,
    pub nodes: Vec<NodeStatus>,
}

impl Report for StatusReport {
    fn text(&self) -> String {
        let mut out = String::new();
        if let Some(run) = &self.run {
            let state = run.state.map_or("in an unknown state", |s| s.as_str());
            out.push_str(&format!("roll {}: {state}", run.run));
            if let Some(holder) = &run.holder {
                out.push_str(&format!(", held by {holder}"));
            }
            if let Some(updated) = &run.updated {
                out.push_str(&format!(" (updated {updated})"));
            }
            out.push('\n');
        }
        for node in &self.nodes {
            out.push_str(&format!("{}  {}\n", node.name, node.state));
            if let Some(mark) = &node.maintenance {
                out.push_str(&format!("│   roll: {}\n", mark.describe()));
            }
            if let Some(holder) = &node.node_maintenance {
                out.push_str(&format!(
                    "│   held by NodeMaintenance {holder} (kubectl get nodemaintenance {holder})\n"
                ));
            }
            if node.pods.is_empty() {
                out.push_str("└── (no pods)\n");
            }
            for (i, p) in node.pods.iter().enumerate() {
                let branch = if i + 1 == node.pods.len() {
                    "└──"
                } else {
                    "├──"
                };
                let name = if p.namespace == "default" {
                    p.name.clone()
                } else {
                    format!("{}/{}", p.namespace, p.name)
                };
                let mut notes: Vec<String> = p
                    .marks
                    .iter()
                    .map(|m| match m {
                        Mark::DaemonSet => "DaemonSet".to_string(),
                        Mark::Standalone => "standalone".to_string(),
                        Mark::LocalStorage => "local storage".to_string(),
                    })
                    .collect();
                if p.stage != crate::pod::Lifecycle::Ready {
                    notes.insert(0, p.stage.to_string());
                }
                if notes.is_empty() {
                    out.push_str(&format!("{branch} {name}\n"));
                } else {
                    out.push_str(&format!("{branch} {name}  [{}]\n", notes.join(", ")));
                }
            }
        }
        out
    }
}
