use clap::Args;
use kordon::cluster::Connection;
use kordon::output::version::Versions;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only kordon's own version: no cluster is asked.
    #[arg(long)]
    pub client: bool,
}

/// Like `kubectl version`: our version always, then the server's. Without a reachable
/// server ours is still printed, and the error follows.
pub async fn run(global: &GlobalArgs, args: &VersionArgs) -> super::error::Result {
    let client = env!("CARGO_PKG_VERSION");
    let printer = kordon::output::Printer::new(global.output);
    if args.client {
        printer.report(&Versions {
            client,
            server: None,
        });
        return Ok(());
    }
    let server = match Connection::open(&global.connection()).await {
        Ok(conn) => conn.server_version().await,
        Err(e) => Err(e),
    };
    match server {
        Ok(server) => {
            printer.report(&Versions {
                client,
                server: Some(server),
            });
            Ok(())
        }
        Err(e) => {
            // Under -o json the error is the one document.
            if !printer.format().is_document() {
                printer.report(&Versions {
                    client,
                    server: None,
                });
            }
            Err(e.into())
        }
    }
}
