//! The shutdown signal every long-running task follows, and why a viewer's session ends.

use tokio::sync::watch;

/// Turns true once, when the gateway begins to shut down. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`]; the gateway's top level holds it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// A trigger and the signal it sets.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Begins the shutdown: every [`Shutdown::wait`] resolves.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Another receiver of the signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// A signal that never fires (tests, and parts run without a gateway around them).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // The sender is dropped: `wait` pends forever, `is_set` stays false.
        drop(tx);
        Shutdown(rx)
    }

    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown begins; never if its trigger is gone without firing.
    /// Cancel-safe: use it as a `select!` branch.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a viewer's session (SSE/MJPEG feed, WHEP session) ends; SSE sends it as
/// `event: stopped`, WebRTC as a data-channel message (public contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The stream was stopped.
    Stopped,
    /// The gateway is shutting down (a player may reconnect to another replica).
    Shutdown,
    /// The viewer token the session was opened with expired.
    TokenExpired,
}

impl StopReason {
    /// `stopped`, `shutdown` or `token_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Stopped => "stopped",
            StopReason::Shutdown => "shutdown",
            StopReason::TokenExpired => "token_expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_once_triggered() {
        let (trigger, mut shutdown) = ShutdownTrigger::new();
        assert!(!shutdown.is_set());
        let mut other = trigger.subscribe();
        trigger.trigger();
        shutdown.wait().await;
        other.wait().await;
        assert!(shutdown.is_set());
        let never = Shutdown::never();
        assert!(!never.is_set());
    }
}
