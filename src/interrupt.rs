//! A request to stop at the next safe point, made by whoever runs kordon (the CLI on
//! Ctrl-C). The library installs no signal handlers and never exits the process: it
//! arms the interrupt once stopping must be cooperative (something is about to
//! change), and from then on polls it at its safe points.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// The receiving side: cheap to clone, level-triggered (a request made before anyone
/// waits is still seen).
#[derive(Debug, Clone)]
pub struct Interrupt {
    requested: watch::Receiver<bool>,
    armed: Arc<AtomicBool>,
}

/// The requesting side, kept by the edge.
#[derive(Debug)]
pub struct Interrupter {
    request: watch::Sender<bool>,
    armed: Arc<AtomicBool>,
}

impl Interrupt {
    pub fn channel() -> (Interrupter, Interrupt) {
        let (request, requested) = watch::channel(false);
        let armed = Arc::new(AtomicBool::new(false));
        (
            Interrupter {
                request,
                armed: armed.clone(),
            },
            Interrupt { requested, armed },
        )
    }

    /// One that is never requested (the controller stops through its own shutdown).
    pub fn never() -> Interrupt {
        Interrupt::channel().1
    }

    /// From now on a request is answered at a safe point rather than by exiting.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once a stop is requested; never, if no one can request one.
    pub async fn requested(&self) {
        let mut requested = self.requested.clone();
        if requested.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Interrupter {
    /// Whether the work has reached the point where it must be stopped cooperatively.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst)
    }

    pub fn request(&self) {
        self.request.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_made_before_anyone_waits_is_still_seen() {
        let (edge, interrupt) = Interrupt::channel();
        assert!(!edge.is_armed());
        interrupt.clone().arm();
        assert!(edge.is_armed());
        edge.request();
        assert!(interrupt.is_requested());
        interrupt.requested().await;
    }

    #[tokio::test]
    async fn never_is_never_requested() {
        let never = Interrupt::never();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), never.requested()).await;
        assert!(waited.is_err() && !never.is_requested());
    }
}
