//! kordon's command-line entry: parse, set up logging, dispatch, turn errors into one
//! clear sentence and an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.global.verbose);
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", sentence(&err));
            exit_code(&err)
        }
    }
}

/// Exit codes scripts can branch on (documented in the README).
fn exit_code(err: &anyhow::Error) -> ExitCode {
    use kordon::drain::DrainError;
    use kordon::workflow::MaintainError;
    let drain = err.downcast_ref::<DrainError>().or_else(|| {
        err.downcast_ref::<MaintainError>()
            .and_then(MaintainError::drain_error)
    });
    use kordon::fleet::{RollError, RunState};
    let held = err.downcast_ref::<MaintainError>().is_some_and(|e| {
        matches!(
            e.cause,
            kordon::workflow::StepError::HeldByNodeMaintenance(_)
        )
    });
    if held || err.downcast_ref::<cli::plan::PlanUnsafe>().is_some() {
        return ExitCode::from(3);
    }
    if let Some(
        RollError::Unsafe { .. }
        | RollError::Unfinished { .. }
        | RollError::Held { .. }
        | RollError::NoRoom { .. }
        | RollError::Lock(kordon::cluster::lease::LockError::Held { .. }),
    ) = err.downcast_ref::<RollError>()
    {
        return ExitCode::from(3);
    }
    if let Some(cli::roll::RollIncomplete(_, RunState::Interrupted)) = err.downcast_ref() {
        return ExitCode::from(130);
    }
    match drain {
        Some(DrainError::Refused { .. } | DrainError::WouldStrand { .. }) => ExitCode::from(3),
        Some(DrainError::TimedOut { .. }) => ExitCode::from(4),
        Some(DrainError::Abandoned { .. }) => ExitCode::from(5),
        Some(DrainError::Interrupted { .. }) => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// Logs go to stderr so stdout stays clean for reports and `-o json`.
fn init_logging(verbose: u8) {
    let default = match verbose {
        // kube-client logs transport errors itself; we report them once, as a sentence.
        0 => "kordon=warn",
        1 => "kordon=info",
        _ => "kordon=debug,kube=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes as one line, without repeating a cause that a message
/// already quotes (our error types embed their source's text). A multi-line cause (a
/// YAML parser's snippet with a caret) contributes its first line.
fn sentence(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let full = cause.to_string();
        let part = full.lines().next().unwrap_or_default().to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
