//! "Ready again" after maintenance: the Ready condition is True with a heartbeat newer
//! than the one seen before (so a stale status from before a reboot does not count)
//! and, when a reboot is expected, a different `bootID`.
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::runtime::wait::await_condition;

use super::StepError;
use crate::cluster::Connection;
use crate::names::NodeName;

#[derive(Debug, Clone, Copy, Default)]
pub struct ReadyCriteria {
    /// `--expect-reboot`: the node's bootID must change.
    pub expect_reboot: bool,
}

/// What the node reported before the work started.
pub struct Snapshot {
    pub heartbeat: Option<Time>,
    pub boot_id: Option<String>,
}

impl Snapshot {
    pub fn of(n: &Node) -> Self {
        Snapshot {
            heartbeat: heartbeat(n),
            boot_id: boot_id(n),
        }
    }
}

fn ready_condition(n: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn heartbeat(n: &Node) -> Option<Time> {
    ready_condition(n)?.last_heartbeat_time.clone()
}

fn boot_id(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .node_info
        .as_ref()
        .map(|i| i.boot_id.clone())
}

/// True when the node counts as back.
fn is_back(n: &Node, before: &Snapshot, criteria: ReadyCriteria) -> bool {
    let ready = ready_condition(n).is_some_and(|c| c.status == "True");
    let fresh = match (&before.heartbeat, heartbeat(n)) {
        (Some(old), Some(new)) => new.0 > old.0,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    let rebooted = !criteria.expect_reboot || boot_id(n) != before.boot_id;
    ready && fresh && rebooted
}

/// Waits, by watching the node, until it is back or the timeout passes.
pub async fn wait(
    conn: &Connection,
    node: &NodeName,
    before: &Snapshot,
    criteria: ReadyCriteria,
    timeout: Duration,
) -> Result<(), StepError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let condition = |n: Option<&Node>| n.is_some_and(|n| is_back(n, before, criteria));
    match tokio::time::timeout(timeout, await_condition(api, node.as_str(), condition)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StepError::Work(format!("watching node {node} failed: {e}"))),
        Err(_) => Err(StepError::NotReadyInTime(timeout)),
    }
}
