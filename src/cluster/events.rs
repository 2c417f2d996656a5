//! Kubernetes Events on nodes, so `kubectl describe node` tells the maintenance story
//! to anyone, not only to the terminal that ran kordon.
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::Connection;

pub struct NodeEvents {
    recorder: Recorder,
}

/// Whether an event reports progress or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl NodeEvents {
    pub fn new(conn: &Connection, instance: &str) -> Self {
        let reporter = Reporter {
            controller: "kordon".into(),
            instance: Some(instance.to_string()),
        };
        Self {
            recorder: Recorder::new(conn.client.clone(), reporter),
        }
    }

    /// Publishes an event; failing to is logged, never fatal: the annotations, not the
    /// events, are the record kordon resumes from.
    pub async fn publish(&self, node: &Node, severity: Severity, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: match severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                "cannot record event {reason} on node {}: {e}",
                node.metadata.name.as_deref().unwrap_or_default()
            );
        }
    }
}
