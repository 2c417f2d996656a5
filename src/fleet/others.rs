//! What others have out while a roll runs: the nodes NodeMaintenances hold (the
//! controller's, a MaintenancePlan's), and the selected nodes someone else has out of
//! service (`--count-others-out`). They take places in the roll's caps, as they do in a
//! plan's. They come and go during a run, so the roll watches them and looks again
//! before it starts a node.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use super::unavailable::{self, OutNode};
use super::{Job, RollProgress};
use crate::api::NodeMaintenance;
use crate::api::node_maintenance::StatusPhase;
use crate::cluster::view::{View, Watched};
use crate::cluster::{ClusterError, Connection, nodes};
use crate::names::NodeName;

/// What others have out now, outside the roll's own nodes.
pub(super) struct Look {
    /// Nodes NodeMaintenances hold.
    pub held: BTreeSet<String>,
    /// Selected nodes someone else has out, by name, with the node as last seen.
    pub by_others: Vec<(OutNode, Arc<Node>)>,
}

impl Look {
    pub fn count(&self) -> usize {
        self.held.len() + self.by_others.len()
    }
}

/// The roll's watches of what others have out, what it last said of them, and every
/// node someone else had out during the run.
pub(super) struct Elsewhere {
    maintenances: Option<Maintenances>,
    nodes: Option<Arc<Watched<Node>>>,
    scope: Option<BTreeSet<String>>,
    told: Vec<OutNode>,
    seen: BTreeMap<NodeName, OutNode>,
}

impl Elsewhere {
    /// Starts the watches; `scope`: the selected nodes, when those someone else has out
    /// count, and `selector` the label selector that chose them, if one did (the watch
    /// then holds those nodes only). A watch that fails to start counts none and says
    /// so: the roll's own nodes still keep within the cap.
    pub async fn watch(
        view: &View,
        scope: Option<BTreeSet<String>>,
        selector: Option<&str>,
    ) -> Self {
        let maintenances = Maintenances::watch(view)
            .await
            .inspect_err(|e| tracing::warn!("cannot watch the nodes NodeMaintenances hold: {e}"))
            .ok();
        let nodes = match scope.is_some() {
            true => view
                .nodes(selector)
                .await
                .inspect_err(|e| tracing::warn!("cannot watch the nodes someone else has out: {e}"))
                .ok(),
            false => None,
        };
        Self {
            maintenances,
            nodes,
            scope,
            told: Vec::new(),
            seen: BTreeMap::new(),
        }
    }

    /// What others have out now beside the roll's own nodes (`out`); nothing once
    /// nothing is left to start (`done`). A change in the nodes someone else has out is
    /// told as it is seen.
    pub async fn look(&mut self, job: &Job<'_>, out: &HashMap<String, Node>, done: bool) -> Look {
        if done {
            return Look {
                held: BTreeSet::new(),
                by_others: Vec::new(),
            };
        }
        let mut held = match &self.maintenances {
            Some(m) => m.held(job.conn).await,
            None => BTreeSet::new(),
        };
        held.retain(|n| !out.contains_key(n));
        let by_others = self.by_others(out);
        let now: Vec<OutNode> = by_others.iter().map(|(o, _)| o.clone()).collect();
        if self.told != now {
            (job.on_progress)(RollProgress::OutByOthers { nodes: now.clone() });
            self.told = now;
        }
        let seen = by_others.iter().map(|(o, _)| (o.node.clone(), o.clone()));
        self.seen.extend(seen);
        Look { held, by_others }
    }

    /// The selected nodes someone else has out now, outside the roll's own, by name.
    fn by_others(&self, out: &HashMap<String, Node>) -> Vec<(OutNode, Arc<Node>)> {
        let (Some(nodes), Some(scope)) = (&self.nodes, &self.scope) else {
            return Vec::new();
        };
        let all = nodes.state();
        let mut found: Vec<(OutNode, Arc<Node>)> = unavailable::in_scope(&all, scope)
            .into_iter()
            .filter(|(o, _)| !out.contains_key(o.node.as_str()))
            .map(|(o, n)| (o, n.clone()))
            .collect();
        found.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        found
    }

    /// The node as the watch has it now (the queue's copy is from the roll's start: a
    /// cordon lifted since must not be recorded as someone else's); `node` itself when
    /// the nodes are not watched.
    pub fn latest(&self, node: Node) -> Node {
        let name = NodeName::new(node.metadata.name.as_deref().unwrap_or_default());
        self.current(&name).unwrap_or(node)
    }

    /// The node as the watch has it now, if the nodes are watched.
    pub fn current(&self, name: &NodeName) -> Option<Node> {
        let at = kube::runtime::reflector::ObjectRef::<Node>::new(name.as_str());
        self.nodes
            .as_ref()?
            .store()
            .get(&at)
            .map(Arc::unwrap_or_clone)
    }

    /// Every selected node someone else had out during the run, with the last reason seen.
    pub fn counted(self) -> Vec<OutNode> {
        self.seen.into_values().collect()
    }
}

/// The NodeMaintenances, watched for the length of the roll.
struct Maintenances(Option<Arc<Watched<NodeMaintenance>>>);

impl Maintenances {
    /// Starts the watch; without kordon's CRDs there are none to count.
    pub async fn watch(view: &View) -> Result<Self, ClusterError> {
        view.everywhere("NodeMaintenances").await.map(Self)
    }

    /// The nodes NodeMaintenances have out now: those under way, and failed ones whose
    /// node they still hold.
    pub async fn held(&self, conn: &Connection) -> BTreeSet<String> {
        let Some(watched) = &self.0 else {
            return BTreeSet::new();
        };
        let mut held = BTreeSet::new();
        for nm in watched.state() {
            // Only a failed one needs its node read, to see whether it still holds it.
            let failed = nm.status.as_ref().and_then(|s| s.phase) == Some(StatusPhase::Failed);
            let node = match failed {
                true => nodes::get(conn, &NodeName::from(nm.spec.node_name.as_str()))
                    .await
                    .ok(),
                false => None,
            };
            if nm.has_node_out(node.as_ref()) {
                held.insert(nm.spec.node_name.clone());
            }
        }
        held
    }
}
