//! What a failed reconcile means, and when it runs again.
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer;

use crate::cluster::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("write status: {0}")]
    Status(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<ReconcileError>>),
    /// The controller's watch ended: it is shutting down.
    #[error("the controller is stopping")]
    Stopping,
}

/// When a failed reconcile runs again. A conflict means another writer was first (a
/// status written with a stale resourceVersion, a finalizer patch whose test failed):
/// the object is read again and the reconcile retried at once, with the cause at debug.
/// Anything else is logged with its cause and retried after a pause.
pub fn retry(kind: &str, name: &str, error: &ReconcileError) -> Action {
    if error.is_conflict() {
        tracing::debug!("{kind} {name}: {error}; retrying on the fresh object");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!("{kind} {name}: {error}");
    Action::requeue(Duration::from_secs(5))
}

impl ReconcileError {
    fn is_conflict(&self) -> bool {
        let api = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        // The finalizer is added by a JSON patch whose test of the old value fails
        // (422) when the object changed in between.
        let patched =
            |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 422);
        match self {
            Self::Status(e) => api(e),
            Self::Cluster(_) | Self::Stopping => false,
            Self::Finalizer(f) => match f.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.is_conflict()
                }
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    patched(e)
                }
                _ => false,
            },
        }
    }
}
