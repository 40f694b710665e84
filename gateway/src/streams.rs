//! The running streams: for each configured camera a [`StreamRuntime`] with its hub, pixel
//! pipeline, health and the last state-store record, plus the supervisor task that pulls the
//! camera while the stream is active and watched (on-demand pull with a linger period).
//!
//! State flows one way: API → [`StateStore`] → store events → [`StreamRuntime::apply`] →
//! `watch` channels that feeds and the supervisor follow. Every replica does the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use crate::config::{Config, IngestConfig, StreamConfig, Transport};
use crate::detect::{Detect, DetectionView};
use crate::hub::Hub;
use crate::ingest::{self, Health, IngestContext, IngestState};
use crate::limits::{ViewerBudget, ViewerLimit};
use crate::media::Pixels;
use crate::redact::redact_url;
use crate::state::{StartParams, StateStore, StoreError, StreamRecord, now_ms};

/// Kinds of viewers, for counts and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewerKind {
    /// `GET /api/streams/{id}/feed`.
    Sse,
    /// `GET /api/streams/{id}/mjpeg`.
    Mjpeg,
    /// A WHEP session.
    Webrtc,
}

impl ViewerKind {
    fn label(self) -> &'static str {
        match self {
            ViewerKind::Sse => "sse",
            ViewerKind::Mjpeg => "mjpeg",
            ViewerKind::Webrtc => "webrtc",
        }
    }
}

/// Viewer counts by kind, as shown by the API.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ViewerCounts {
    /// SSE viewers.
    pub sse: usize,
    /// MJPEG viewers.
    pub mjpeg: usize,
    /// WebRTC (WHEP) viewers.
    pub webrtc: usize,
}

/// One configured stream at run time.
#[derive(Debug)]
pub struct StreamRuntime {
    /// The definition from config (URL with credentials: never serialize it as is).
    pub config: StreamConfig,
    /// Access unit fan-out.
    pub hub: Arc<Hub>,
    /// Decoder and JPEG encoders, on demand.
    pub pixels: Arc<Pixels>,
    /// Detection, when on for this stream.
    detect: Option<Arc<Detect>>,
    /// This replica holds the stream's detection lease and runs detection itself.
    detects_here: AtomicBool,
    health: watch::Sender<Health>,
    record: watch::Sender<StreamRecord>,
    consumers: watch::Sender<usize>,
    /// Gateway-wide viewer places and the per-stream maximum.
    budget: Arc<ViewerBudget>,
    /// Turns true when the gateway shuts down: feeds and WHEP sessions end.
    shutdown: watch::Receiver<bool>,
    sse: AtomicUsize,
    mjpeg: AtomicUsize,
    webrtc: AtomicUsize,
}

/// Holds one consumer place; dropping it releases the place (and may end on-demand pull).
#[derive(Debug)]
pub struct ConsumerGuard {
    stream: Arc<StreamRuntime>,
    kind: ViewerKind,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.stream.counter(self.kind).fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("sightline_viewers", "stream" => self.stream.config.id.clone(), "kind" => self.kind.label()).decrement(1.0);
        self.stream.consumers.send_modify(|n| *n -= 1);
        self.stream.budget.release();
    }
}

/// The API's view of a stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamView {
    /// Stream id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Camera URL with the password replaced by `***`.
    pub url: String,
    /// RTP transport used towards the camera.
    pub transport: Transport,
    /// Whether the camera is pulled only while watched.
    pub on_demand: bool,
    /// Whether the stream is started.
    pub active: bool,
    /// Default feed fps.
    pub fps: u32,
    /// Default feed JPEG quality.
    pub quality: u8,
    /// State store generation of this record.
    pub generation: u64,
    /// Last start, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Last change, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Replica that made the last change.
    pub updated_by: String,
    /// Ingest health and viewer counts.
    pub health: HealthView,
    /// Object detection status.
    pub detection: DetectionView,
}

/// Health plus viewer counts, also the payload of SSE `event: state`.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HealthView {
    /// Whether the stream is started.
    pub active: bool,
    /// Ingest health.
    #[serde(flatten)]
    pub health: Health,
    /// Viewer counts.
    pub viewers: ViewerCounts,
}

impl StreamRuntime {
    fn new(
        config: StreamConfig,
        record: StreamRecord,
        queue_depth: usize,
        detect: Option<Arc<Detect>>,
        budget: Arc<ViewerBudget>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<StreamRuntime> {
        let hub = Arc::new(Hub::new(&config.id));
        // Export zeros from the start so dashboards and alerts see every stream.
        for kind in [ViewerKind::Sse, ViewerKind::Mjpeg, ViewerKind::Webrtc] {
            metrics::gauge!("sightline_viewers", "stream" => config.id.clone(), "kind" => kind.label()).set(0.0);
        }
        metrics::gauge!("sightline_decoders_active", "stream" => config.id.clone()).set(0.0);
        let state = if record.active { IngestState::Idle } else { IngestState::Stopped };
        Arc::new(StreamRuntime {
            pixels: Pixels::new(&config.id, hub.clone(), queue_depth),
            hub,
            detect: detect.filter(|_| config.detect),
            detects_here: AtomicBool::new(false),
            health: watch::Sender::new(Health { state, ..Health::default() }),
            record: watch::Sender::new(record),
            consumers: watch::Sender::new(0),
            budget,
            shutdown,
            sse: AtomicUsize::new(0),
            mjpeg: AtomicUsize::new(0),
            webrtc: AtomicUsize::new(0),
            config,
        })
    }

    fn counter(&self, kind: ViewerKind) -> &AtomicUsize {
        match kind {
            ViewerKind::Sse => &self.sse,
            ViewerKind::Mjpeg => &self.mjpeg,
            ViewerKind::Webrtc => &self.webrtc,
        }
    }

    /// Registers a viewer, within `limits.max_viewers_per_stream` and `limits.max_viewers`;
    /// the camera is pulled while any is registered (on-demand).
    pub fn try_consumer(self: &Arc<Self>, kind: ViewerKind) -> Result<ConsumerGuard, ViewerLimit> {
        self.budget.take()?;
        let max = self.budget.max_per_stream();
        if !self.consumers.send_if_modified(|n| {
            *n < max && {
                *n += 1;
                true
            }
        }) {
            self.budget.release();
            crate::limits::hit("viewers_per_stream");
            return Err(ViewerLimit::PerStream(max));
        }
        self.counter(kind).fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("sightline_viewers", "stream" => self.config.id.clone(), "kind" => kind.label()).increment(1.0);
        Ok(ConsumerGuard { stream: self.clone(), kind })
    }

    /// Follows the stream's state-store record.
    pub fn watch_record(&self) -> watch::Receiver<StreamRecord> {
        self.record.subscribe()
    }

    /// Turns true when the gateway shuts down.
    pub fn watch_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Follows the stream's health.
    pub fn watch_health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    /// The current record.
    pub fn record(&self) -> StreamRecord {
        self.record.borrow().clone()
    }

    /// Takes a record from the store if it is newer than the one held; returns whether it was.
    pub fn apply(&self, record: StreamRecord) -> bool {
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
    pub fn health_view(&self) -> HealthView {
        HealthView {
            active: self.record.borrow().active,
            health: self.health.borrow().clone(),
            viewers: ViewerCounts {
                sse: self.sse.load(Ordering::Relaxed),
                mjpeg: self.mjpeg.load(Ordering::Relaxed),
                webrtc: self.webrtc.load(Ordering::Relaxed),
            },
        }
    }

    /// The API representation (credentials redacted).
    pub fn view(&self) -> StreamView {
        let r = self.record();
        StreamView {
            id: self.config.id.clone(),
            name: self.config.display_name().to_owned(),
            url: redact_url(&self.config.url),
            transport: self.config.transport,
            on_demand: self.config.on_demand,
            active: r.active,
            fps: r.fps,
            quality: r.quality,
            generation: r.generation,
            started_at_ms: r.started_at_ms,
            updated_at_ms: r.updated_at_ms,
            updated_by: r.updated_by,
            health: self.health_view(),
            detection: self
                .detect
                .as_ref()
                .map_or_else(DetectionView::off, |d| DetectionView { runs_here: self.detects_here.load(Ordering::Relaxed), ..d.view() }),
        }
    }

    /// Detection messages (JSON) of this stream, if detection is on for it.
    pub fn detections(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>> {
        self.detect.as_ref().map(|d| d.subscribe(&self.config.id))
    }

    fn wants_pull(&self) -> bool {
        self.record.borrow().active && (!self.config.on_demand || *self.consumers.borrow() > 0)
    }

    /// Holds (takes, renews) the stream's detection lease while the camera is pulled and
    /// runs detection while it holds it; replicas without it get the holder's messages
    /// through the store. Runs until aborted. If the store cannot be reached, detection runs
    /// here (duplicate work beats no boxes).
    async fn lead_detection(self: Arc<Self>, store: Arc<dyn StateStore>) {
        loop {
            let held = match store.acquire_detect_lease(&self.config.id, DETECT_LEASE_TTL).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::debug!(stream = %self.config.id, error = %e, "detection lease unknown; detecting here");
                    true
                }
            };
            if held != self.detects_here.swap(held, Ordering::Relaxed) {
                info!(stream = %self.config.id, here = held, "detection lease {}", if held { "taken" } else { "held by another replica" });
                self.pixels.set_detect(if held { self.detect.clone() } else { None });
            }
            tokio::time::sleep(DETECT_LEASE_RENEW).await;
        }
    }

    /// Starts and stops ingest as the stream's record and viewers change. Runs until the
    /// gateway shuts down.
    async fn supervise(self: Arc<Self>, ingest_config: IngestConfig, store: Arc<dyn StateStore>) {
        let mut record = self.record.subscribe();
        let mut consumers = self.consumers.subscribe();
        let mut shutdown = self.shutdown.clone();
        let stopping = |s: &watch::Receiver<bool>| *s.borrow();
        loop {
            while !self.wants_pull() {
                if stopping(&shutdown) {
                    return;
                }
                tokio::select! {
                    _ = record.changed() => {}
                    _ = consumers.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
            if stopping(&shutdown) {
                return;
            }
            let task: JoinHandle<()> = tokio::spawn(ingest::run(IngestContext {
                stream: self.config.clone(),
                config: ingest_config.clone(),
                hub: self.hub.clone(),
                health: self.health.clone(),
            }));
            info!(stream = %self.config.id, "pulling camera");
            // Detection runs while the camera is pulled, on the replica holding the lease.
            let lead = self.detect.is_some().then(|| tokio::spawn(self.clone().lead_detection(store.clone())));
            loop {
                let active = record.borrow_and_update().active;
                let watched = *consumers.borrow_and_update() > 0;
                if !active || stopping(&shutdown) {
                    break;
                }
                if self.config.on_demand && !watched {
                    tokio::select! {
                        () = tokio::time::sleep(self.config.linger) => break,
                        _ = record.changed() => {}
                        _ = consumers.changed() => {}
                        _ = shutdown.changed() => {}
                    }
                } else {
                    tokio::select! {
                        _ = record.changed() => {}
                        _ = consumers.changed() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            task.abort();
            let _ = task.await;
            if let Some(lead) = lead {
                lead.abort();
                let _ = lead.await;
                self.pixels.set_detect(None);
                if self.detects_here.swap(false, Ordering::Relaxed) {
                    if stopping(&shutdown) {
                        // Hand the lease over now, so another replica takes detection at once.
                        let _ = store.release_detect_lease(&self.config.id).await;
                    } else {
                        let (store, id) = (store.clone(), self.config.id.clone());
                        tokio::spawn(async move { store.release_detect_lease(&id).await });
                    }
                }
            }
            self.hub.clear_cache();
            let active = self.record.borrow().active;
            info!(stream = %self.config.id, active, "stopped pulling camera");
            self.health.send_modify(|h| {
                h.state = if active { IngestState::Idle } else { IngestState::Stopped };
                h.fps = 0.0;
                h.bitrate_bps = 0;
            });
            if stopping(&shutdown) {
                return;
            }
        }
    }
}

/// Resolves when `rx` turns true (the gateway shuts down); never if its sender is gone.
pub async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Lifetime of the detection lease; its holder renews it every [`DETECT_LEASE_RENEW`].
const DETECT_LEASE_TTL: Duration = Duration::from_secs(6);
/// How often the lease is renewed, or tried by replicas that do not hold it.
const DETECT_LEASE_RENEW: Duration = Duration::from_secs(2);
/// Largest capture-time difference between two replicas' copies of one frame, ms (under
/// half a frame interval at 30 fps).
const RELAY_MATCH_MS: u64 = 15;

/// All streams of this gateway.
#[derive(Debug)]
pub struct Streams {
    map: BTreeMap<String, Arc<StreamRuntime>>,
    store: Arc<dyn StateStore>,
    replica_id: String,
    /// The per-stream supervisors; they end when the gateway shuts down.
    supervisors: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for dyn StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

impl Streams {
    /// Waits for every stream to stop pulling after shutdown began (detection leases are
    /// released by then).
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.supervisors.lock().expect("supervisors lock poisoned"));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Registers every configured stream in the store (keeping existing records), then starts
    /// the supervisors and the task that applies store events.
    pub async fn start(
        config: &Config,
        store: Arc<dyn StateStore>,
        replica_id: String,
        detect: Option<Arc<Detect>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Streams>, StoreError> {
        let budget = ViewerBudget::new(&config.limits);
        let mut map = BTreeMap::new();
        for s in &config.streams {
            let initial = StreamRecord {
                id: s.id.clone(),
                active: s.active,
                fps: s.fps,
                quality: s.quality,
                started_at_ms: s.active.then(now_ms),
                updated_at_ms: now_ms(),
                updated_by: replica_id.clone(),
                generation: 1,
            };
            let record = store.ensure(initial).await?;
            let rt = StreamRuntime::new(s.clone(), record, config.feeds.viewer_queue, detect.clone(), budget.clone(), shutdown.clone());
            map.insert(s.id.clone(), rt);
        }
        let streams = Arc::new(Streams { map, store, replica_id, supervisors: std::sync::Mutex::default() });
        let supervisors = streams
            .map
            .values()
            .map(|rt| {
                let span = tracing::info_span!("stream", id = %rt.config.id);
                tokio::spawn(rt.clone().supervise(config.ingest.clone(), streams.store.clone()).instrument(span))
            })
            .collect();
        *streams.supervisors.lock().expect("supervisors lock poisoned") = supervisors;
        if let Some(relayed) = streams.store.subscribe_detections() {
            tokio::spawn(streams.clone().relay_in(relayed));
        }
        tokio::spawn(streams.clone().follow_store());
        Ok(streams)
    }

    /// Delivers detection messages from the replica holding a stream's lease to this
    /// replica's viewers, renamed to this replica's copy of the frame: its own RTSP session
    /// numbers (`seq`) and timestamps (`rtp_timestamp`) differ, so the frame is found by
    /// capture time (within [`RELAY_MATCH_MS`]); unmatched messages are dropped and counted.
    async fn relay_in(self: Arc<Self>, mut relayed: tokio::sync::broadcast::Receiver<(String, Arc<str>)>) {
        loop {
            let (stream, json) = match relayed.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(rt) = self.map.get(&stream) else { continue };
            let Some(detect) = &rt.detect else { continue };
            if rt.detects_here.load(Ordering::Relaxed) {
                continue;
            }
            let Ok(mut msg) = serde_json::from_str::<serde_json::Value>(&json) else {
                warn!(stream, "ignoring a malformed relayed detection message");
                continue;
            };
            let Some(capture_ms) = msg["capture_ms"].as_u64() else { continue };
            let Some((seq, rtp_timestamp)) = rt.hub.unit_near(capture_ms, RELAY_MATCH_MS) else {
                metrics::counter!("sightline_detect_relay_unmatched_total", "stream" => stream.clone()).increment(1);
                continue;
            };
            msg["seq"] = seq.into();
            msg["rtp_timestamp"] = rtp_timestamp.into();
            metrics::counter!("sightline_detect_relayed_total", "stream" => stream.clone()).increment(1);
            detect.publish_local(&stream, msg.to_string().into());
        }
    }

    /// Applies store events to the runtimes; after a lag, re-reads every record.
    async fn follow_store(self: Arc<Self>) {
        let mut events = self.store.subscribe();
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(rt) = self.map.get(&event.record.id) {
                        rt.apply(event.record);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for (id, rt) in &self.map {
                        match self.store.get(id).await {
                            Ok(r) => {
                                rt.apply(r);
                            }
                            Err(e) => warn!(stream = %id, error = %e, "cannot re-read stream state"),
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// One stream.
    pub fn get(&self, id: &str) -> Option<&Arc<StreamRuntime>> {
        self.map.get(id)
    }

    /// All streams in id order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<StreamRuntime>> {
        self.map.values()
    }

    /// Starts or stops a stream through the store and applies the result here at once.
    pub async fn set_active(&self, id: &str, active: bool, params: StartParams) -> Result<Arc<StreamRuntime>, StoreError> {
        let rt = self.map.get(id).ok_or_else(|| StoreError::UnknownStream(id.to_owned()))?;
        let record = self.store.set_active(id, active, params, &self.replica_id).await?;
        info!(stream = %id, active, generation = record.generation, "stream state changed");
        rt.apply(record);
        Ok(rt.clone())
    }
}
