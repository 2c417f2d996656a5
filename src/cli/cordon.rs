use clap::Args;
use kordon::cluster::Connection;
use kordon::cluster::nodes::{self, DryRun};
use kordon::names::NodeName;
use kordon::node_state::NodeState;
use kordon::output::Printer;
use kordon::output::cordon::{Transition, Transitions};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct CordonArgs {
    #[command(flatten)]
    pub targets: super::NodeSelection,
    /// Only print what would change (client), or have the server validate it (server).
    #[arg(long, value_enum, default_value_t, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
}

/// Cordon (`unschedulable = true`) or uncordon. Every named node is looked up before
/// any is changed, so one unknown name changes nothing.
pub async fn run(global: &GlobalArgs, args: &CordonArgs, cordon: bool) -> super::error::Result {
    let conn = Connection::open(&global.connection()).await?;
    let targets = args.targets.resolve(&conn, false).await?;

    let mut report = Transitions {
        nodes: Vec::new(),
        dry_run: args.dry_run != DryRun::None,
    };
    for node in targets {
        let name = NodeName::new(node.metadata.name.clone().unwrap_or_default());
        let before = NodeState::of(&node);
        let after = if before.cordoned == cordon {
            before
        } else if args.dry_run == DryRun::Client {
            before.with_cordoned(cordon)
        } else {
            NodeState::of(&nodes::set_unschedulable(&conn, &name, cordon, args.dry_run).await?)
        };
        report.nodes.push(Transition {
            node: name,
            before,
            after,
            changed: before != after,
        });
    }
    Printer::new(global.output).report(&report);
    Ok(())
}
