//! `kordon agent` (the node agent, run by the chart's DaemonSet) and `kordon host-exec`,
//! the agent's way into the host's root file system for each command it runs there.
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kordon::agent::host::Host;
use kordon::agent::sentinel::Sentinel;
use kordon::agent::{AgentError, AgentOptions};
use kordon::cluster::Connection;
use kordon::names::NodeName;

use super::GlobalArgs;
use super::error::CliError;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent acts for: its own (from the downward API in the chart).
    #[arg(long, env = "NODE_NAME", value_parser = NodeName::parse)]
    pub node: NodeName,
    /// Where the host's root file system is mounted in the agent's pod; host commands
    /// run there.
    #[arg(long, value_name = "PATH", default_value = "/host")]
    pub host_root: PathBuf,
    /// What a `reboot` step runs on the host (through /bin/sh -c).
    #[arg(long, value_name = "COMMAND", default_value = "systemctl reboot")]
    pub reboot_command: String,
    /// The node needs maintenance while this file exists on the host (kured's
    /// /var/run/reboot-required). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub sentinel_file: Vec<PathBuf>,
    /// The node needs maintenance while this command exits 0 on the host (through
    /// /bin/sh -c). Repeatable.
    #[arg(long, value_name = "COMMAND")]
    pub sentinel_command: Vec<String>,
    /// The node needs maintenance while it has this condition True (e.g. one
    /// node-problem-detector sets). Repeatable.
    #[arg(long, value_name = "TYPE")]
    pub sentinel_condition: Vec<String>,
    /// How often the sentinels are looked at.
    #[arg(long, value_parser = super::values::positive_duration, default_value = "60s")]
    pub check_every: Duration,
}

fn shell(command: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), command.into()]
}

pub async fn run(global: &GlobalArgs, args: &AgentArgs) -> super::error::Result {
    let conn = Connection::open(&global.connection()).await?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Failed(format!("cannot find kordon's own binary: {e}")))?;
    let sentinels = (args.sentinel_file.iter().cloned().map(Sentinel::File))
        .chain(
            args.sentinel_command
                .iter()
                .map(|c| Sentinel::Command(shell(c))),
        )
        .chain(
            args.sentinel_condition
                .iter()
                .cloned()
                .map(Sentinel::Condition),
        )
        .collect();
    let options = AgentOptions {
        node: args.node.clone(),
        host: Host {
            exe,
            root: args.host_root.clone(),
        },
        reboot_command: shell(&args.reboot_command),
        sentinels,
        check_every: args.check_every,
    };
    kordon::agent::run(&conn, &options)
        .await
        .map_err(|e| match e {
            AgentError::Cluster(e) => e.into(),
            e @ AgentError::WatchEnded(_) => CliError::Failed(e.to_string()),
        })
}

#[derive(Debug, Args)]
pub struct HostExecArgs {
    /// The host's root file system, entered before the program runs.
    #[arg(long, value_name = "PATH")]
    pub root: PathBuf,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    pub argv: Vec<String>,
}

/// Enters `root` and becomes the program: returns only when that fails.
pub fn host_exec(args: &HostExecArgs) -> super::error::Result {
    let fail = |what: String| CliError::Failed(what);
    std::os::unix::fs::chroot(&args.root).map_err(|e| {
        fail(format!(
            "cannot enter the host's root {}: {e}",
            args.root.display()
        ))
    })?;
    std::env::set_current_dir("/").map_err(|e| fail(format!("cannot enter /: {e}")))?;
    let (program, rest) = args
        .argv
        .split_first()
        .ok_or_else(|| CliError::Usage("name the program to run".into()))?;
    let e = std::process::Command::new(program).args(rest).exec();
    Err(fail(format!("cannot run {program}: {e}")))
}
