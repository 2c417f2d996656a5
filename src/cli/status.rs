use std::collections::HashSet;

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kordon::cluster::Connection;
use kordon::cluster::view::for_each_page;
use kordon::output::Printer;
use kordon::output::status::StatusReport;
use kordon::status::PodsByNode;
use kube::Api;
use kube::api::ListParams;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub targets: super::NodeSelection,
    #[command(flatten)]
    pub lock: super::roll::LockArgs,
}

/// Up to this many nodes, their pods are read node by node (a field selector each);
/// beyond, one paged pass over every pod costs fewer requests.
const NODE_BY_NODE: usize = 20;

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> super::error::Result {
    let conn = Connection::open(&global.connection()).await?;
    let node_list = args.targets.resolve(&conn, true).await?;
    let names: HashSet<&str> = node_list
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let everything = args.targets.nodes.is_empty() && args.targets.selector.is_none();
    let api: Api<Pod> = Api::all(conn.client.clone());
    let mut pods = PodsByNode::default();
    if !everything && names.len() <= NODE_BY_NODE {
        for node in &names {
            let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
            let action = format!("list pods on node {node}");
            for_each_page(&api, &conn, &action, on_node, |page| {
                pods.add(&page, |_| true)
            })
            .await?;
        }
    } else {
        for_each_page(&api, &conn, "list pods", ListParams::default(), |page| {
            pods.add(&page, |n| names.contains(n))
        })
        .await?;
    }
    // The run record is extra: without rights to read the lease, status still works.
    let run = match kordon::fleet::run::last(&conn, &args.lock.lock_namespace).await {
        Ok(run) => run,
        Err(e) => {
            tracing::info!("cannot read the roll's lease: {e}");
            None
        }
    };
    let report = StatusReport {
        run,
        nodes: kordon::status::build(&node_list, pods),
    };
    Printer::new(global.output).report(&report);
    Ok(())
}
