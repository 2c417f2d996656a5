//! Kubernetes Events on nodes and pods, so `kubectl describe` tells the maintenance
//! story to anyone, not only to the terminal that ran kordon.
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::Connection;

pub struct Events {
    recorder: Recorder,
}

/// Whether an event reports progress or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

impl Events {
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
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        severity: Severity,
        reason: &str,
        note: String,
    ) {
        self.publish_related(object, None, severity, reason, note)
            .await;
    }

    /// [`Self::publish`] about one node of `object` (a plan's): the node is the Event's
    /// related object, so that each node's Event stands on its own instead of being
    /// counted into the first one's series.
    pub async fn publish_about_node<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        node: &str,
        severity: Severity,
        reason: &str,
        note: String,
    ) {
        let node = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        };
        self.publish_related(object, Some(node), severity, reason, note)
            .await;
    }

    async fn publish_related<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        related: Option<ObjectReference>,
        severity: Severity,
        reason: &str,
        note: String,
    ) {
        let reference = object.object_ref(&());
        let event = Event {
            type_: match severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(
                "cannot record event {reason} on {} {}: {e}",
                K::kind(&()),
                reference.name.as_deref().unwrap_or_default()
            );
        }
    }
}
