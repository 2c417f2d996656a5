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
    /// The command printed its report (an unsafe plan, a roll that stopped), which is
    /// its document under `-o json`; the error still sets the exit code and is said.
    #[error(transparent)]
    Reported(Box<CliError>),
}

pub type Result<T = ()> = std::result::Result<T, CliError>;

/// Every library error is a [`kordon::error::Error`] on its way out.
impl<E: Into<kordon::error::Error>> From<E> for CliError {
    fn from(err: E) -> Self {
        Self::Kordon(Box::new(err.into()))
    }
}

impl CliError {
    /// The command's report already said it (see [`CliError::Reported`]).
    pub fn after_report(err: impl Into<CliError>) -> Self {
        Self::Reported(Box::new(err.into()))
    }

    pub fn reported(&self) -> bool {
        matches!(self, Self::Reported(_))
    }

    fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::Kordon(e) => e.exit(),
            Self::Failed(_) | Self::Crds(_) => Exit::Failed,
            Self::Reported(e) => e.exit(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.exit().code()
    }

    /// The error as a document, printed on stdout under `-o json` and `-o yaml` so a
    /// script can tell a refusal's pods and the flags that would let each go apart.
    pub fn document(&self) -> ErrorDocument {
        let advice = match self {
            Self::Kordon(e) => e.advice(),
            Self::Reported(e) => return e.document(),
            _ => Vec::new(),
        };
        let (decide, other): (Vec<Advice>, Vec<Advice>) = advice
            .into_iter()
            .partition(|a| matches!(a, Advice::Decide(_)));
        let pods = decide
            .iter()
            .flat_map(|a| match a {
                Advice::Decide(pods) => pods.clone(),
                _ => Vec::new(),
            })
            .map(|(pod, flags)| PodDecision {
                pod,
                flags: flags.iter().map(|f| f.cli()).collect(),
            })
            .collect();
        ErrorDocument {
            kind: "Error",
            reason: self.exit().name(),
            exit: self.exit_code(),
            message: chain(self),
            pods,
            advice: other.iter().map(say).collect(),
        }
    }

    /// The error, its causes and the advice as one line.
    pub fn sentence(&self) -> String {
        if let Self::Reported(e) = self {
            return e.sentence();
        }
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

/// What `-o json` prints for an error (see [`CliError::document`]).
#[derive(serde::Serialize)]
pub struct ErrorDocument {
    kind: &'static str,
    /// `Refused`, `TimedOut`, `Abandoned`, `Interrupted`, `Usage` or `Failed`.
    reason: &'static str,
    exit: u8,
    message: String,
    /// Each pod that needs a decision, and the flags that would let it go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pods: Vec<PodDecision>,
    /// What else would let the command go on, in the CLI's words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    advice: Vec<String>,
}

#[derive(serde::Serialize)]
struct PodDecision {
    pod: kordon::pod::PodKey,
    flags: Vec<&'static str>,
}

impl kordon::output::Report for ErrorDocument {
    fn text(&self) -> String {
        self.message.clone()
    }
}
