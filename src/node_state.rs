//! A node's state as `kubectl get nodes` shows it: `Ready`, `NotReady`, `Unknown`, with
//! `,SchedulingDisabled` appended while the node is cordoned.
use std::fmt;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

/// What the node's `Ready` condition says. The kubelet (here KWOK) reports it; the node
/// lifecycle controller sets it to `Unknown` when heartbeats stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Readiness {
    Ready,
    NotReady,
    Unknown,
}

/// Readiness plus whether the scheduler may place new pods on the node; written in
/// reports as kubectl shows it (`Ready,SchedulingDisabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub readiness: Readiness,
    /// `spec.unschedulable`: set by cordon, cleared by uncordon.
    pub cordoned: bool,
}

impl NodeState {
    pub fn of(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let readiness = match ready.map(|c| c.status.as_str()) {
            Some("True") => Readiness::Ready,
            Some("False") => Readiness::NotReady,
            _ => Readiness::Unknown,
        };
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        Self {
            readiness,
            cordoned,
        }
    }

    pub fn with_cordoned(self, cordoned: bool) -> Self {
        Self { cordoned, ..self }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let readiness = match self.readiness {
            Readiness::Ready => "Ready",
            Readiness::NotReady => "NotReady",
            Readiness::Unknown => "Unknown",
        };
        f.write_str(readiness)?;
        if self.cordoned {
            f.write_str(",SchedulingDisabled")?;
        }
        Ok(())
    }
}

impl Serialize for NodeState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a run left a node, as its report and its error say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftAs {
    /// Refused before any change.
    Unchanged,
    /// Its cordon could not be lifted.
    Cordoned,
    Is(NodeState),
    /// It could not be read at the end.
    Unknown,
}

impl fmt::Display for LeftAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged => f.write_str("unchanged"),
            Self::Cordoned => f.write_str("cordoned"),
            Self::Is(state) => state.fmt(f),
            Self::Unknown => f.write_str("in an unknown state (it could not be read)"),
        }
    }
}

impl Serialize for LeftAs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn node(ready: Option<&str>, unschedulable: Option<bool>) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|status| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn shows_states_as_kubectl_get_nodes_does() {
        assert_eq!(
            NodeState::of(&node(Some("True"), None)).to_string(),
            "Ready"
        );
        assert_eq!(
            NodeState::of(&node(Some("True"), Some(true))).to_string(),
            "Ready,SchedulingDisabled"
        );
        assert_eq!(
            NodeState::of(&node(Some("False"), Some(false))).to_string(),
            "NotReady"
        );
        assert_eq!(
            NodeState::of(&node(None, Some(true))).to_string(),
            "Unknown,SchedulingDisabled"
        );
    }
}
