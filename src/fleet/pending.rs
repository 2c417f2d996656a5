//! The nodes still waiting in a round carry kordon's `PreferNoSchedule` taint
//! ([`TAINT`]), so that the scheduler places the pods the round evicts on nodes that
//! are done, or not in the round, where it can, instead of on a node whose own drain
//! would evict them again. Only a preference: with nowhere else to go, a pod still
//! lands on a pending node. A node loses the taint when its maintenance ends (done or
//! failed), and every node at the end of the run, however it ends.
use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Taint};

use super::name_of;
use crate::cluster::nodes::{self, Tainting};
use crate::cluster::{ClusterError, Connection};
use crate::names::NodeName;

/// The taint's key; its value names the run or plan.
pub const TAINT: &str = "kordon.dev/pending-maintenance";

/// How many nodes are tainted at once.
const AT_ONCE: usize = 8;

/// Whether the node carries kordon's pending taint.
pub fn has(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TAINT))
}

/// The taint for nodes pending in `round` (a roll's run, a plan's name).
pub fn taint(round: &str) -> Taint {
    Taint {
        key: TAINT.into(),
        value: Some(round.into()),
        effect: "PreferNoSchedule".into(),
        time_added: None,
    }
}

/// Puts the taint on (`Some`, with the round) or takes it off a node; `seen` is a
/// recent copy of it, if any (see [`nodes::set_taint`]).
pub async fn set(
    conn: &Connection,
    node: &NodeName,
    round: Option<&str>,
    seen: Option<Node>,
) -> Result<Node, ClusterError> {
    let what = match round {
        Some(_) => format!("taint pending node {node} {TAINT}"),
        None => format!("lift {TAINT} from node {node}"),
    };
    let change = Tainting {
        key: TAINT,
        taint: round.map(taint),
        what: &what,
    };
    nodes::set_taint(conn, node, &change, &nodes::Annotations::new(), seen).await
}

/// The nodes a roll has tainted and not yet lifted the taint from.
pub(crate) struct Pending {
    run: Option<String>,
    tainted: BTreeSet<NodeName>,
}

impl Pending {
    /// `run`: the roll's id, or `None` when it taints nothing (`--taint-pending=false`).
    pub fn new(run: Option<&str>) -> Self {
        Self {
            run: run.map(str::to_string),
            tainted: BTreeSet::new(),
        }
    }

    /// Taints the nodes waiting to start, and lifts it from the selected nodes that are
    /// not (done in an earlier run that stopped before it could). A node that cannot be
    /// tainted is only worse placed: said, not fatal.
    pub async fn put_on<'n>(
        &mut self,
        conn: &Connection,
        waiting: impl Iterator<Item = &'n Node>,
        selected: &[Node],
    ) {
        let Some(run) = self.run.clone() else {
            return;
        };
        let waiting: Vec<&Node> = waiting.collect();
        let names: BTreeSet<NodeName> = waiting.iter().map(|n| name_of(n)).collect();
        let stale = selected
            .iter()
            .filter(|n| has(n) && !names.contains(&name_of(n)))
            .map(|n| (n, None));
        let changes = waiting
            .iter()
            .map(|n| (*n, Some(run.as_str())))
            .chain(stale);
        let done: Vec<(NodeName, bool)> = futures::stream::iter(changes)
            .map(|(node, round)| async move {
                let name = name_of(node);
                let result = set(conn, &name, round, Some(node.clone())).await;
                if let Err(e) = &result {
                    tracing::warn!("{e}");
                }
                (name, result.is_ok() && round.is_some())
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        self.tainted
            .extend(done.into_iter().filter(|(_, t)| *t).map(|(n, _)| n));
    }

    /// Lifts the taint from a node whose maintenance ended; `seen`, a recent copy.
    pub async fn lift(&mut self, conn: &Connection, node: &NodeName, seen: Option<Node>) {
        if self.tainted.remove(node)
            && let Err(e) = set(conn, node, None, seen).await
        {
            tracing::warn!("{e}");
        }
    }

    /// Lifts the taint from every node still carrying it: the run is over.
    pub async fn lift_all(&mut self, conn: &Connection) {
        let left = std::mem::take(&mut self.tainted);
        futures::stream::iter(left)
            .for_each_concurrent(AT_ONCE, |node| async move {
                if let Err(e) = set(conn, &node, None, None).await {
                    tracing::warn!("{e}");
                }
            })
            .await;
    }
}
