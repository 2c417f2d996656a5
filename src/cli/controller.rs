use std::time::Duration;

use clap::Args;
use kordon::cluster::lease::LockSpec;
use kordon::context::Context;
use kordon::controller::ControllerOptions;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Only carry out NodeMaintenance objects with these labels (e.g. to try a new
    /// version on some nodes first).
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Act only while holding the Lease kordon-controller in this namespace, so that of
    /// several replicas one acts and the others stand by.
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "KORDON_LEADER_ELECTION_NAMESPACE",
        value_parser = super::values::namespace
    )]
    pub leader_election_namespace: Option<String>,
    /// How long the leader lease outlives a leader that stopped renewing it.
    #[arg(long, value_parser = super::values::lease_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// This replica's name in the lease (default: the pod's name from $POD_NAME, else
    /// the host name), with the process's run id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Serve /metrics, /healthz and /readyz here (e.g. 0.0.0.0:8080).
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

pub async fn run(global: &GlobalArgs, args: &ControllerArgs) -> super::error::Result {
    let ctx = Context::open(&global.connection()).await?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "kordon-controller".into());
    let options = ControllerOptions {
        selector: args.selector.clone(),
        election: args.leader_election_namespace.as_ref().map(|ns| LockSpec {
            namespace: ns.clone(),
            name: "kordon-controller".into(),
            holder: format!("{identity} (run {})", ctx.run),
            duration: args.lease_duration,
        }),
        metrics_address: args.metrics_address,
    };
    kordon::controller::run(ctx, &options).await?;
    Ok(())
}

pub fn print_crds() -> super::error::Result {
    print!(
        "{}",
        kordon::api::crds_yaml().map_err(super::error::CliError::Crds)?
    );
    Ok(())
}
