//! The command line: global options as kubectl has them, one module per command.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use error::CliError;
use kordon::cluster::{ConnectionOptions, Teller};
use kordon::names::NodeName;
use kordon::output::Format;

mod agent;
mod approve;
mod controller;
mod cordon;
pub mod drain;
pub mod error;
mod interrupt;
pub mod maintain;
pub mod plan;
pub mod roll;
mod status;
mod values;
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
            // The one plain line on stderr; `-o json` keeps stdout a document.
            teller: Some(Teller::new(|news| eprintln!("{news}"))),
        }
    }
}

/// Which nodes a command acts on: named, or chosen by a label selector.
#[derive(Debug, Args)]
pub struct NodeSelection {
    /// Nodes by name.
    #[arg(value_name = "NODE", value_parser = NodeName::parse)]
    pub nodes: Vec<NodeName>,
    /// The nodes matching this label selector instead.
    #[arg(short = 'l', long, conflicts_with = "nodes")]
    pub selector: Option<String>,
}

impl NodeSelection {
    /// Looks every node up before anything changes: one unknown name fails the
    /// command. With neither names nor selector, `all_when_empty` decides between
    /// every node and an error.
    pub async fn resolve(
        &self,
        conn: &kordon::cluster::Connection,
        all_when_empty: bool,
    ) -> error::Result<Vec<k8s_openapi::api::core::v1::Node>> {
        use kordon::cluster::nodes;
        match &self.selector {
            Some(selector) => {
                let found = nodes::select(conn, selector).await?;
                if found.is_empty() {
                    return Err(CliError::Failed(format!(
                        "no nodes match the selector \"{selector}\""
                    )));
                }
                Ok(found)
            }
            None if self.nodes.is_empty() && all_when_empty => Ok(nodes::all(conn).await?),
            None if self.nodes.is_empty() => Err(CliError::Usage(
                "name at least one node, or pass --selector".into(),
            )),
            None => {
                let mut found = Vec::new();
                for name in &self.nodes {
                    found.push(nodes::get(conn, name).await?);
                }
                Ok(found)
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print kordon's version and the API server's.
    Version(version::VersionArgs),
    /// Print a shell completion script: `source <(kordon completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Mark nodes unschedulable: running pods stay, new pods go elsewhere.
    Cordon(cordon::CordonArgs),
    /// Mark nodes schedulable again.
    Uncordon(cordon::CordonArgs),
    /// Cordon nodes and evict their pods, refusing up front if a pod needs a decision.
    Drain(drain::DrainArgs),
    /// All four steps: cordon, drain, run the maintenance, wait for Ready, uncordon.
    Maintain(maintain::MaintainArgs),
    /// Maintain many nodes, N at a time, behind health gates, resumable after a crash.
    Roll(Box<roll::RollArgs>),
    /// Let a roll (or a MaintenancePlan) that a failing metric gate holds start one node.
    Approve(approve::ApproveArgs),
    /// Before anything changes: where every pod would go, what blocks, how long.
    Plan(plan::PlanArgs),
    /// Show nodes with their state and their pods.
    Status(status::StatusArgs),
    /// Run in the cluster: carry out NodeMaintenance objects.
    Controller(controller::ControllerArgs),
    /// Run on a node (the chart's DaemonSet): carry out its NodeMaintenances' host
    /// steps (reboot, command) and raise its trigger label when a sentinel says so.
    Agent(agent::AgentArgs),
    /// Run a program in the host's root file system (the agent's way onto the host).
    #[command(hide = true)]
    HostExec(agent::HostExecArgs),
    /// Print the CustomResourceDefinitions of kordon's resources (YAML).
    Crd,
}

pub async fn run(cli: Cli) -> error::Result {
    match cli.command {
        Command::Version(args) => version::run(&cli.global, &args).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "kordon", &mut std::io::stdout());
            Ok(())
        }
        Command::Controller(args) => controller::run(&cli.global, &args).await,
        Command::Crd => controller::print_crds(),
        Command::Agent(args) => agent::run(&cli.global, &args).await,
        Command::HostExec(args) => agent::host_exec(&args),
        Command::Cordon(args) => cordon::run(&cli.global, &args, true).await,
        Command::Uncordon(args) => cordon::run(&cli.global, &args, false).await,
        Command::Drain(args) => drain::run(&cli.global, &args).await,
        Command::Maintain(args) => maintain::run(&cli.global, &args).await,
        Command::Roll(args) => roll::run(&cli.global, &args).await,
        Command::Plan(args) => plan::run(&cli.global, &args).await,
        Command::Approve(args) => approve::run(&cli.global, &args).await,
        Command::Status(args) => status::run(&cli.global, &args).await,
    }
}
