use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kordon::cluster::Connection;
use kordon::output::Printer;
use kordon::output::status::StatusReport;
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

pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<()> {
    let conn = Connection::open(&global.connection()).await?;
    let node_list = args.targets.resolve(&conn, true).await?;
    let pods: Api<Pod> = Api::all(conn.client.clone());
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| conn.error("list pods", e))?
        .items;
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
        nodes: kordon::status::build(&node_list, &pods),
    };
    Printer::new(global.output).report(&report);
    Ok(())
}
