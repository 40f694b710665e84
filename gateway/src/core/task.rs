//! Tasks that survive their own panics. A bug triggered by one camera's bytes or one viewer's
//! packets must not leave a stream dead with nobody noticing: the task is restarted, the
//! panic counted in `sightline_task_restarts_total{task}` and logged with the stream id.
//! [`OnDemand`] runs such a task only while someone holds it (a transcoder while viewers
//! need it).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Notify;
use tracing::error;

use super::shutdown::Shutdown;

/// First wait before a panicked task runs again; doubles per panic up to [`MAX_BACKOFF`], so
/// a task that panics on every input does not spin.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A run this long without panicking resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// Names of the restarted tasks, exported at zero from start.
pub const TASKS: [&str; 6] = ["ingest", "decoder", "transcoder", "audio_transcoder", "webrtc_loop", "stream_supervisor"];

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

/// Counts and logs a caught panic of `task` (for `stream`, when it has one).
pub fn note_panic(task: &'static str, stream: &str, payload: &(dyn std::any::Any + Send)) {
    metrics::counter!("sightline_task_restarts_total", "task" => task).increment(1);
    error!(task, stream, panic = panic_message(payload), "task panicked; restarting it");
}

/// Runs the future `make` returns until it completes; when it panics instead, counts and
/// logs the panic ([`note_panic`]), waits a backoff and runs a new one, unless `until` fires
/// meanwhile (then it returns). Dropping the returned future cancels the current run, as for
/// any future.
pub async fn restart_on_panic<F, Fut>(task: &'static str, stream: &str, mut until: Shutdown, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let started = Instant::now();
        match AssertUnwindSafe(make()).catch_unwind().await {
            Ok(()) => return,
            Err(payload) => note_panic(task, stream, &*payload),
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = MIN_BACKOFF;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = until.wait() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A task that runs only while it is held: [`OnDemand::hold`] starts it when it is not
/// running; the task stops itself once [`OnDemand::wanted`] turns false, waking on
/// [`OnDemand::released`] when a [`Held`] is dropped. Panics restart it ([`restart_on_panic`]).
#[derive(Debug, Default)]
pub struct OnDemand {
    holders: AtomicUsize,
    running: AtomicBool,
    released: Notify,
}

/// Keeps an [`OnDemand`] task wanted; the last one dropped lets it stop.
#[derive(Debug)]
pub struct Held(Arc<OnDemand>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::SeqCst);
        self.0.released.notify_one();
    }
}

impl OnDemand {
    /// Holds the task `run` makes (named `task` for `stream` in panic counts), spawning it
    /// when it is not running.
    pub fn hold<F, Fut>(self: &Arc<Self>, task: &'static str, stream: &str, run: F) -> Held
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.holders.fetch_add(1, Ordering::SeqCst);
        if !self.running.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            let stream = stream.to_owned();
            tokio::spawn(async move {
                loop {
                    restart_on_panic(task, &stream, Shutdown::never(), &run).await;
                    me.running.store(false, Ordering::SeqCst);
                    // A holder that came while it was stopping found it running: go on for it.
                    if !me.wanted() || me.running.swap(true, Ordering::SeqCst) {
                        break;
                    }
                }
            });
        }
        Held(self.clone())
    }

    /// Whether anyone holds the task.
    pub fn wanted(&self) -> bool {
        self.holders.load(Ordering::SeqCst) > 0
    }

    /// Waits until a [`Held`] is dropped (then check [`OnDemand::wanted`]).
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

/// A spawned task that is aborted when this handle is dropped, so a task owned by another
/// (an ingest task owned by its stream's supervisor) cannot outlive its owner, even when the
/// owner panics.
#[derive(Debug)]
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `future` on the runtime.
    pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(future))
    }

    /// Aborts the task and waits until it is gone.
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_runs_again_with_backoff() {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let started = tokio::time::Instant::now();
        restart_on_panic("ingest", "cam", Shutdown::never(), move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 3 {
                    panic!("bad camera bytes");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "three panics, then a run that returns");
        assert_eq!(started.elapsed(), Duration::from_millis(100 + 200 + 400), "backoff doubles");
    }

    #[tokio::test(start_paused = true)]
    async fn no_restart_after_shutdown() {
        let (trigger, shutdown) = super::super::shutdown::ShutdownTrigger::new();
        trigger.trigger();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        restart_on_panic("decoder", "cam", shutdown, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the panic ends it: the gateway is shutting down");
    }

    #[test]
    fn panic_messages_of_both_payload_types() {
        let s: Box<dyn std::any::Any + Send> = Box::new("static");
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        assert_eq!((panic_message(&*s), panic_message(&*owned)), ("static", "owned"));
    }
}
