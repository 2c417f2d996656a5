use std::path::PathBuf;

use kube::core::Status;

use crate::advice::Advice;
use crate::flag::Flag;
use crate::names::NodeName;

/// Everything that can go wrong talking to the cluster, each naming the object and
/// saying what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load kubeconfig {}", path_or_default(.path))]
    Kubeconfig {
        path: Option<PathBuf>,
        #[source]
        source: kube::config::KubeconfigError,
    },

    #[error("no cluster configured")]
    NoConfig(#[source] kube::config::InferConfigError),

    #[error("cannot set up a client for {server}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },

    #[error(
        "cannot reach the Kubernetes API server at {server}: {reason}; is the cluster running and the kubeconfig current?"
    )]
    Unreachable { server: String, reason: String },

    #[error(
        "permission denied while trying to {action}: {message}; ask a cluster admin to grant it in RBAC"
    )]
    Forbidden { action: String, message: String },

    #[error(
        "the API server refused to let us {action}: {message}; check the token or certificate in the kubeconfig"
    )]
    Unauthorized { action: String, message: String },

    #[error("node \"{0}\" not found; `kordon status` lists the nodes")]
    NodeNotFound(NodeName),

    #[error("invalid label selector \"{selector}\": {message}")]
    InvalidSelector { selector: String, message: String },

    #[error("failed to {action}: {message} (HTTP {code})")]
    Api {
        action: String,
        code: u16,
        message: String,
    },

    #[error("failed to {action}")]
    Other {
        action: String,
        #[source]
        source: kube::Error,
    },
}

fn path_or_default(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("\"{}\"", p.display()),
        None => "(from KUBECONFIG or ~/.kube/config)".to_string(),
    }
}

impl ClusterError {
    /// The kubeconfig is the user's to fix.
    pub fn advice(&self) -> Vec<Advice> {
        match self {
            Self::Kubeconfig { .. } | Self::NoConfig(_) => vec![Advice::Give(
                Flag::Kubeconfig,
                "name the cluster's kubeconfig (or set KUBECONFIG)",
            )],
            _ => Vec::new(),
        }
    }

    /// Classifies a failed request. `action` says what we were doing ("patch node
    /// node-2"), so the message names the object; `server` is for transport errors.
    pub fn from_kube(action: impl Into<String>, server: &str, err: kube::Error) -> Self {
        let action = action.into();
        match err {
            kube::Error::Api(status) => Self::from_status(action, &status),
            kube::Error::HyperError(e) => Self::Unreachable {
                server: server.to_string(),
                reason: error_chain(&e),
            },
            kube::Error::Service(e) => Self::Unreachable {
                server: server.to_string(),
                reason: error_chain(e.as_ref()),
            },
            other => Self::Other {
                action,
                source: other,
            },
        }
    }

    fn from_status(action: String, status: &Status) -> Self {
        let message = status.message.clone();
        if status.is_forbidden() {
            Self::Forbidden { action, message }
        } else if status.code == 401 {
            Self::Unauthorized { action, message }
        } else {
            Self::Api {
                action,
                code: status.code,
                message,
            }
        }
    }

    /// True when trying again may help: the API server could not be reached (a refused,
    /// reset or dropped connection), or answered that it is not able to serve now (500
    /// while etcd is away, 503 while it starts, 504 on a timeout). Never a 429: an
    /// eviction's 429 is a budget's answer.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Api { code, .. } => matches!(code, 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// True when a watch failed because the API server could not be reached: its
    /// stream backs off and starts again by itself, so this is the outage to tell once
    /// ([`super::connect::Outage`]), not a log record per try: a refused connection, or
    /// a stream cut mid-read. A 410 Expired (relisted at once) or a refusal is not.
    pub fn watch_lost_server(err: &kube::runtime::watcher::Error) -> bool {
        use kube::runtime::watcher::Error as Watch;
        match err {
            Watch::InitialListFailed(e) | Watch::WatchStartFailed(e) | Watch::WatchFailed(e) => {
                matches!(
                    e,
                    kube::Error::HyperError(_)
                        | kube::Error::Service(_)
                        | kube::Error::ReadEvents(_)
                )
            }
            Watch::WatchError(_) | Watch::NoResourceVersion => false,
        }
    }

    /// True for a 404 from the API: the object is not there (any more).
    pub fn is_not_found(err: &kube::Error) -> bool {
        matches!(err, kube::Error::Api(s) if s.is_not_found())
    }
}

/// Transport errors nest the useful part ("Connection refused") several sources deep.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_or_overloaded_server_is_worth_another_try() {
        let api = |code| ClusterError::Api {
            action: "get node n".into(),
            code,
            message: String::new(),
        };
        let lost = ClusterError::Unreachable {
            server: "https://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert!(lost.is_transient());
        assert!(api(503).is_transient() && api(500).is_transient());
        assert!(!api(429).is_transient() && !api(404).is_transient() && !api(409).is_transient());
        let expired = kube::runtime::watcher::Error::WatchError(Box::new(Status::failure(
            "too old resource version",
            "Expired",
        )));
        assert!(!ClusterError::watch_lost_server(&expired));
        let cut = kube::runtime::watcher::Error::WatchFailed(kube::Error::ReadEvents(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ));
        assert!(ClusterError::watch_lost_server(&cut));
    }
}
