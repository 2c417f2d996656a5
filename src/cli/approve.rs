use clap::Args;
use kordon::cluster::Connection;
use kordon::output::Printer;
use kordon::output::approve::Approved;

use super::GlobalArgs;
use super::error::CliError;

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The MaintenancePlan to approve; without it, the roll running under
    /// --lock-namespace.
    #[arg(value_name = "PLAN")]
    pub plan: Option<String>,
    #[command(flatten)]
    pub lock: super::roll::LockArgs,
}

pub async fn run(global: &GlobalArgs, args: &ApproveArgs) -> super::error::Result {
    let conn = Connection::open(&global.connection()).await?;
    let approved = match &args.plan {
        Some(plan) => match kordon::fleet::approve::plan(&conn, plan).await? {
            Some(approval) => Approved {
                target: format!("MaintenancePlan {plan}"),
                approval,
            },
            None => {
                return Err(CliError::Failed(format!(
                    "there is no MaintenancePlan {plan}"
                )));
            }
        },
        None => {
            let namespace = &args.lock.lock_namespace;
            match kordon::fleet::approve::roll(&conn, namespace).await? {
                Some((approval, run)) => Approved {
                    target: format!("roll {run}"),
                    approval,
                },
                None => {
                    return Err(CliError::Failed(format!(
                        "no roll is running under --lock-namespace {namespace}: nothing to approve"
                    )));
                }
            }
        }
    };
    Printer::new(global.output).report(&approved);
    Ok(())
}
