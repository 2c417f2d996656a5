//! Keeps a node cordoned while it is out for maintenance. Someone running
//! `kubectl uncordon` (or another tool doing it) mid-drain or mid-reboot would let the
//! scheduler put pods on a node that is about to go down; kordon cordons it again at
//! once and says so, on the terminal and as a Warning Event on the node.
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::mark::{Mark, Phase};
use super::{Job, RollProgress};
use crate::cluster::events::Severity;
use crate::cluster::nodes::{self, Annotations, DryRun};
use crate::names::NodeName;
use crate::node_state::NodeState;

/// Watches the node until dropped. The node's own mark says whether it is out: from
/// the cordon that enters `draining` until the uncordon that enters `verifying`
/// (the same patch), so this never fights kordon's own uncordon.
pub(super) async fn keep_cordoned(job: &Job<'_>, name: &NodeName) {
    let api: Api<Node> = Api::all(job.conn.client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut nodes = std::pin::pin!(
        watcher(api, config)
            .backoff(crate::cluster::Reconnect::default())
            .applied_objects()
    );
    while let Some(event) = nodes.next().await {
        let node = match event {
            Ok(node) => node,
            // The outage is told once, by the view's watches and requests.
            Err(e) if crate::cluster::ClusterError::watch_lost_server(&e) => {
                tracing::debug!("watching node {name} to keep it cordoned: {e}");
                continue;
            }
            Err(e) => {
                tracing::warn!("watching node {name} to keep it cordoned: {e}");
                continue;
            }
        };
        if !taken_back(&node, &job.run) {
            continue;
        }
        match nodes::patch(
            job.conn,
            name,
            Some(true),
            &Annotations::new(),
            DryRun::None,
        )
        .await
        {
            Ok(_) => {
                (job.on_progress)(RollProgress::Recordoned { node: name.clone() });
                job.events
                    .publish(
                        &node,
                        Severity::Warning,
                        "Recordoned",
                        "uncordoned by someone else while out for maintenance; cordoned again"
                            .into(),
                    )
                    .await;
            }
            Err(e) => tracing::warn!("cannot cordon node {name} again: {e}"),
        }
    }
}

/// Schedulable although this run has it out for maintenance.
fn taken_back(node: &Node, run: &str) -> bool {
    !NodeState::of(node).cordoned
        && Mark::of(node).is_some_and(|m| m.run == run && m.phase < Phase::Verifying)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::mark::node_with;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(unschedulable: bool, run: &str, phase: Phase) -> Node {
        let mut mark = Mark::new(run, "kube-system", false, Vec::new());
        mark.enter(phase);
        let mut node = node_with(mark.annotations());
        node.spec = Some(NodeSpec {
            unschedulable: unschedulable.then_some(true),
            ..Default::default()
        });
        node
    }

    #[test]
    fn only_an_uncordon_by_someone_else_while_out_is_taken_back() {
        for phase in [Phase::Draining, Phase::Maintaining, Phase::AwaitingReady] {
            assert!(taken_back(&node(false, "r", phase), "r"), "{phase}");
            assert!(!taken_back(&node(true, "r", phase), "r"), "{phase}");
        }
        // kordon's own uncordon enters `verifying` in the same patch.
        assert!(!taken_back(&node(false, "r", Phase::Verifying), "r"));
        assert!(!taken_back(&node(false, "r", Phase::Done), "r"));
        // Another run's node is not this run's to hold.
        assert!(!taken_back(&node(false, "other", Phase::Maintaining), "r"));
        assert!(!taken_back(&Node::default(), "r"));
    }
}
