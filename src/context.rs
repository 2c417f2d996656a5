//! What the work of one process shares: the connection, the one view of the cluster,
//! the rights already granted, and the turns that pace evictions. Passed to every
//! drain (a roll's drains share one), instead of process-wide statics.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::budget::BudgetKey;
use crate::cluster::access::{self, Granted, Permission};
use crate::cluster::view::View;
use crate::cluster::{ClusterError, Connection, ConnectionOptions};
use crate::pod::Uid;
use crate::workload::WorkloadId;

pub struct Context {
    pub conn: Connection,
    pub view: View,
    pub granted: Granted,
    /// Names what this process creates in the cluster (see [`crate::drain::shared`]).
    pub run: String,
    pub(crate) turns: Turns,
}

impl Context {
    pub fn new(conn: Connection) -> Self {
        Self {
            view: View::new(&conn),
            conn,
            granted: Granted::default(),
            run: format!(
                "{:x}",
                (jiff::Timestamp::now().as_millisecond() as u64 & 0xffff_ffff)
                    ^ u64::from(std::process::id())
            ),
            turns: Turns::default(),
        }
    }

    /// Connects as [`Connection::open`] does.
    pub async fn open(options: &ConnectionOptions) -> Result<Self, ClusterError> {
        Ok(Self::new(Connection::open(options).await?))
    }

    /// Fails naming every permission of `wanted` not granted (see [`access::require`]).
    pub async fn require(&self, action: &str, wanted: &[Permission]) -> Result<(), ClusterError> {
        access::require(&self.conn, &self.granted, action, wanted).await
    }

    /// The permissions of `wanted` not granted, for what kordon can do without.
    pub async fn missing(&self, wanted: &[Permission]) -> Result<Vec<Permission>, ClusterError> {
        access::missing(&self.conn, &self.granted, wanted).await
    }
}

/// Shared by every drain of a [`Context`], because a roll drains several nodes at once
/// and two pods of one workload on different nodes must still take turns.
#[derive(Default)]
pub struct Turns {
    /// One decision at a time per workload or budget.
    locks: Mutex<HashMap<Turn, Arc<tokio::sync::Mutex<()>>>>,
    /// UIDs kordon evicted: no longer counted Ready even before the watch shows them
    /// terminating.
    pub(crate) evicted: Mutex<HashSet<Uid>>,
}

/// What pods take turns under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Turn {
    /// The workload's implicit budget.
    Workload(WorkloadId),
    /// A PodDisruptionBudget that held one of the pods.
    Budget(BudgetKey),
}

impl Turns {
    /// The pod is on its way out by kordon's hand: it no longer counts as serving.
    pub(crate) fn mark_evicted(&self, pod: &k8s_openapi::api::core::v1::Pod) {
        if let (Ok(mut evicted), Some(uid)) = (self.evicted.lock(), Uid::of(pod)) {
            evicted.insert(uid);
        }
    }

    /// One turn at a time per workload or budget.
    pub(crate) fn lock_for(&self, turn: Turn) -> Arc<tokio::sync::Mutex<()>> {
        match self.locks.lock() {
            Ok(mut locks) => locks.entry(turn).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }
}
