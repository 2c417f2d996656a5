//! What a command can fail with, and how the CLI says it: one sentence, the library's
//! advice in flags, an exit code scripts can branch on.
use kordon::error::{Advice, Exit};
use kordon::flag::Flag;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags that make no sense together, found after parsing: a usage error as clap's.
    #[error("{0}")]
    Usage(String),
    /// Refused by what the command found, not by how it was called.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Kordon(Box<kordon::error::Error>),
    /// Writing the CRDs out.
    #[error("cannot render the CRDs")]
    Crds(#[source] serde_saphyr::SerializeError),
}

pub type Result<T = ()> = std::result::Result<T, CliError>;

/// Every library error is a [`kordon::error::Error`] on its way out.
impl<E: Into<kordon::error::Error>> From<E> for CliError {
    fn from(err: E) -> Self {
        Self::Kordon(Box::new(err.into()))
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => Exit::Usage.code(),
            Self::Kordon(e) => e.exit().code(),
            Self::Failed(_) | Self::Crds(_) => Exit::Failed.code(),
        }
    }

    /// The error, its causes and the advice as one line.
    pub fn sentence(&self) -> String {
        let mut text = chain(self);
        if let Self::Kordon(e) = self {
            for advice in e.advice() {
                text.push_str("; ");
                text.push_str(&say(&advice));
            }
        }
        text
    }
}

/// The error and its causes, joined. A multi-line cause (a YAML parser's snippet with a
/// caret) contributes its first line; a cause whose text a message already holds (a
/// transport error nested several times) is said once.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        let full = cause.to_string();
        let line = full.lines().next().unwrap_or_default();
        if !line.is_empty() && !text.contains(line) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(line);
        }
        next = cause.source();
    }
    text
}

/// Advice in the CLI's words.
fn say(advice: &Advice) -> String {
    match advice {
        Advice::Decide(pods) => pods
            .iter()
            .map(|(pod, flags)| {
                let flags: Vec<&str> = flags.iter().map(|f| f.cli()).collect();
                format!("{pod} needs {}", flags.join(" and "))
            })
            .collect::<Vec<_>>()
            .join("; "),
        Advice::Give(Flag::Kubeconfig, _) => "check --kubeconfig or the KUBECONFIG variable".into(),
        Advice::Give(Flag::LockTimeout, to) => format!("{to} with --lock-timeout"),
        Advice::Give(flag, to) => format!("pass {} to {to}", flag.cli()),
        Advice::Omit(flag) => format!("run it without {}", flag.cli()),
        Advice::Raise(flag) => format!("or raise {}", flag.cli()),
    }
}
