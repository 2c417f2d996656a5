//! "Ready again" after maintenance: the Ready condition is True, the kubelet has shown
//! it is alive since (so a stale status from before a reboot does not count) and, when
//! a reboot is expected, the `bootID` differs.
//!
//! Alive means a Ready heartbeat newer than the one seen before the work, or the node's
//! Lease renewed after the wait began. A kubelet renews its Lease every 10 s but posts
//! an unchanged status only every 5 minutes (`nodeStatusReportFrequency`), so after
//! maintenance without a reboot the Lease is what answers in seconds.
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::watcher;

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

fn renew_time(lease: Option<&Lease>) -> Option<Timestamp> {
    lease
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0)
}

/// Resolves once the node's Lease is renewed after the wait began, seen by watching it:
/// the renewal its first list shows is the one to beat, and the gate ends with the next
/// rather than up to a poll later. Where watching Leases is not granted, it reads the
/// Lease every [`LEASE_EVERY`]. Never resolves if the node has no Lease.
async fn lease_renewed(conn: &Connection, node: &NodeName) {
    let leases: Api<Lease> = Api::namespaced(conn.client.clone(), nodes::NODE_LEASES);
    let mut seen = std::pin::pin!(watcher::watch_object(leases, node.as_str()));
    let mut first: Option<Option<Timestamp>> = None;
    while let Some(event) = seen.next().await {
        match event {
            Ok(lease) => {
                let now = renew_time(lease.as_ref());
                match first {
                    None => first = Some(now),
                    Some(since) if now.is_some_and(|t| since.is_none_or(|s| t > s)) => return,
                    Some(_) => {}
                }
            }
            Err(e) => {
                tracing::debug!("cannot watch the node lease of {node} ({e}); reading it instead");
                break;
            }
        }
    }
    let since = match first {
        Some(since) => since,
        None => renewed(conn, node).await,
    };
    loop {
        tokio::time::sleep(LEASE_EVERY).await;
        if renewed(conn, node)
            .await
            .is_some_and(|t| since.is_none_or(|s| t > s))
        {
            return;
        }
    }
}

/// Waits, by watching the node (one watch) and its Lease, until it is back or the
/// timeout passes.
pub async fn wait(
    conn: &Connection,
    node: &NodeName,
    before: &Snapshot,
    criteria: ReadyCriteria,
    timeout: Duration,
) -> Result<(), StepError> {
    let api: Api<Node> = Api::all(conn.client.clone());
    let back = async {
        let mut updates = std::pin::pin!(watcher::watch_object(api, node.as_str()));
        let mut renewal = std::pin::pin!(lease_renewed(conn, node));
        let (mut latest, mut alive) = (None::<Node>, Alive::ByHeartbeat);
        loop {
            tokio::select! {
                update = updates.next() => match update {
                    Some(Ok(n)) => latest = n,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the watch ended".to_string()),
                },
                () = &mut renewal, if alive == Alive::ByHeartbeat => alive = Alive::ByLease,
            }
            if latest
                .as_ref()
                .is_some_and(|n| is_back(n, before, criteria, alive))
            {
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(timeout, back).await {
        Ok(Ok(())) => Ok(()),
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
