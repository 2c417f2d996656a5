//! The command line: global options as kubectl has them, one module per command.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use kordon::cluster::ConnectionOptions;
use kordon::output::Format;

mod cordon;
pub mod drain;
mod maintain;
pub mod plan;
mod status;
mod version;

#[derive(Debug, Parser)]
#[command(
    name = "kordon",
    version,
    about = "Take Kubernetes nodes out of service and back with zero downtime"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value_t
    )]
    pub output: Format,
    /// More logs on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    pub fn connection(&self) -> ConnectionOptions {
        ConnectionOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// The nodes a command acts on, named (each must exist) or chosen by a label selector,
/// all looked up before anything changes.
pub async fn target_nodes(
    conn: &kordon::cluster::Connection,
    names: &[String],
    selector: Option<&str>,
) -> anyhow::Result<Vec<k8s_openapi::api::core::v1::Node>> {
    use kordon::cluster::nodes;
    match selector {
        Some(selector) => {
            let found = nodes::select(conn, selector).await?;
            if found.is_empty() {
                anyhow::bail!("no nodes match the selector \"{selector}\"");
            }
            Ok(found)
        }
        None if names.is_empty() => anyhow::bail!("name at least one node, or pass --selector"),
        None => {
            let mut found = Vec::new();
            for name in names {
                found.push(nodes::get(conn, &kordon::names::NodeName::new(name.as_str())).await?);
            }
            Ok(found)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print kordon's version and the API server's.
    Version,
    /// Mark nodes unschedulable: running pods stay, new pods go elsewhere.
    Cordon(cordon::CordonArgs),
    /// Mark nodes schedulable again.
    Uncordon(cordon::CordonArgs),
    /// Cordon nodes and evict their pods, refusing up front if a pod needs a decision.
    Drain(drain::DrainArgs),
    /// All four steps: cordon, drain, run the maintenance, wait for Ready, uncordon.
    Maintain(maintain::MaintainArgs),
    /// Before anything changes: where every pod would go, what blocks, how long.
    Plan(plan::PlanArgs),
    /// Show nodes with their state and their pods.
    Status(status::StatusArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => version::run(&cli.global).await,
        Command::Cordon(args) => cordon::run(&cli.global, &args, true).await,
        Command::Uncordon(args) => cordon::run(&cli.global, &args, false).await,
        Command::Drain(args) => drain::run(&cli.global, &args).await,
        Command::Maintain(args) => maintain::run(&cli.global, &args).await,
        Command::Plan(args) => plan::run(&cli.global, &args).await,
        Command::Status(args) => status::run(&cli.global, &args).await,
    }
}
