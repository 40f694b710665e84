//! Helpers for the crate's own tests.

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
/// For waiting on something asynchronous without guessing a sleep.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
