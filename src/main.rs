//! kordon's command-line entry: parse, set up logging, dispatch, turn errors into one
//! clear sentence and an exit code.
#![forbid(unsafe_code)]
// A function over ~100 lines (clippy.toml) mixes steps that want names of their own.
#![warn(clippy::too_many_lines)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use tracing_subscriber::EnvFilter;

mod cli;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    init_logging(cli.global.verbose);
    let runtime = match runtime(&cli.command) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let printer = kordon::output::Printer::new(cli.global.output);
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Scripts read the document on stdout; people read the sentence on stderr.
            if printer.format().is_document() && !err.reported() {
                printer.report(&err.document());
            }
            eprintln!("error: {}", err.sentence());
            ExitCode::from(err.exit_code())
        }
    }
}

/// A command runs on one thread: it waits on the API server far more than it computes,
/// and each thread that allocates keeps memory of its own (glibc's arenas: a 10-pod
/// drain peaked 5-13 MiB higher on two). The long-lived processes, which carry many
/// nodes at once, get a thread per core.
fn runtime(command: &cli::Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        cli::Command::Controller(_) | cli::Command::Agent(_) => {
            tokio::runtime::Builder::new_multi_thread()
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().build()
}

/// A command line clap refused: one line on stderr and exit 2, as clap's own errors
/// (help and `--version` print as clap prints them and exit 0; `kordon` alone prints the
/// help on stderr and exits 2).
fn usage_error(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `kordon` alone: the help is the answer, on stderr.
        let _ = err.print();
        return ExitCode::from(2);
    }
    eprintln!("error: {}", usage_sentence(err));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// clap's message as one line. A value our parsers refused is `FLAG VALUE: why`, or
/// our message alone when it quotes the value itself (a bad node name); anything else
/// is clap's rendering with its usage and help hints dropped.
fn usage_sentence(err: &clap::Error) -> String {
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    if err.kind() == ErrorKind::ValueValidation
        && let (Some(arg), Some(value), Some(why)) = (
            context(ContextKind::InvalidArg),
            context(ContextKind::InvalidValue),
            std::error::Error::source(err),
        )
    {
        let why = why.to_string();
        if why.contains(&format!("\"{value}\"")) {
            return why;
        }
        // `--timeout <TIMEOUT>` is shown as `--timeout`, `--count-others-out[=<BOOL>]` as
        // `--count-others-out`, a positional `[NODE]...` as `NODE`.
        let flag = arg.split(' ').next().unwrap_or(arg);
        let flag = flag.split("[=").next().unwrap_or(flag);
        let flag = flag.trim_matches(|c| c == '[' || c == ']' || c == '<' || c == '>' || c == '.');
        if value.is_empty() || value.contains(char::is_whitespace) {
            return format!("{flag} \"{value}\": {why}");
        }
        return format!("{flag} {value}: {why}");
    }
    let rendered = err.render().to_string();
    let mut line = String::new();
    for part in rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
    {
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    line.trim_start_matches("error: ").to_string()
}

/// Logs go to stderr so stdout stays clean for reports and `-o json`. They are
/// coloured only on a terminal, and never with `NO_COLOR` set (no-color.org).
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
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .init();
}

/// Whether output to a stream may carry ANSI colour: only on a terminal, and not when
/// `NO_COLOR` holds any non-empty value.
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
