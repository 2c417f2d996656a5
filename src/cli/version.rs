use kordon::cluster::Connection;
use kordon::output::version::Versions;

use super::GlobalArgs;

/// Like `kubectl version`: our version, then the server's (which needs a working
/// kubeconfig, so a broken one is reported here).
pub async fn run(global: &GlobalArgs) -> super::error::Result {
    let client = env!("CARGO_PKG_VERSION");
    let conn = Connection::open(&global.connection()).await?;
    let server = conn.server_version().await?;
    kordon::output::Printer::new(global.output).report(&Versions { client, server });
    Ok(())
}
