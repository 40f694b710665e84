//! On-demand pull: one supervisor per stream starts ingest while the stream is active and
//! watched (or always, with `on_demand = false`), keeps it a `linger` after the last viewer
//! leaves, and stops it when the stream stops or the gateway shuts down. The ingest task is
//! restarted if it panics.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use super::ingest::{self, IngestContext, IngestState};
use super::runtime::StreamRuntime;
use crate::config::IngestConfig;
use crate::core::shutdown::Shutdown;
use crate::core::task::{AbortOnDrop, restart_on_panic};
use crate::source::CameraSource;

/// Starts and stops ingest as the stream's record and viewers change. Runs until the
/// gateway shuts down.
pub(super) async fn supervise(rt: Arc<StreamRuntime>, ingest_config: IngestConfig, source: Arc<dyn CameraSource>) {
    let mut record = rt.watch_record();
    let mut consumers = rt.watch_consumers();
    let mut shutdown = rt.shutdown();
    // After a panic of an earlier run its ingest task is gone (aborted on drop), but what it
    // left behind is not: start from "not pulling".
    stopped_pulling(&rt);
    loop {
        while !rt.wants_pull() {
            if shutdown.is_set() {
                return;
            }
            wait_change(&mut record, &mut consumers, &mut shutdown).await;
        }
        if shutdown.is_set() {
            return;
        }
        let ctx = IngestContext {
            stream: rt.config.clone(),
            config: ingest_config.clone(),
            source: source.clone(),
            hub: rt.hub.clone(),
            audio: rt.audio.clone(),
            health: rt.health_sender().clone(),
        };
        let id = rt.config.id.clone();
        let until = rt.shutdown();
        let task = AbortOnDrop::spawn(async move { restart_on_panic("ingest", &id, until, || ingest::run(ctx.clone())).await });
        info!(stream = %rt.id, "pulling camera");
        rt.set_pulling(true);
        loop {
            let active = record.borrow_and_update().active;
            let watched = *consumers.borrow_and_update() > 0;
            if !active || shutdown.is_set() {
                break;
            }
            if rt.config.pulled_on_demand() && !watched {
                tokio::select! {
                    () = tokio::time::sleep(rt.config.linger) => break,
                    () = wait_change(&mut record, &mut consumers, &mut shutdown) => {}
                }
            } else {
                wait_change(&mut record, &mut consumers, &mut shutdown).await;
            }
        }
        task.stop().await;
        stopped_pulling(&rt);
        info!(stream = %rt.id, active = rt.record().active, "stopped pulling camera");
        if shutdown.is_set() {
            return;
        }
    }
}

/// The stream's state once its camera is no longer pulled: not pulling (detection lets go),
/// no cached GOP (its pictures are stale), health idle or stopped with no rate.
fn stopped_pulling(rt: &StreamRuntime) {
    rt.set_pulling(false);
    rt.hub.clear_cache();
    let active = rt.record().active;
    rt.health_sender().send_modify(|h| {
        h.state = if active { IngestState::Idle } else { IngestState::Stopped };
        h.fps = 0.0;
        h.bitrate_bps = 0;
    });
}

/// Resolves when the record, the viewer count or the shutdown signal changes.
async fn wait_change(
    record: &mut watch::Receiver<crate::state::StreamRecord>,
    consumers: &mut watch::Receiver<usize>,
    shutdown: &mut Shutdown,
) {
    tokio::select! {
        _ = record.changed() => {}
        _ = consumers.changed() => {}
        () = shutdown.wait() => {}
    }
}
