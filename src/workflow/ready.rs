//! "Ready again" after maintenance: the Ready condition is True, the kubelet has shown
//! it is alive since (so a stale status from before a reboot does not count) and, when
//! a reboot is expected, the `bootID` differs.
//!
//! Alive means a Ready heartbeat newer than the one seen before the work, or the node's
//! Lease renewed after the wait began. A kubelet renews its Lease every 10 s but posts
//! an unchanged status only every 5 minutes (`nodeStatusReportFrequency`), so after
//! maintenance without a reboot the Lease is what answers in seconds.
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::wait::await_condition;

use super::StepError;
use crate::cluster::{Connection, nodes};
use crate::names::NodeName;
use crate::node_state::{NodeState, Readiness};

#[derive(Debug, Clone, Copy, Default)]
pub struct ReadyCriteria {
    /// `--expect-reboot`: the node's bootID must change.
    pub expect_reboot: bool,
}

/// What the node reported before the work started.
pub struct Snapshot {
    pub heartbeat: Option<Timestamp>,
    pub boot_id: Option<String>,
}

impl Snapshot {
    pub fn of(n: &Node) -> Self {
        Snapshot {
            heartbeat: nodes::ready_heartbeat(n),
            boot_id: boot_id(n),
        }
    }
}

fn boot_id(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .node_info
        .as_ref()
        .map(|i| i.boot_id.clone())
}

/// What shows the kubelet alive since the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alive {
    /// Only a Ready heartbeat newer than before would.
    ByHeartbeat,
    /// Its Lease was renewed since the wait began.
    ByLease,
}

/// True when the node is Ready, its kubelet alive since the work and (if expected)
/// rebooted.
pub fn is_back(n: &Node, before: &Snapshot, criteria: ReadyCriteria, alive: Alive) -> bool {
    let ready = NodeState::of(n).readiness == Readiness::Ready;
    let heartbeat_newer = match (before.heartbeat, nodes::ready_heartbeat(n)) {
        (Some(old), Some(new)) => new > old,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    let rebooted = !criteria.expect_reboot || boot_id(n) != before.boot_id;
    ready && (heartbeat_newer || alive == Alive::ByLease) && rebooted
}

/// How often the node's Lease is read while waiting, where watching it is not granted
/// (a kubelet renews it every 10 s).
const LEASE_EVERY: Duration = Duration::from_secs(3);

/// The Lease's last renewal; `None` when there is none or it cannot be read, which
/// leaves the heartbeat to show the kubelet alive.
async fn renewed(conn: &Connection, node: &NodeName) -> Option<Timestamp> {
    nodes::lease_renewed(conn, node)
        .await
        .inspect_err(|e| tracing::debug!("{e}"))
        .ok()
        .flatten()
}

/// Resolves once the node's Lease is renewed after `since` (its renewal when the wait
/// began), seen by watching it: the gate ends with the renewal rather than up to a
/// poll later. Where watching Leases is not granted, it reads the Lease every
/// [`LEASE_EVERY`]. Never resolves if the node has no Lease.
async fn lease_renewed(conn: &Connection, node: &NodeName, since: Option<Timestamp>) {
    let after = |t: Option<Timestamp>| t.is_some_and(|t| since.is_none_or(|s| t > s));
    let leases: Api<Lease> = Api::namespaced(conn.client.clone(), nodes::NODE_LEASES);
    let seen = await_condition(leases, node.as_str(), |l: Option<&Lease>| {
        after(
            l.and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
                .map(|t| t.0),
        )
    })
    .await;
    if let Err(e) = seen {
        tracing::debug!("cannot watch the node lease of {node} ({e}); reading it instead");
        loop {
            tokio::time::sleep(LEASE_EVERY).await;
            if after(renewed(conn, node).await) {
                return;
            }
        }
    }
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
    let back = async {
        let since = renewed(conn, node).await;
        let with_heartbeat = await_condition(api.clone(), node.as_str(), |n: Option<&Node>| {
            n.is_some_and(|n| is_back(n, before, criteria, Alive::ByHeartbeat))
        });
        let with_lease = async {
            lease_renewed(conn, node, since).await;
            await_condition(api.clone(), node.as_str(), |n: Option<&Node>| {
                n.is_some_and(|n| is_back(n, before, criteria, Alive::ByLease))
            })
            .await
        };
        tokio::select! {
            r = with_heartbeat => r,
            r = with_lease => r,
        }
    };
    match tokio::time::timeout(timeout, back).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StepError::Work(format!("watching node {node} failed: {e}"))),
        Err(_) => Err(StepError::NotReadyInTime(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ready: &str, heartbeat: &str, boot: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": "n" },
            "status": {
                "conditions": [{ "type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat }],
                "nodeInfo": {
                    "bootID": boot, "architecture": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_stale_heartbeat_counts_only_once_the_lease_shows_the_kubelet_alive() {
        let before = Snapshot::of(&node("True", "2026-01-01T10:00:00Z", "a"));
        let same = node("True", "2026-01-01T10:00:00Z", "a");
        let later = node("True", "2026-01-01T10:00:10Z", "a");
        let any = ReadyCriteria::default();
        assert!(!is_back(&same, &before, any, Alive::ByHeartbeat));
        assert!(is_back(&later, &before, any, Alive::ByHeartbeat));
        assert!(is_back(&same, &before, any, Alive::ByLease));
        assert!(!is_back(
            &node("Unknown", "2026-01-01T10:00:10Z", "a"),
            &before,
            any,
            Alive::ByLease
        ));
        // An expected reboot still needs a new bootID, whatever says the node is alive.
        let reboot = ReadyCriteria {
            expect_reboot: true,
        };
        assert!(!is_back(&later, &before, reboot, Alive::ByLease));
        assert!(is_back(
            &node("True", "2026-01-01T10:00:10Z", "b"),
            &before,
            reboot,
            Alive::ByHeartbeat
        ));
    }
}
