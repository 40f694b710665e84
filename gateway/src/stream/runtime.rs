//! One configured stream at run time: its hub, health, the last state-store record, its
//! viewers, and whether the camera is being pulled now.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use super::audio::AudioHub;
use super::hub::Hub;
use super::ingest::{Health, IngestState};
use super::viewers::{Counters, ViewerBudget, ViewerCounts, ViewerKind};
use crate::config::StreamConfig;
use crate::core::clock::sleep_until_some;
use crate::core::shutdown::{Shutdown, StopReason};
use crate::core::{Error, StreamId};
use crate::metrics::limit_hit;
use crate::state::{Geometry, StreamRecord};

/// One configured stream at run time.
#[derive(Debug)]
pub(crate) struct StreamRuntime {
    /// The definition from config (URL with credentials: never serialize it as is).
    pub(crate) config: StreamConfig,
    /// The stream id.
    pub(crate) id: StreamId,
    /// Access unit fan-out.
    pub(crate) hub: Arc<Hub>,
    /// Audio frame fan-out.
    pub(crate) audio: Arc<AudioHub>,
    health: watch::Sender<Health>,
    record: watch::Sender<StreamRecord>,
    /// Zones and lines: the config's (version 0) until the API writes some.
    geometry: watch::Sender<Arc<Geometry>>,
    consumers: watch::Sender<usize>,
    /// True while the camera is pulled (detection follows it).
    pulling: watch::Sender<bool>,
    /// Gateway-wide viewer places and the per-stream maximum.
    budget: Arc<ViewerBudget>,
    /// Turns true when the gateway shuts down: feeds and WHEP sessions end.
    shutdown: Shutdown,
    viewers: Counters,
}

/// Health plus viewer counts, also the payload of SSE `event: state`.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct HealthView {
    /// Whether the stream is started.
    pub(crate) active: bool,
    /// Ingest health.
    #[serde(flatten)]
    pub(crate) health: Health,
    /// Viewer counts.
    pub(crate) viewers: ViewerCounts,
}

impl StreamRuntime {
    /// The runtime of `config` with its current `record`.
    pub(crate) fn new(config: StreamConfig, record: StreamRecord, budget: Arc<ViewerBudget>, shutdown: Shutdown) -> Arc<StreamRuntime> {
        let id = StreamId::from(config.id.as_str());
        // Export zeros from the start so dashboards and alerts see every stream.
        for kind in ViewerKind::ALL {
            metrics::gauge!("sightline_viewers", "stream" => config.id.clone(), "kind" => kind.label()).set(0.0);
        }
        // Counters too (`increment(0)` registers without resetting one already counting):
        // `rate()` and `increase()` over a series that appears only at its first event miss
        // that event, and the dashboard (deploy/grafana) shows a flat zero rather than a gap.
        for name in [
            "sightline_ingest_frames_total",
            "sightline_ingest_reconnects_total",
            "sightline_ingest_rtp_packets_lost_total",
            "sightline_webrtc_packets_sent_total",
            "sightline_webrtc_packets_lost_total",
        ] {
            metrics::counter!(name, "stream" => config.id.clone()).increment(0);
        }
        metrics::counter!("sightline_frames_dropped_total", "stream" => config.id.clone(), "reason" => "slow_consumer").increment(0);
        let state = if record.active { IngestState::Idle } else { IngestState::Stopped };
        Arc::new(StreamRuntime {
            hub: Arc::new(Hub::new(id.clone())),
            audio: Arc::new(AudioHub::new(id.clone())),
            id,
            health: watch::Sender::new(Health { state, ..Health::default() }),
            geometry: watch::Sender::new(Arc::new(Geometry {
                stream: config.id.clone(),
                zones: config.zones.clone(),
                lines: config.lines.clone(),
                version: 0,
                updated_at_ms: 0,
                updated_by: String::new(),
            })),
            record: watch::Sender::new(record),
            consumers: watch::Sender::new(0),
            pulling: watch::Sender::new(false),
            budget,
            shutdown,
            viewers: Counters::default(),
            config,
        })
    }

    /// Registers a viewer, within `limits.max_viewers_per_stream` and `limits.max_viewers`;
    /// the camera is pulled while any is registered (on-demand).
    ///
    /// Errors: [`Error::Viewers`] or [`Error::ViewersPerStream`] (503 with `Retry-After`).
    pub(crate) fn try_consumer(self: &Arc<Self>, kind: ViewerKind) -> Result<ConsumerGuard, Error> {
        self.budget.take()?;
        let max = self.budget.max_per_stream();
        if !self.consumers.send_if_modified(|n| {
            *n < max && {
                *n += 1;
                true
            }
        }) {
            self.budget.release();
            limit_hit("viewers_per_stream");
            return Err(Error::ViewersPerStream { stream: self.config.id.clone(), max });
        }
        self.viewers.add(kind);
        metrics::gauge!("sightline_viewers", "stream" => self.config.id.clone(), "kind" => kind.label()).increment(1.0);
        Ok(ConsumerGuard { stream: self.clone(), kind })
    }

    /// A consumer outside the viewer limits: another replica's relay of the stream (it
    /// serves that replica's viewers, which hold places there). Counted as `kind`.
    pub(crate) fn relay_consumer(self: &Arc<Self>, kind: ViewerKind) -> ConsumerGuard {
        self.budget.take_beyond();
        self.consumers.send_modify(|n| *n += 1);
        self.viewers.add(kind);
        metrics::gauge!("sightline_viewers", "stream" => self.config.id.clone(), "kind" => kind.label()).increment(1.0);
        ConsumerGuard { stream: self.clone(), kind }
    }

    /// Gives back a place taken by [`StreamRuntime::try_consumer`] (the guard's drop).
    fn release_consumer(&self, kind: ViewerKind) {
        self.viewers.remove(kind);
        metrics::gauge!("sightline_viewers", "stream" => self.config.id.clone(), "kind" => kind.label()).decrement(1.0);
        self.consumers.send_modify(|n| *n = n.saturating_sub(1));
        self.budget.release();
    }

    /// Follows the stream's state-store record.
    pub(crate) fn watch_record(&self) -> watch::Receiver<StreamRecord> {
        self.record.subscribe()
    }

    /// Follows the number of viewers.
    pub(super) fn watch_consumers(&self) -> watch::Receiver<usize> {
        self.consumers.subscribe()
    }

    /// Follows whether the camera is pulled now.
    pub(crate) fn watch_pulling(&self) -> watch::Receiver<bool> {
        self.pulling.subscribe()
    }

    /// Sets whether the camera is pulled (the pull supervisor).
    pub(super) fn set_pulling(&self, pulling: bool) {
        self.pulling.send_replace(pulling);
    }

    /// The gateway's shutdown signal.
    pub(crate) fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Follows the stream's health.
    pub(crate) fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// Where ingest writes the stream's health.
    pub(super) fn health_sender(&self) -> &watch::Sender<Health> {
        &self.health
    }

    /// The current record.
    pub(crate) fn record(&self) -> StreamRecord {
        self.record.borrow().clone()
    }

    /// The zones and lines in force.
    pub(crate) fn geometry(&self) -> Arc<Geometry> {
        self.geometry.borrow().clone()
    }

    /// The zones and lines in force now and after each change.
    pub(crate) fn watch_geometry(&self) -> watch::Receiver<Arc<Geometry>> {
        self.geometry.subscribe()
    }

    /// Takes stored zones and lines if newer than those held; returns whether they were.
    pub(crate) fn apply_geometry(&self, geometry: Geometry) -> bool {
        self.geometry.send_if_modified(|held| {
            if geometry.version > held.version {
                *held = Arc::new(geometry);
                true
            } else {
                false
            }
        })
    }

    /// Takes a record from the store if it is newer than the one held; returns whether it was.
    pub(crate) fn apply(&self, record: StreamRecord) -> bool {
        self.record.send_if_modified(|held| {
            if record.generation > held.generation {
                *held = record;
                true
            } else {
                false
            }
        })
    }

    /// Health and viewer counts now.
    pub(crate) fn health_view(&self) -> HealthView {
        HealthView { active: self.record.borrow().active, health: self.health.borrow().clone(), viewers: self.viewers.snapshot() }
    }

    /// Whether the camera should be pulled now: active, and watched unless pulled always.
    pub(super) fn wants_pull(&self) -> bool {
        self.record.borrow().active && (!self.config.pulled_on_demand() || *self.consumers.borrow() > 0)
    }

    /// A viewer's end: when the stream stops (or stops and restarts), the gateway shuts down,
    /// or `expires` (the viewer token's expiry) passes. Seen from now: a stop that lands
    /// while the viewer is being set up still ends it.
    pub(crate) fn end_watch(&self, expires: Option<std::time::Instant>) -> EndWatch {
        let mut record = self.record.subscribe();
        let started_at = record.borrow().started_at_ms;
        if record.borrow().active {
            record.mark_unchanged();
        } else {
            record.mark_changed();
        }
        EndWatch { record, started_at, shutdown: self.shutdown.clone(), expires: expires.map(tokio::time::Instant::from_std) }
    }
}

/// Holds one viewer place; dropping it releases the place (and may end on-demand pull).
#[derive(Debug)]
pub(crate) struct ConsumerGuard {
    stream: Arc<StreamRuntime>,
    kind: ViewerKind,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.stream.release_consumer(self.kind);
    }
}

/// When a viewer's session is over. See [`StreamRuntime::end_watch`].
#[derive(Debug)]
pub(crate) struct EndWatch {
    record: watch::Receiver<StreamRecord>,
    /// `started_at_ms` when the viewer came: a stop and restart merged into one change still
    /// ends it.
    started_at: Option<u64>,
    shutdown: Shutdown,
    expires: Option<tokio::time::Instant>,
}

impl EndWatch {
    /// Resolves with the reason the session ends. Cancel-safe: use it as a `select!` branch
    /// (shutdown is checked first, then the token's expiry, then the stream's record).
    pub(crate) async fn ended(&mut self) -> StopReason {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.wait() => return StopReason::Shutdown,
                () = sleep_until_some(self.expires) => return StopReason::TokenExpired,
                changed = self.record.changed() => {
                    let ended = changed.is_err() || {
                        let r = self.record.borrow_and_update();
                        !r.active || r.started_at_ms != self.started_at
                    };
                    if ended {
                        return StopReason::Stopped;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::LimitsConfig;
    use crate::core::shutdown::ShutdownTrigger;
    use crate::state::StartParams;

    /// An active record of `id` at generation 1.
    pub(crate) fn record(id: &str) -> StreamRecord {
        StreamRecord {
            id: id.into(),
            active: true,
            fps: 10,
            quality: 75,
            started_at_ms: Some(1),
            updated_at_ms: 1,
            updated_by: "r".into(),
            generation: 1,
        }
    }

    fn runtime(max_per_stream: usize, shutdown: Shutdown) -> Arc<StreamRuntime> {
        let budget = ViewerBudget::new(&LimitsConfig { max_viewers_per_stream: max_per_stream, ..LimitsConfig::default() });
        StreamRuntime::new(StreamConfig::new("cam", "rtsp://h/"), record("cam"), budget, shutdown)
    }

    #[test]
    fn viewers_are_counted_until_their_guard_drops() {
        let rt = runtime(2, Shutdown::never());
        let a = rt.try_consumer(ViewerKind::Sse).unwrap();
        let b = rt.try_consumer(ViewerKind::Webrtc).unwrap();
        assert!(matches!(rt.try_consumer(ViewerKind::Mjpeg), Err(Error::ViewersPerStream { max: 2, .. })));
        assert_eq!(rt.health_view().viewers, ViewerCounts { sse: 1, mjpeg: 0, webrtc: 1, hls: 0, rtsp: 0 });
        assert!(rt.wants_pull(), "watched and active");
        drop((a, b));
        assert_eq!(rt.health_view().viewers, ViewerCounts::default());
        assert!(!rt.wants_pull(), "on demand: nobody watches");
    }

    #[test]
    fn only_newer_records_apply() {
        let rt = runtime(2, Shutdown::never());
        let mut r = record("cam");
        crate::state::apply(&mut r, false, StartParams::default(), "r2");
        assert!(rt.apply(r.clone()));
        assert!(!rt.apply(r), "same generation again");
        assert!(!rt.record().active);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_ends_on_stop_shutdown_or_token_expiry() {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let rt = runtime(10, shutdown);
        let mut expiring = rt.end_watch(Some(std::time::Instant::now() + Duration::from_secs(5)));
        assert_eq!(expiring.ended().await, StopReason::TokenExpired);

        let mut watch = rt.end_watch(None);
        let mut r = rt.record();
        crate::state::apply(&mut r, true, StartParams::default(), "r2");
        rt.apply(r.clone());
        assert!(tokio::time::timeout(Duration::from_secs(1), watch.ended()).await.is_err(), "an update that is not a stop goes on");
        crate::state::apply(&mut r, false, StartParams::default(), "r2");
        rt.apply(r.clone());
        assert_eq!(watch.ended().await, StopReason::Stopped);
        assert_eq!(rt.end_watch(None).ended().await, StopReason::Stopped, "opened on a stopped stream: ends at once");

        crate::state::apply(&mut r, true, StartParams::default(), "r2");
        rt.apply(r);
        let mut watch = rt.end_watch(None);
        trigger.trigger();
        assert_eq!(watch.ended().await, StopReason::Shutdown);
    }
}
