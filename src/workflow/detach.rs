//! The wait for the node's volumes before its maintenance, as `maintain`, `roll` and
//! the controller carry it out: until no VolumeAttachment names the node
//! ([`crate::cluster::attachments`]), at most the timeout; then the maintenance fails
//! or, when the user said so, goes on with a warning naming what is still attached.
use std::time::Duration;

use serde::Serialize;

use super::notes::Note;
use crate::cluster::Connection;
use crate::cluster::attachments::{self, DetachError};
use crate::names::NodeName;
use crate::policy::{Detach, OnDetachTimeout};

/// How the wait ended, when the maintenance goes on.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "volumes")]
pub enum Outcome {
    /// Not waited for (a timeout of 0).
    Skipped,
    /// No VolumeAttachment named the node (any more) after this long.
    Detached { seconds: f64 },
    /// Still attached at the timeout, and the user chose to go on.
    Proceeded(String),
}

/// Waits as `policy` says; a timeout is an error unless the user chose to proceed.
pub async fn wait(
    conn: &Connection,
    node: &NodeName,
    policy: Detach,
) -> Result<Outcome, DetachError> {
    if policy.timeout.is_zero() {
        return Ok(Outcome::Skipped);
    }
    decide(
        attachments::wait_detached(conn, node, policy.timeout).await,
        policy.on_timeout,
    )
}

/// What the wait's end means under the user's choice.
fn decide(
    waited: Result<Duration, DetachError>,
    on_timeout: OnDetachTimeout,
) -> Result<Outcome, DetachError> {
    match (waited, on_timeout) {
        (Ok(took), _) => Ok(Outcome::Detached {
            seconds: took.as_secs_f64(),
        }),
        (Err(e @ DetachError::StillAttached { .. }), OnDetachTimeout::Proceed) => {
            tracing::warn!("{e}; the maintenance proceeds as asked");
            Ok(Outcome::Proceeded(e.to_string()))
        }
        (Err(e), _) => Err(e),
    }
}

/// The Warning Event of a maintenance that went on with volumes attached.
pub fn proceeded(what: &str) -> Note {
    Note {
        reason: "VolumesStillAttached",
        note: format!("{what}; the maintenance proceeds as asked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left() -> DetachError {
        DetachError::StillAttached {
            node: NodeName::from("node-2"),
            waited: Duration::from_secs(300),
            left: vec!["csi-1 (PersistentVolume pv-data)".into()],
        }
    }

    #[test]
    fn volumes_left_at_the_timeout_fail_the_maintenance_unless_told_to_proceed() {
        let e = decide(Err(left()), OnDetachTimeout::Fail).expect_err("fails");
        assert_eq!(
            e.to_string(),
            "1 volume is still attached to node node-2 after 5m: csi-1 (PersistentVolume pv-data)"
        );
        match decide(Err(left()), OnDetachTimeout::Proceed) {
            Ok(Outcome::Proceeded(what)) => assert!(what.contains("csi-1"), "{what}"),
            other => panic!("expected to proceed, got {other:?}"),
        }
        assert!(matches!(
            decide(Ok(Duration::from_secs(2)), OnDetachTimeout::Fail),
            Ok(Outcome::Detached { .. })
        ));
    }
}
