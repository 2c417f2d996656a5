use std::path::PathBuf;

use clap::Args;
use kordon::context::Context;
use kordon::names::NodeName;
use kordon::output::Printer;
use kordon::plan::{self, PlanOptions};
use kordon::snapshot::{Reach, Snapshot};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Nodes that would be drained together.
    #[arg(value_name = "NODE", required = true, value_parser = NodeName::parse)]
    pub nodes: Vec<NodeName>,
    /// Plan against a dump (`kubectl get nodes,pods,pdb,deploy,rs,sts,ds -A -o json`)
    /// instead of the live cluster.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    #[command(flatten)]
    pub policy: super::drain::PolicyFlags,
}

pub async fn run(global: &GlobalArgs, args: &PlanArgs) -> super::error::Result {
    let targets = &args.nodes;
    let keep: Vec<&str> = args.nodes.iter().map(NodeName::as_str).collect();
    let options = PlanOptions {
        permissions: args.policy.permissions(),
        guards: args.policy.guards(false),
        drain_order: args.policy.drain_order(),
    };
    let report = match &args.from_file {
        Some(path) => plan::plan(&Snapshot::from_file(path, &keep)?, targets, &options)?,
        None => {
            let ctx = Context::open(&global.connection()).await?;
            let mut snapshot = Snapshot::live(&ctx.view, targets, Reach::Room).await?;
            plan::plan_finding_room(&ctx.conn, &mut snapshot, targets, &options).await?
        }
    };
    Printer::new(global.output).report(&report);
    if report.safe {
        Ok(())
    } else {
        Err(super::error::CliError::after_report(
            kordon::error::Error::UnsafePlan,
        ))
    }
}
