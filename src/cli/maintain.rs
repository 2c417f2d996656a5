use std::io::IsTerminal;
use std::time::Duration;

use super::error::CliError;

use clap::Args;
use kordon::cluster::access::Permission;
use kordon::context::Context;
use kordon::names::NodeName;
use kordon::output::Printer;
use kordon::policy::{Detach, OnDetachTimeout};
use kordon::workflow::gate::{Gate, Gates};
use kordon::workflow::{self, MaintainOptions, Progress, ReadyCriteria, Work};

use super::GlobalArgs;
use super::drain::DrainFlags;
use super::interrupt::on_ctrl_c;

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// The node to maintain.
    #[arg(value_name = "NODE", value_parser = NodeName::parse)]
    pub node: NodeName,
    #[command(flatten)]
    pub drain: DrainFlags,
    /// Uncordon the node even if a step fails (default: leave it cordoned).
    #[arg(long)]
    pub uncordon_on_failure: bool,
    #[command(flatten)]
    pub work: WorkArgs,
}

/// What the maintenance is and how a node must come back from it; `maintain` and
/// `roll` share them.
#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Pause after each drain until you press Enter, instead of running a command.
    #[arg(long, conflicts_with = "command")]
    pub manual: bool,
    /// The node must come back with a new bootID (it reboots during maintenance).
    #[arg(long)]
    pub expect_reboot: bool,
    /// How long a node may take to be Ready again after the maintenance.
    #[arg(long, value_parser = super::values::positive_duration, default_value = "10m")]
    pub ready_timeout: Duration,
    /// How long each health gate may take (DaemonSet pods Ready; workloads recovered).
    #[arg(long, value_parser = super::values::positive_duration, default_value = "10m")]
    pub gate_timeout: Duration,
    /// Leave a health gate out (repeatable): `daemonsets` (the node's DaemonSet pods
    /// Ready before it is uncordoned) or `workloads` (the drained workloads back at full
    /// Ready before the node counts as done).
    #[arg(long, value_enum, value_name = "GATE")]
    pub skip_gate: Vec<Gate>,
    /// How long to wait, after the drain and before the maintenance, until no
    /// VolumeAttachment names the node (0: do not wait).
    #[arg(long, value_parser = super::values::duration, default_value = "5m")]
    pub volume_detach_timeout: Duration,
    /// What happens when volumes are still attached at --volume-detach-timeout: `fail`
    /// (the node stays cordoned) or `proceed` (warn and run the maintenance anyway).
    #[arg(long, value_enum, default_value = "fail")]
    pub on_detach_timeout: OnDetachTimeout,
    /// The maintenance command and its arguments, after `--`. Runs with KORDON_NODE set.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl WorkArgs {
    pub fn ready(&self) -> ReadyCriteria {
        ReadyCriteria {
            expect_reboot: self.expect_reboot,
        }
    }

    pub fn gates(&self) -> Gates {
        Gates::new(self.gate_timeout, &self.skip_gate)
    }

    pub fn detach(&self) -> Detach {
        Detach {
            timeout: self.volume_detach_timeout,
            on_timeout: self.on_detach_timeout,
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &MaintainArgs) -> super::error::Result {
    let work = work(args.work.manual, &args.work.command, "kordon maintain NODE")?;
    let drain = args.drain.options(on_ctrl_c(
        "`kordon status NODE` shows where the node was left",
    ))?;
    let ctx = Context::open(&global.connection()).await?;
    // The drain checks its own rights; after the work, maintain watches the node to see
    // it Ready again. Asked now, so a missing right stops it before the drain, not
    // with the node drained and the work done.
    let mut watch_node = vec![
        Permission::cluster("list", "", "nodes"),
        Permission::cluster("watch", "", "nodes"),
    ];
    if !args.work.volume_detach_timeout.is_zero() {
        watch_node.extend([
            Permission::cluster("list", "storage.k8s.io", "volumeattachments"),
            Permission::cluster("watch", "storage.k8s.io", "volumeattachments"),
        ]);
    }
    ctx.require(&format!("maintain node {}", args.node), &watch_node)
        .await?;
    let printer = Printer::new(global.output);
    let options = MaintainOptions {
        drain,
        work,
        ready: args.work.ready(),
        ready_timeout: args.work.ready_timeout,
        gates: args.work.gates(),
        detach: args.work.detach(),
        uncordon_on_failure: args.uncordon_on_failure,
    };
    let node = args.node.clone();
    let on_progress =
        |p: Progress| printer.progress(kordon::output::maintain::progress_line(&node, &p));
    let report = workflow::maintain(&ctx, &node, &options, &on_progress).await?;
    printer.report(&report);
    Ok(())
}

/// The maintenance to run: a command after `--`, or `--manual` on a terminal.
pub fn work(manual: bool, command: &[String], usage: &str) -> super::error::Result<Work> {
    match (manual, command.split_first()) {
        (true, _) if !std::io::stdin().is_terminal() => {
            Err(CliError::Usage(
                "--manual waits for Enter on a terminal, but standard input is not one; pass a command after -- instead".into(),
            ))
        }
        (true, _) => Ok(Work::Manual),
        (false, Some((program, rest))) => Ok(Work::Command {
            program: program.clone(),
            args: rest.to_vec(),
        }),
        (false, None) => {
            Err(CliError::Usage(format!(
                "say what the maintenance is: `{usage} -- COMMAND [ARGS…]`, or --manual"
            )))
        }
    }
}
