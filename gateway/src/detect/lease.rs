//! Detection once per stream across replicas: while a stream's camera is pulled, this replica
//! takes and renews the stream's detection lease (`sightline:lease:detect:{id}`) and, while it
//! holds it, sends the stream's pictures to the detection scheduler. Replicas without the
//! lease get the holder's messages through the relay. If the store cannot be reached,
//! detection runs here (duplicate work beats no boxes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, info};

use super::service::Detect;
use crate::core::frame::PictureSink;
use crate::pipeline::Pixels;
use crate::state::ClusterStore;
use crate::stream::StreamRuntime;

/// Lifetime of the detection lease; its holder renews it every [`LEASE_RENEW`]. A holder that
/// dies is replaced within `LEASE_TTL + LEASE_RENEW` (4 s): the time nobody detects.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the lease is renewed, or tried by replicas that do not hold it.
const LEASE_RENEW: Duration = Duration::from_secs(1);

/// Follows `rt`'s pull for as long as the gateway runs; gives the lease back as soon as the
/// pull stops (also on shutdown), so another replica takes detection over without waiting
/// for the lease to lapse.
pub(super) async fn follow(rt: Arc<StreamRuntime>, pixels: Arc<Pixels>, detect: Arc<Detect>, cluster: Arc<dyn ClusterStore>) {
    let Some(here) = detect.runs_here(&rt.id).cloned() else { return };
    let mut pulling = rt.watch_pulling();
    let mut shutdown = rt.shutdown();
    loop {
        tokio::select! {
            waited = pulling.wait_for(|p| *p) => if waited.is_err() { return },
            () = shutdown.wait() => return,
        }
        tokio::select! {
            () = lead(&rt, &pixels, &detect, &*cluster, &here) => {}
            _ = pulling.wait_for(|p| !*p) => {}
            () = shutdown.wait() => {}
        }
        pixels.set_picture_sink(None);
        if here.swap(false, Ordering::Relaxed) {
            detect.lease_changed(&rt.id, false);
        }
        // Always, and awaited: an acquire cut off by the stop may have taken the lease after
        // all, and a release left running could delete the lease a quick restart re-took.
        // The store deletes it only if this replica holds it.
        if let Err(e) = cluster.release_detect_lease(&rt.id).await {
            debug!(stream = %rt.id, error = %e, "cannot release the detection lease; it lapses in 3 s");
        }
        if shutdown.is_set() {
            return;
        }
    }
}

/// Takes or renews the lease every [`LEASE_RENEW`], forever; pictures go to the scheduler
/// while this replica holds it.
async fn lead(rt: &StreamRuntime, pixels: &Arc<Pixels>, detect: &Arc<Detect>, cluster: &dyn ClusterStore, here: &AtomicBool) {
    loop {
        let held = match cluster.acquire_detect_lease(&rt.id, LEASE_TTL).await {
            Ok(held) => held,
            Err(e) => {
                debug!(stream = %rt.id, error = %e, "detection lease unknown; detecting here");
                true
            }
        };
        if held != here.swap(held, Ordering::Relaxed) {
            info!(stream = %rt.id, here = held, "detection lease {}", if held { "taken" } else { "held by another replica" });
            detect.lease_changed(&rt.id, held);
            let sink: Arc<dyn PictureSink> = detect.clone();
            pixels.set_picture_sink(held.then(|| (detect.max_fps(), sink)));
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}
