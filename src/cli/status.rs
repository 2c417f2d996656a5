use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kordon::cluster::Connection;
use kordon::cluster::nodes;
use kordon::names::NodeName;
use kordon::output::Printer;
use kordon::output::status::StatusReport;
use kube::Api;
use kube::api::ListParams;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Nodes to show (default: all).
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Show the nodes matching this label selector.
    #[arg(short = 'l', long, conflicts_with = "nodes")]
    pub selector: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<()> {
    let conn = Connection::open(&global.connection()).await?;
    let node_list = if args.nodes.is_empty() {
        nodes::select(&conn, args.selector.as_deref().unwrap_or_default()).await?
    } else {
        let mut found = Vec::new();
        for name in &args.nodes {
            found.push(nodes::get(&conn, &NodeName::new(name.as_str())).await?);
        }
        found
    };
    let pods: Api<Pod> = Api::all(conn.client.clone());
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| conn.error("list pods", e))?
        .items;
    let report = StatusReport {
        nodes: kordon::status::build(&node_list, &pods),
    };
    Printer::new(global.output).report(&report);
    Ok(())
}
