//! Object detection (DESIGN.md step 6): decoded pictures go to `infer-worker` processes over
//! a Unix socket; the boxes come back and go out to viewers. Video never waits for it.
//!
//! # Layout
//! - this file: [`Detect`], the service: per-stream newest-frame slots ([`Scheduler`]),
//!   the detection messages each stream publishes, and the status the API shows.
//! - [`connection`]: one task per connected worker: handshake, its shared-memory frame ring,
//!   one frame in flight, heartbeats, answers to detection messages.
//! - [`supervisor`]: spawns `detect.workers` worker processes and restarts them with backoff.
//!
//! Pictures cross to the worker in a memfd ring sent once with SCM_RIGHTS; each frame is then
//! a small header naming its slot (see the `infer::wire` module docs).

pub mod connection;
pub mod supervisor;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{error, info, warn};

use crate::config::DetectConfig;
use crate::state::StateStore;

/// Detection messages queued per subscriber before it skips to the newest.
const OUTPUT_QUEUE: usize = 16;

/// One decoded picture offered for detection: tightly packed I420 (Y `width`×`height`,
/// then U and V at half width and height, rounded up), as the decoder produced it.
#[derive(Debug)]
pub struct Picture {
    /// Stream id.
    pub stream: Arc<str>,
    /// The access unit's frame sequence number.
    pub seq: u64,
    /// Its RTP timestamp, 90 kHz: what the browser's rVFC `rtpTimestamp` shows for it.
    pub rtp_timestamp: u32,
    /// Capture time, ms since the Unix epoch.
    pub capture_ms: u64,
    /// Width, px.
    pub width: u32,
    /// Height, px.
    pub height: u32,
    /// Full-range YUV (else limited, H.264 `video_full_range_flag` = 0).
    pub full_range: bool,
    /// Y, U, V planes back to back.
    pub planes: Vec<u8>,
    /// When it was offered (slot wait time).
    pub offered: Instant,
}

impl Picture {
    /// Bytes of packed I420 for `width`×`height`.
    pub fn packed_len(width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
    }
}

/// One box in a [`DetectionMessage`], normalised to 0..1 of the source frame.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NormalizedBox {
    /// Left edge, 0..1 of the width.
    pub x: f32,
    /// Top edge, 0..1 of the height.
    pub y: f32,
    /// Width, 0..1.
    pub w: f32,
    /// Height, 0..1.
    pub h: f32,
    /// Class index.
    pub class_id: u32,
    /// Class name (the model's `names`, or the index when it has none).
    pub label: String,
    /// Confidence 0..1.
    pub score: f32,
}

/// What viewers receive per inferred frame: on the WebRTC data channel and as SSE
/// `event: detections` (public contract, DESIGN.md).
#[derive(Clone, Debug, Serialize)]
pub struct DetectionMessage {
    /// Always `"detections"` (the data channel carries other kinds too).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stream id.
    pub stream: String,
    /// Frame sequence number (SSE frames carry it as `id:`).
    pub seq: u64,
    /// The frame's RTP timestamp (90 kHz, the camera's clock).
    pub rtp_timestamp: u32,
    /// Capture time, ms since the Unix epoch.
    pub capture_ms: u64,
    /// Source frame width, px.
    pub width: u32,
    /// Source frame height, px.
    pub height: u32,
    /// Boxes after NMS.
    pub boxes: Vec<NormalizedBox>,
    /// Model run time, ms.
    pub infer_ms: f32,
    /// Capture to this message, ms.
    pub latency_ms: f32,
}

/// Detection status of a stream, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DetectionView {
    /// `off` (not configured for this stream), `starting`, `running` or `unavailable`.
    pub state: &'static str,
    /// Why it is unavailable (the worker's last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Connected workers.
    pub workers: usize,
    /// Model file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Execution provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Frames per second cap.
    pub fps: u32,
    /// Whether this replica runs detection for the stream (holds its lease); otherwise the
    /// boxes come from the replica that does.
    pub runs_here: bool,
}

impl DetectionView {
    /// The view for a stream without detection.
    pub fn off() -> DetectionView {
        DetectionView { state: "off", reason: None, workers: 0, model: None, provider: None, fps: 0, runs_here: false }
    }
}

#[derive(Debug, Default)]
struct Slot {
    pending: Option<Picture>,
    /// Dispatch order of this stream's last frame (fairness: oldest first).
    last_dispatch: u64,
}

/// Per-stream slots holding only the newest picture; idle workers take from the stream
/// served longest ago. See [`Scheduler::offer`] and [`Scheduler::next`].
#[derive(Debug, Default)]
pub struct Scheduler {
    slots: Mutex<(BTreeMap<Arc<str>, Slot>, u64)>,
    ready: Notify,
}

impl Scheduler {
    /// Puts `picture` in its stream's slot, replacing (and counting as skipped) a picture no
    /// worker took yet.
    pub fn offer(&self, picture: Picture) {
        let mut guard = self.slots.lock().expect("scheduler lock poisoned");
        let slot = guard.0.entry(picture.stream.clone()).or_default();
        if let Some(old) = slot.pending.replace(picture) {
            metrics::counter!("sightline_detect_frames_skipped_total", "stream" => old.stream.to_string()).increment(1);
        }
        drop(guard);
        self.ready.notify_one();
    }

    /// Takes the newest picture of the stream served longest ago, if any is waiting (and
    /// wakes another idle worker if more are waiting).
    pub fn try_take(&self) -> Option<Picture> {
        let mut guard = self.slots.lock().expect("scheduler lock poisoned");
        let (slots, counter) = &mut *guard;
        let slot = slots.values_mut().filter(|s| s.pending.is_some()).min_by_key(|s| s.last_dispatch)?;
        *counter += 1;
        slot.last_dispatch = *counter;
        let picture = slot.pending.take();
        if slots.values().any(|s| s.pending.is_some()) {
            self.ready.notify_one();
        }
        picture
    }

    /// Waits for a picture (see [`Scheduler::try_take`]).
    pub async fn next(&self) -> Picture {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_take() {
                return p;
            }
            notified.await;
        }
    }

    /// Drops a stream's waiting picture (its decoding stopped).
    pub fn clear(&self, stream: &str) {
        if let Some(slot) = self.slots.lock().expect("scheduler lock poisoned").0.get_mut(stream) {
            slot.pending = None;
        }
    }
}

/// A connected worker, for status.
#[derive(Clone, Debug)]
struct WorkerInfo {
    model: String,
    provider: String,
}

#[derive(Debug, Default)]
struct Status {
    connected: HashMap<u64, WorkerInfo>,
    /// The last startup failure of a spawned worker (cleared when one connects).
    failure: Option<String>,
    /// Failures already logged at error level (each reason once).
    logged: HashSet<String>,
    /// Process ids the supervisor spawned (only those may be killed).
    children: HashSet<u32>,
    /// Children that completed the handshake.
    greeted: HashSet<u32>,
}

/// The detection service. See the module docs.
#[derive(Debug)]
pub struct Detect {
    config: DetectConfig,
    socket: PathBuf,
    scheduler: Scheduler,
    outputs: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    status: Mutex<Status>,
    /// With a shared store: this replica's messages go to the other replicas through it.
    relay: Option<mpsc::Sender<(String, Arc<str>)>>,
    /// Turns true on shutdown: supervisors kill their worker and stop restarting.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The supervisors, awaited by [`Detect::shutdown`].
    supervisors: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Detect {
    /// Binds the worker socket, starts accepting workers and spawns `config.worker_count()`
    /// supervised worker processes. With a store shared by replicas, the messages this
    /// replica produces are also published to the others (`sightline:detections:{id}`).
    pub fn start(config: &DetectConfig, store: Arc<dyn StateStore>) -> anyhow::Result<Arc<Detect>> {
        let socket = match &config.socket {
            Some(path) => path.clone(),
            None => private_socket_path()?,
        };
        // A socket file left by an earlier run would make bind fail.
        if socket.exists() {
            std::fs::remove_file(&socket).map_err(|e| anyhow::anyhow!("cannot replace worker socket {}: {e}", socket.display()))?;
        }
        let listener =
            UnixListener::bind(&socket).map_err(|e| anyhow::anyhow!("cannot listen on worker socket {}: {e}", socket.display()))?;
        info!(socket = %socket.display(), workers = config.worker_count(), model = %config.model.display(), "detection workers' socket listening");
        let detect = Arc::new(Detect {
            config: config.clone(),
            socket,
            scheduler: Scheduler::default(),
            outputs: Mutex::default(),
            status: Mutex::default(),
            relay: store.subscribe_detections().is_some().then(|| {
                let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                tokio::spawn(relay_out(store, rx));
                tx
            }),
            stopping: tokio::sync::watch::Sender::new(false),
            supervisors: Mutex::default(),
        });
        metrics::gauge!("sightline_detect_workers").set(0.0);
        metrics::counter!("sightline_detect_worker_restarts_total").absolute(0);
        tokio::spawn(detect.clone().accept(listener));
        let supervisors = (0..config.worker_count()).map(|index| tokio::spawn(supervisor::supervise(detect.clone(), index))).collect();
        *detect.supervisors.lock().expect("supervisors lock poisoned") = supervisors;
        Ok(detect)
    }

    /// Stops the workers this gateway spawned (they are killed: a worker holds no state)
    /// and removes the socket.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        let tasks = std::mem::take(&mut *self.supervisors.lock().expect("supervisors lock poisoned"));
        for task in tasks {
            let _ = task.await;
        }
        self.remove_socket();
        info!("detection workers stopped");
    }

    /// The socket workers connect to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The configuration.
    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// The newest-frame slots.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    async fn accept(self: Arc<Self>, listener: UnixListener) {
        let mut next_id = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    next_id += 1;
                    tokio::spawn(connection::serve(self.clone(), stream, next_id));
                }
                Err(e) => {
                    warn!(error = %e, "worker socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Detection messages of `stream` (JSON), from now on.
    pub fn subscribe(&self, stream: &str) -> broadcast::Receiver<Arc<str>> {
        self.outputs
            .lock()
            .expect("outputs lock poisoned")
            .entry(stream.to_owned())
            .or_insert_with(|| broadcast::channel(OUTPUT_QUEUE).0)
            .subscribe()
    }

    /// Sends a detection message this replica produced to the stream's subscribers, and to
    /// the other replicas when the store is shared.
    pub fn publish(&self, message: &DetectionMessage) {
        let json: Arc<str> = match serde_json::to_string(message) {
            Ok(s) => s.into(),
            Err(e) => {
                warn!(stream = %message.stream, error = %e, "cannot serialize detections");
                return;
            }
        };
        if let Some(relay) = &self.relay
            && relay.try_send((message.stream.clone(), json.clone())).is_err()
        {
            metrics::counter!("sightline_detect_relay_dropped_total", "stream" => message.stream.clone()).increment(1);
        }
        self.publish_local(&message.stream, json);
    }

    /// Sends a detection message (JSON) to this replica's subscribers of `stream` only.
    pub fn publish_local(&self, stream: &str, json: Arc<str>) {
        if let Some(tx) = self.outputs.lock().expect("outputs lock poisoned").get(stream) {
            let _ = tx.send(json);
        }
    }

    /// The status shown for a stream with detection on.
    pub fn view(&self) -> DetectionView {
        let status = self.status.lock().expect("status lock poisoned");
        let any = status.connected.values().next();
        let state = match (any, &status.failure) {
            (Some(_), _) => "running",
            (None, Some(_)) => "unavailable",
            (None, None) => "starting",
        };
        DetectionView {
            state,
            reason: if any.is_none() { status.failure.clone() } else { None },
            workers: status.connected.len(),
            model: any.map(|w| w.model.clone()),
            provider: any.map(|w| w.provider.clone()),
            fps: self.config.fps,
            runs_here: false,
        }
    }

    fn worker_connected(&self, id: u64, pid: u32, model: &str, provider: &str) {
        let mut status = self.status.lock().expect("status lock poisoned");
        status.connected.insert(id, WorkerInfo { model: model.to_owned(), provider: provider.to_owned() });
        status.greeted.insert(pid);
        status.failure = None;
        metrics::gauge!("sightline_detect_workers").set(status.connected.len() as f64);
    }

    fn worker_gone(&self, id: u64) {
        let mut status = self.status.lock().expect("status lock poisoned");
        status.connected.remove(&id);
        metrics::gauge!("sightline_detect_workers").set(status.connected.len() as f64);
    }

    /// Records a spawned worker that ended before its handshake; logs each reason once.
    fn startup_failed(&self, reason: String) {
        let mut status = self.status.lock().expect("status lock poisoned");
        if status.logged.insert(reason.clone()) {
            error!(reason = %reason, "detection unavailable: the worker cannot start (video is not affected; retrying with backoff)");
        }
        status.failure = Some(reason);
    }

    /// Kills `pid` if it is a worker this gateway spawned (a hung one).
    fn kill_child(&self, pid: u32) {
        if !self.status.lock().expect("status lock poisoned").children.contains(&pid) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
            && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        {
            warn!(pid = pid.as_raw_nonzero().get(), error = %e, "cannot kill the hung worker");
        }
    }
}

impl Detect {
    /// Removes the socket file (and its private directory when this gateway made it).
    pub fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
        if self.config.socket.is_none()
            && let Some(dir) = self.socket.parent()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Messages queued for the relay before they are dropped (Redis slow or down).
const RELAY_QUEUE: usize = 256;

/// Publishes this replica's detection messages through the store, in order.
async fn relay_out(store: Arc<dyn StateStore>, mut rx: mpsc::Receiver<(String, Arc<str>)>) {
    while let Some((stream, json)) = rx.recv().await {
        if let Err(e) = store.publish_detections(&stream, &json).await {
            tracing::debug!(stream, error = %e, "cannot relay detections");
        }
    }
}

/// `$TMPDIR/sightline-<pid>-<random>/workers.sock`, in a directory only this user can enter.
fn private_socket_path() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("sightline-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create the worker socket directory {}: {e}", dir.display()))?;
    Ok(dir.join("workers.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(stream: &str, seq: u64) -> Picture {
        Picture {
            stream: stream.into(),
            seq,
            rtp_timestamp: 0,
            capture_ms: 0,
            width: 2,
            height: 2,
            full_range: false,
            planes: vec![0; 6],
            offered: Instant::now(),
        }
    }

    #[test]
    fn a_slot_keeps_only_the_newest_picture() {
        let s = Scheduler::default();
        s.offer(picture("a", 1));
        s.offer(picture("a", 2));
        s.offer(picture("a", 3));
        assert_eq!(s.try_take().map(|p| p.seq), Some(3));
        assert!(s.try_take().is_none());
    }

    #[test]
    fn streams_take_turns() {
        let s = Scheduler::default();
        let mut order = Vec::new();
        for round in 0..3u64 {
            // "busy" always has a new frame; "quiet" too. Neither may starve the other.
            s.offer(picture("busy", round * 10));
            s.offer(picture("quiet", round * 10 + 1));
            order.push(s.try_take().unwrap().stream.to_string());
            s.offer(picture("busy", round * 10 + 2));
            order.push(s.try_take().unwrap().stream.to_string());
            while s.try_take().is_some() {}
        }
        let busy = order.iter().filter(|s| *s == "busy").count();
        assert_eq!(busy, 3, "each stream gets every other dispatch: {order:?}");
    }

    #[tokio::test]
    async fn an_idle_worker_wakes_for_a_new_picture() {
        let s = Arc::new(Scheduler::default());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.next().await.seq }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s.offer(picture("a", 42));
        assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap(), 42);
    }

    #[test]
    fn packed_i420_rounds_chroma_up() {
        assert_eq!(Picture::packed_len(1280, 720), 1280 * 720 * 3 / 2);
        assert_eq!(Picture::packed_len(3, 3), 9 + 2 * 4);
    }
}
