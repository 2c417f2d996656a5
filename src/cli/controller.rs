use clap::Args;
use kordon::context::Context;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Only carry out NodeMaintenance objects with these labels (e.g. to try a new
    /// version on some nodes first).
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &ControllerArgs) -> anyhow::Result<()> {
    let ctx = Context::open(&global.connection()).await?;
    kordon::controller::run(ctx, args.selector.as_deref()).await?;
    Ok(())
}

pub fn print_crds() -> anyhow::Result<()> {
    print!("{}", kordon::api::crds_yaml()?);
    Ok(())
}
