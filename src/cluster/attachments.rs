//! The node's VolumeAttachments (`storage.k8s.io/v1`), waited away before its
//! maintenance: a reboot or an upgrade with a volume still attached can corrupt it or
//! strand it on the node. The attach/detach controller detaches a volume once no pod
//! on the node uses it, and the CSI attacher deletes the VolumeAttachment when the
//! volume is detached, so "none names the node" is "its volumes are free".
//!
//! The API server offers no field selector on `spec.nodeName` for VolumeAttachments
//! (only `metadata.name`), so this lists and watches all of them, which are few (one
//! per attached volume), and keeps those naming the node.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::{ClusterError, Connection};
use crate::names::NodeName;

/// Whether the attachment names the node.
pub fn names(attachment: &VolumeAttachment, node: &NodeName) -> bool {
    attachment.spec.node_name == node.as_str()
}

/// The volumes an attachment holds on its node, for people: the PersistentVolume, or
/// the attachment's own name for an inline volume.
pub fn describe(attachment: &VolumeAttachment) -> String {
    let volume = attachment.spec.source.persistent_volume_name.as_deref();
    match volume {
        Some(pv) => format!("{} (PersistentVolume {pv})", attachment.name_any()),
        None => attachment.name_any(),
    }
}

/// Why the wait ended without the node's volumes free.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(
        "{} still attached to node {node} after {}: {}",
        plural(left.len()),
        humantime::format_duration(*waited),
        left.join(", ")
    )]
    StillAttached {
        node: NodeName,
        waited: Duration,
        /// The attachments left, described.
        left: Vec<String>,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn plural(n: usize) -> String {
    match n {
        1 => "1 volume is".into(),
        n => format!("{n} volumes are"),
    }
}

/// Waits until no VolumeAttachment names the node, at most `timeout`, and says how
/// long it took. Attachments that cannot be read end the wait at once on a 403; other
/// errors are retried until the timeout.
pub async fn wait_detached(
    conn: &Connection,
    node: &NodeName,
    timeout: Duration,
) -> Result<Duration, DetachError> {
    let started = tokio::time::Instant::now();
    let until = started + timeout;
    let api: Api<VolumeAttachment> = Api::all(conn.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Attachments naming the node: the last whole list, then each change.
    let mut left: BTreeMap<String, String> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, String>> = None;
    let mut synced = false;
    loop {
        if synced && left.is_empty() {
            return Ok(started.elapsed());
        }
        let event = match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(event)) => event,
            // The watcher's stream ends only when dropped.
            Ok(None) | Err(_) => {
                return Err(DetachError::StillAttached {
                    node: node.clone(),
                    waited: started.elapsed(),
                    left: left.into_values().collect(),
                });
            }
        };
        let keep = |map: &mut BTreeMap<String, String>, a: &VolumeAttachment| {
            if names(a, node) {
                map.insert(a.name_any(), describe(a));
            } else {
                map.remove(&a.name_any());
            }
        };
        match event {
            Ok(watcher::Event::Init) => listing = Some(Default::default()),
            Ok(watcher::Event::InitApply(a)) => keep(listing.get_or_insert_default(), &a),
            Ok(watcher::Event::InitDone) => {
                left = listing.take().unwrap_or_default();
                synced = true;
            }
            Ok(watcher::Event::Apply(a)) => keep(&mut left, &a),
            Ok(watcher::Event::Delete(a)) => {
                left.remove(&a.name_any());
            }
            Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
            | Err(watcher::Error::WatchStartFailed(kube::Error::Api(s)))
                if s.code == 403 =>
            {
                let e = kube::Error::Api(s);
                return Err(conn.error("watch volumeattachments", e).into());
            }
            Err(e) => tracing::debug!("watch of volumeattachments: {e}; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(name: &str, node: &str, pv: Option<&str>) -> VolumeAttachment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": {
                "attacher": "csi.example.com",
                "nodeName": node,
                "source": { "persistentVolumeName": pv },
            },
        }))
        .expect("volume attachment")
    }

    #[test]
    fn an_attachment_names_its_node_and_its_volume() {
        let node = NodeName::from("node-2");
        let a = attachment("csi-1", "node-2", Some("pv-data"));
        assert!(names(&a, &node));
        assert!(!names(&attachment("csi-2", "node-1", None), &node));
        assert_eq!(describe(&a), "csi-1 (PersistentVolume pv-data)");
        assert_eq!(describe(&attachment("csi-3", "node-2", None)), "csi-3");
    }
}
