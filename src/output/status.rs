//! The node/pod tree of `kordon status`, drawn as the seed article draws it.
use serde::Serialize;

use super::Report;
use crate::status::{Mark, NodeStatus};

#[derive(Serialize)]
pub struct StatusReport {
    pub nodes: Vec<NodeStatus>,
}

impl Report for StatusReport {
    fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!("{}  {}\n", node.name, node.state));
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
