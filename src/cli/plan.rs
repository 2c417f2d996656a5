use std::path::PathBuf;

use clap::Args;
use kordon::context::Context;
use kordon::names::NodeName;
use kordon::output::Printer;
use kordon::plan::{self, PlanOptions};
use kordon::snapshot::{Reach, Snapshot, Then};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Nodes that would be drained together (with --fleet: the roll's nodes).
    #[arg(value_name = "NODE", required_unless_present_any = ["fleet", "selector"], value_parser = NodeName::parse)]
    pub nodes: Vec<NodeName>,
    /// Forecast a roll instead: when each node would start and end under the roll's
    /// rules (the flags below, as `roll` takes them), what it would wait for, and when
    /// the round would be done. Nothing is changed.
    #[arg(long)]
    pub fleet: bool,
    /// With --fleet: the nodes matching this label selector.
    #[arg(short = 'l', long, requires = "fleet", conflicts_with = "nodes")]
    pub selector: Option<String>,
    /// With --fleet: the time each node takes (default: the median of the nodes done
    /// under the lock, else 10m).
    #[arg(long, requires = "fleet", value_parser = super::values::duration, value_name = "DURATION")]
    pub expect_node_time: Option<std::time::Duration>,
    #[command(flatten)]
    pub roll: super::roll::PolicyArgs,
    #[command(flatten)]
    pub lock: super::roll::LockArgs,
    /// Plan against a dump (`kubectl get nodes,pods,pdb,deploy,rs,sts,ds -A -o json`)
    /// instead of the live cluster.
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    #[command(flatten)]
    pub policy: super::drain::PolicyFlags,
}

pub async fn run(global: &GlobalArgs, args: &PlanArgs) -> super::error::Result {
    if args.fleet {
        return fleet(global, args).await;
    }
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
            let mut snapshot = Snapshot::live(&ctx.view, targets, Reach::Room, Then::Look).await?;
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

/// `plan --fleet`: the roll's forecast.
async fn fleet(global: &GlobalArgs, args: &PlanArgs) -> super::error::Result {
    let ctx = Context::open(&global.connection()).await?;
    let selection = super::NodeSelection {
        nodes: args.nodes.clone(),
        selector: args.selector.clone(),
    };
    let targets = selection.resolve(&ctx.conn, false).await?;
    let options = kordon::fleet::ForecastOptions {
        rules: args.roll.rules(),
        lock_namespace: args.lock.lock_namespace.clone(),
        node_time: args.expect_node_time,
    };
    let forecast = kordon::fleet::forecast(&ctx, targets, &options).await?;
    Printer::new(global.output).report(&forecast);
    Ok(())
}
