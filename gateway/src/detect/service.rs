//! The detection service's state: its workers' status, the streams it detects for, and
//! where its messages go. The tasks that serve it (worker connections, supervisors, lease
//! holders, relay) live in the sibling modules; `detect::start` starts them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use media::FrameMeta;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tracing::{error, warn};

use super::merge::{Merged, Merging};
use super::scheduler::Scheduler;
use crate::config::{DetectConfig, PoolConfig};
use crate::core::StreamId;
use crate::core::detections::{DetectionFanout, Detections, NormalizedBox};
use crate::core::events::{AnalyticsEvent, EventBox, EventFanout, EventKind, NewEvent};
use crate::core::frame::{Picture, PictureSink};
use crate::core::shutdown::{Shutdown, ShutdownTrigger};
use crate::pipeline::decimate::Decimator;

/// Detection status of a stream, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct DetectionView {
    /// `off` (not configured for this stream), `starting`, `running` or `unavailable`.
    pub(crate) state: &'static str,
    /// Why it is unavailable (the worker's last error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// Connected workers.
    pub(crate) workers: usize,
    /// Model file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) model: Option<String>,
    /// Execution provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<String>,
    /// Frames per second cap (of `detect.model`).
    pub(crate) fps: u32,
    /// Whether this replica runs detection for the stream (holds its lease); otherwise the
    /// boxes come from the replica that does.
    pub(crate) runs_here: bool,
    /// Every model run on the stream (`detect.model`, then `[[detect.models]]`).
    pub(crate) models: Vec<ModelView>,
}

/// One model of a detected stream, as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ModelView {
    /// Its name (the boxes' `model`).
    pub(crate) name: String,
    /// Model file name.
    pub(crate) model: String,
    /// Frames per second cap.
    pub(crate) fps: u32,
    /// Connected workers of its pool.
    pub(crate) workers: usize,
    /// Why its workers cannot start (the last one's error), while none of them is connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

impl DetectionView {
    /// The view for a stream without detection.
    pub(crate) fn off() -> DetectionView {
        DetectionView { state: "off", reason: None, workers: 0, model: None, provider: None, fps: 0, runs_here: false, models: Vec::new() }
    }
}

/// One model's workers: what they run, and the newest-picture slots they take from.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) config: PoolConfig,
    pub(super) scheduler: Scheduler,
    /// Per stream: which of the decoded pictures this model takes (at its `fps`).
    decimators: Mutex<HashMap<StreamId, Decimator>>,
    /// Connected workers: a pool without any gets no pictures (the frames it would share
    /// would wait `merge_wait` for it).
    connected: std::sync::atomic::AtomicUsize,
}

/// A connected worker, for status (`GET /api/workers`).
#[derive(Clone, Debug)]
pub(crate) struct WorkerInfo {
    /// `local` (Unix socket, shared memory) or `remote` (TCP/TLS, pictures inline).
    pub(crate) kind: &'static str,
    /// The worker's host name (a remote worker's own, else this machine's `localhost`).
    pub(crate) host: String,
    /// A remote worker's address.
    peer: Option<SocketAddr>,
    /// Its model's pool.
    pool: usize,
    /// `unix`, `tcp` or `tls`.
    transport: &'static str,
    /// How pictures reach it: `shared_memory`, `jpeg` or `i420`.
    pictures: &'static str,
    pid: u32,
    model: String,
    provider: String,
    capacity: u32,
    connected_ms: u64,
    /// Frames answered, the bytes sent for them (inline pictures), and the answers' times.
    frames: u64,
    bytes: u64,
    infer_ms: f64,
    decode_ms: f64,
    /// When each of the last frames was answered (for fps over [`FPS_WINDOW`]).
    recent: std::collections::VecDeque<Instant>,
}

/// The window `fps` is measured over.
const FPS_WINDOW: Duration = Duration::from_secs(10);

impl WorkerInfo {
    /// A worker on the Unix socket.
    pub(crate) fn local(hello: &wire::Hello, pool: usize) -> WorkerInfo {
        WorkerInfo::new(hello, pool, "local", "localhost".into(), None, "unix", "shared_memory")
    }

    /// A worker connected from `peer`.
    pub(crate) fn remote(hello: &wire::Hello, pool: usize, peer: SocketAddr, tls: bool, encoding: wire::Encoding) -> WorkerInfo {
        let host = if hello.host.is_empty() { peer.ip().to_string() } else { hello.host.clone() };
        let pictures = match encoding {
            wire::Encoding::Jpeg => "jpeg",
            wire::Encoding::I420 => "i420",
        };
        WorkerInfo::new(hello, pool, "remote", host, Some(peer), if tls { "tls" } else { "tcp" }, pictures)
    }

    fn new(
        hello: &wire::Hello,
        pool: usize,
        kind: &'static str,
        host: String,
        peer: Option<SocketAddr>,
        transport: &'static str,
        pictures: &'static str,
    ) -> WorkerInfo {
        WorkerInfo {
            kind,
            host,
            peer,
            pool,
            transport,
            pictures,
            pid: hello.pid,
            model: hello.model.clone(),
            provider: hello.provider.clone(),
            capacity: hello.capacity,
            connected_ms: crate::core::clock::now_ms(),
            frames: 0,
            bytes: 0,
            infer_ms: 0.0,
            decode_ms: 0.0,
            recent: std::collections::VecDeque::new(),
        }
    }

    fn view(&self, id: u64, now: Instant, pools: &[Pool]) -> WorkerView {
        let recent = self.recent.iter().filter(|t| now.duration_since(**t) <= FPS_WINDOW).count();
        let connected_for = Duration::from_millis(crate::core::clock::now_ms().saturating_sub(self.connected_ms));
        let window = connected_for.clamp(Duration::from_secs(1), FPS_WINDOW).as_secs_f64();
        let n = self.frames.max(1) as f64;
        WorkerView {
            id,
            kind: self.kind,
            host: self.host.clone(),
            address: self.peer.map(|p| p.to_string()),
            transport: self.transport,
            pictures: self.pictures,
            pid: self.pid,
            pool: pools.get(self.pool).map(|p| p.config.name.clone()).unwrap_or_default(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            capacity: self.capacity,
            connected_at_ms: self.connected_ms,
            frames: self.frames,
            fps: (recent as f64 / window * 10.0).round() / 10.0,
            bytes_per_frame: (self.bytes as f64 / n).round() as u64,
            infer_ms: (self.infer_ms / n * 100.0).round() / 100.0,
            decode_ms: (self.pictures == "jpeg").then(|| (self.decode_ms / n * 100.0).round() / 100.0),
        }
    }
}

/// A connected detection worker, as `GET /api/workers` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct WorkerView {
    /// This gateway's number for the connection.
    pub(crate) id: u64,
    /// `local` (this machine, Unix socket) or `remote` (TCP or TLS).
    pub(crate) kind: &'static str,
    /// The worker's host name (`localhost` for local workers).
    pub(crate) host: String,
    /// A remote worker's address (`ip:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
    /// `unix`, `tcp` or `tls`.
    pub(crate) transport: &'static str,
    /// How pictures reach it: `shared_memory`, `jpeg` or `i420`.
    pub(crate) pictures: &'static str,
    /// Its process id (on its host).
    pub(crate) pid: u32,
    /// The name of the model whose pool it serves (the boxes' `model`).
    pub(crate) pool: String,
    /// Model file name.
    pub(crate) model: String,
    /// Execution provider (`cpu`, `cuda`, …).
    pub(crate) provider: String,
    /// Frames in flight it says it can take (advisory: each worker gets one at a time).
    pub(crate) capacity: u32,
    /// When it connected, ms since the Unix epoch.
    pub(crate) connected_at_ms: u64,
    /// Frames it answered.
    pub(crate) frames: u64,
    /// Frames answered per second over the last 10 s.
    pub(crate) fps: f64,
    /// Mean bytes sent per frame (0 for shared memory, where only a slot number travels).
    pub(crate) bytes_per_frame: u64,
    /// Mean inference time, ms.
    pub(crate) infer_ms: f64,
    /// Mean JPEG decode time on the worker, ms (JPEG pictures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) decode_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub(super) struct Status {
    connected: HashMap<u64, WorkerInfo>,
    /// Per model (pool): the last startup failure of a spawned worker (cleared when one of
    /// its workers connects).
    failures: HashMap<usize, String>,
    /// Failures already logged at error level (each reason once).
    logged: HashSet<String>,
    /// Process ids the supervisor spawned (only those may be killed).
    pub(super) children: HashSet<u32>,
    /// Children that completed the handshake.
    pub(super) greeted: HashSet<u32>,
}

/// The detection service. See the module docs.
#[derive(Debug)]
pub(crate) struct Detect {
    config: DetectConfig,
    socket: PathBuf,
    /// One pool per model: `detect.model` first.
    pools: Vec<Pool>,
    /// Frames several pools took, until their message goes out.
    merging: Merging,
    pub(super) fanout: Arc<DetectionFanout>,
    pub(super) status: Mutex<Status>,
    /// Streams with detection on, and whether this replica runs it for them now.
    here: HashMap<StreamId, Arc<AtomicBool>>,
    /// Per detected stream (with `detect.track`): the tracker every message this replica's
    /// workers produce for it goes through.
    trackers: HashMap<StreamId, Mutex<Tracking>>,
    /// Where the events the trackers' objects make go.
    events: Arc<EventFanout>,
    /// With a shared store: this replica's messages go to the other replicas through it.
    relay: Option<mpsc::Sender<Arc<Detections>>>,
    /// Fires when detection shuts down: supervisors kill their worker and stop restarting.
    stopping: ShutdownTrigger,
    /// The last worker connection's number.
    connections: std::sync::atomic::AtomicU64,
    /// Where remote workers connect, once bound.
    remote_listen: std::sync::OnceLock<SocketAddr>,
}

impl Detect {
    /// The service for `config`, its workers connecting on `socket`, publishing to `fanout`
    /// (and to `relay`, the other replicas, when there are any), for the `detected` streams.
    pub(super) fn new(
        config: &DetectConfig,
        socket: PathBuf,
        fanout: Arc<DetectionFanout>,
        events: Arc<EventFanout>,
        detected: impl Iterator<Item = StreamId>,
        relay: Option<mpsc::Sender<Arc<Detections>>>,
    ) -> Detect {
        let here: HashMap<StreamId, Arc<AtomicBool>> = detected.map(|id| (id, Arc::new(AtomicBool::new(false)))).collect();
        let pools: Vec<Pool> = config
            .pools()
            .into_iter()
            .map(|config| Pool { config, scheduler: Scheduler::default(), decimators: Mutex::default(), connected: Default::default() })
            .collect();
        let models =
            || pools.iter().map(|p| (p.config.name.clone(), config.tracker_at(p.config.confidence), p.config.confidence)).collect();
        let trackers = here.keys().filter(|_| config.track).map(|id| (id.clone(), Mutex::new(Tracking::new(models())))).collect();
        // A frame waits at most a worker's timeout to be sent, and as long after it to be
        // answered; pools settle every frame, so this is only a bound.
        let forget = (config.timeout * 4).max(Duration::from_secs(60));
        let merging = Merging::new(pools.iter().map(|p| p.config.name.clone()).collect(), forget);
        Detect {
            config: config.clone(),
            socket,
            pools,
            merging,
            fanout,
            status: Mutex::default(),
            here,
            trackers,
            events,
            relay,
            stopping: ShutdownTrigger::new().0,
            connections: std::sync::atomic::AtomicU64::new(0),
            remote_listen: std::sync::OnceLock::new(),
        }
    }

    /// Fires when detection shuts down ([`Detect::stop`]).
    pub(super) fn stopping(&self) -> Shutdown {
        self.stopping.subscribe()
    }

    /// Tells the supervisors to kill their workers and stop restarting them.
    pub(super) fn stop(&self) {
        self.stopping.trigger();
    }

    /// The socket workers connect to.
    pub(crate) fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// The models' pools, `detect.model`'s first.
    pub(super) fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The pool of workers announcing model file `model`, and whether one is configured
    /// with it (else `detect.model`'s pool takes the worker).
    pub(super) fn pool_for(&self, model: &str) -> (usize, bool) {
        match self.pools.iter().position(|p| p.config.file_name() == model) {
            Some(i) => (i, true),
            None => (0, false),
        }
    }

    /// The highest rate of any model: the rate pictures are decoded for detection at.
    pub(super) fn max_fps(&self) -> u32 {
        self.pools.iter().map(|p| p.config.fps).max().unwrap_or(self.config.fps)
    }

    /// Puts `picture` in pool `pool`'s slot; a picture it replaced will not be answered.
    fn offer_to(&self, pool: usize, picture: Picture) {
        if let Some(old) = self.pools[pool].scheduler.offer(picture) {
            self.settle_lost(pool, &old.meta);
        }
    }

    /// Pool `pool` will not answer for `frame` (a newer picture replaced it, its worker
    /// failed or died): the frame's message goes out if it waited only for that pool.
    pub(super) fn settle_lost(&self, pool: usize, frame: &FrameMeta) {
        if let Some(message) = self.merging.abandon(pool, &frame.stream, frame.seq) {
            self.send(message);
        }
    }

    /// Whether this replica runs detection for `stream` now (`None`: not a detected stream).
    pub(super) fn runs_here(&self, stream: &str) -> Option<&Arc<AtomicBool>> {
        self.here.get(stream)
    }

    /// Detection messages of `stream` from now on; `None` when it has no detection.
    pub(crate) fn subscribe(&self, stream: &str) -> Option<broadcast::Receiver<Arc<Detections>>> {
        self.here.contains_key(stream).then(|| self.fanout.subscribe(stream))
    }

    /// Pool `pool`'s worker found `boxes` on `picture` in `infer_ms`: gives each box its
    /// track id (see `track`; the events its objects made go out with the picture, for their
    /// snapshots), then sends the frame's message (see [`Merging`]) to the stream's
    /// subscribers, and to the other replicas when the store is shared.
    pub(super) fn answered(self: &Arc<Self>, pool: usize, picture: Picture, mut boxes: Vec<NormalizedBox>, infer_ms: f32) {
        let frame = picture.meta.clone();
        if let Some(tracking) = self.trackers.get(&frame.stream) {
            let events = tracking.lock().follow(pool, &frame, &mut boxes);
            if !events.is_empty() {
                let picture = Arc::new(picture);
                for event in events {
                    self.events.publish(event, Some(picture.clone()));
                }
            }
        }
        match self.merging.answer(pool, &frame, boxes, infer_ms) {
            Merged::Send(message) => self.send(message),
            Merged::Wait { first: true } => {
                let (detect, stream, seq) = (self.clone(), frame.stream.clone(), frame.seq);
                let wait = self.config.merge_wait;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(message) = detect.merging.expire(&stream, seq) {
                        detect.send(message);
                    }
                });
            }
            Merged::Wait { first: false } => {}
        }
    }

    /// Sends a frame's message to the stream's subscribers and the other replicas.
    fn send(&self, mut message: Detections) {
        if let Some(tracking) = self.trackers.get(&message.frame.stream) {
            message.track_epoch = Some(tracking.lock().epoch);
        }
        let labels = [("stream", message.frame.stream.to_string())];
        metrics::counter!("sightline_detect_frames_total", &labels).increment(1);
        metrics::counter!("sightline_detect_boxes_total", &labels).increment(message.boxes.len() as u64);
        metrics::histogram!("sightline_detect_frame_to_box_seconds", &labels).record(f64::from(message.latency_ms) / 1000.0);
        let message = Arc::new(message);
        if let Some(relay) = &self.relay
            && relay.try_send(message.clone()).is_err()
        {
            metrics::counter!("sightline_detect_relay_dropped_total", "stream" => message.frame.stream.to_string()).increment(1);
        }
        self.fanout.publish(message);
    }

    /// The detection lease of `stream` came here (`held`) or went: here, the tracks the
    /// previous holder's messages showed go on, with their ids.
    pub(super) fn lease_changed(&self, stream: &str, held: bool) {
        if let Some(tracking) = self.trackers.get(stream)
            && held
        {
            let tracks = tracking.lock().take_over(crate::core::clock::now_ms());
            tracing::info!(stream, tracks, "tracking here now, continuing the tracks last relayed");
        }
    }

    /// Follows a message the lease holder relayed: the events its tracks made are stored here
    /// too (the same ids: one row), and its tracks are remembered for a takeover.
    pub(super) fn follow_relayed(&self, message: &Detections) {
        if let Some(tracking) = self.trackers.get(&message.frame.stream) {
            let events = tracking.lock().follow_relayed(message);
            for e in events {
                self.events.store_only(e);
            }
        }
    }

    /// Objects in each of `stream`'s zones now, per label (`None` without tracking): what this
    /// replica's tracker or, on the others, the holder's relayed tracks say.
    pub(crate) fn occupancy(&self, stream: &str) -> Option<Vec<(String, String, usize)>> {
        self.trackers.get(stream).map(|t| t.lock().analyzer.occupancy())
    }

    /// Sets `stream`'s zones and lines (validated); objects in a changed zone leave it quietly.
    pub(crate) fn set_geometry(&self, stream: &str, zones: Vec<track::zones::Zone>, lines: Vec<track::zones::Line>) {
        if let Some(tracking) = self.trackers.get(stream) {
            tracking.lock().analyzer.set_geometry(zones, lines);
        }
    }

    /// The status shown for `stream`: off when it has no detection.
    pub(crate) fn view(&self, stream: &str) -> DetectionView {
        let Some(here) = self.runs_here(stream) else { return DetectionView::off() };
        let status = self.status.lock();
        let any = status.connected.values().min_by_key(|w| w.pool);
        let failure = status.failures.iter().min_by_key(|(pool, _)| **pool).map(|(_, reason)| reason);
        let state = match (any, failure) {
            (Some(_), _) => "running",
            (None, Some(_)) => "unavailable",
            (None, None) => "starting",
        };
        DetectionView {
            state,
            reason: if any.is_none() { failure.cloned() } else { None },
            workers: status.connected.len(),
            model: any.map(|w| w.model.clone()),
            provider: any.map(|w| w.provider.clone()),
            fps: self.config.fps,
            runs_here: here.load(Ordering::Relaxed),
            models: self
                .pools
                .iter()
                .enumerate()
                .map(|(i, p)| ModelView {
                    name: p.config.name.clone(),
                    model: p.config.file_name(),
                    fps: p.config.fps,
                    workers: status.connected.values().filter(|w| w.pool == i).count(),
                    reason: status.failures.get(&i).cloned(),
                })
                .collect(),
        }
    }

    /// Where remote workers connect (`detect.remote.listen` as bound), when on.
    pub(crate) fn remote_listen(&self) -> Option<SocketAddr> {
        self.remote_listen.get().copied()
    }

    pub(super) fn set_remote_listen(&self, addr: SocketAddr) {
        let _ = self.remote_listen.set(addr);
    }

    /// A number for a new worker connection (local or remote), unique in this process.
    pub(super) fn next_worker_id(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether a remote worker's `token` is `detect.remote.token` (compared in constant time).
    pub(super) fn remote_token_matches(&self, token: Option<&str>) -> bool {
        match (&self.config.remote.token, token) {
            (Some(want), Some(got)) => crate::core::constant_time_eq(want.as_bytes(), got.as_bytes()),
            _ => false,
        }
    }

    /// Every connected worker, by connection number.
    pub(crate) fn workers(&self) -> Vec<WorkerView> {
        let now = Instant::now();
        let status = self.status.lock();
        let mut list: Vec<WorkerView> = status.connected.iter().map(|(id, w)| w.view(*id, now, &self.pools)).collect();
        list.sort_by_key(|w| w.id);
        list
    }

    pub(super) fn worker_connected(&self, id: u64, info: WorkerInfo) {
        let mut status = self.status.lock();
        if info.kind == "local" {
            status.greeted.insert(info.pid);
        }
        if let Some(pool) = self.pools.get(info.pool) {
            pool.connected.fetch_add(1, Ordering::Relaxed);
        }
        status.failures.remove(&info.pool);
        status.connected.insert(id, info);
        metrics::gauge!("sightline_detect_workers").set(status.connected.len() as f64);
    }

    /// Worker `id` answered a frame that took `bytes` on the wire.
    pub(super) fn worker_answered(&self, id: u64, bytes: u64, infer_ms: f32, decode_ms: Option<f32>) {
        let now = Instant::now();
        let mut status = self.status.lock();
        if let Some(w) = status.connected.get_mut(&id) {
            w.frames += 1;
            w.bytes += bytes;
            w.infer_ms += f64::from(infer_ms);
            w.decode_ms += f64::from(decode_ms.unwrap_or(0.0));
            w.recent.push_back(now);
            while w.recent.front().is_some_and(|t| now.duration_since(*t) > FPS_WINDOW) {
                w.recent.pop_front();
            }
        }
    }

    pub(super) fn worker_gone(&self, id: u64) {
        let mut status = self.status.lock();
        if let Some(pool) = status.connected.remove(&id).and_then(|w| self.pools.get(w.pool)) {
            pool.connected.fetch_sub(1, Ordering::Relaxed);
        }
        metrics::gauge!("sightline_detect_workers").set(status.connected.len() as f64);
    }

    /// Records a spawned worker of model `pool` that ended before its handshake; logs each
    /// reason once.
    pub(super) fn startup_failed(&self, pool: usize, reason: String) {
        let mut status = self.status.lock();
        if status.logged.insert(reason.clone()) {
            let model = self.pools.get(pool).map(|p| p.config.name.as_str()).unwrap_or_default();
            error!(reason = %reason, model, "detection unavailable: the model's worker cannot start (video is not affected; retrying with backoff)");
        }
        status.failures.insert(pool, reason);
    }

    /// Kills `pid` if it is a worker this gateway spawned (a hung one).
    pub(super) fn kill_child(&self, pid: u32) {
        if !self.status.lock().children.contains(&pid) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
            && let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        {
            warn!(pid = pid.as_raw_nonzero().get(), error = %e, "cannot kill the hung worker");
        }
    }

    /// Removes the socket file (and its private directory when this gateway made it).
    pub(crate) fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
        if self.config.socket.is_none()
            && let Some(dir) = self.socket.parent()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The decoder's pictures, at the highest of the models' rates ([`Detect::max_fps`]): each
/// pool takes those at its own rate (by RTP timestamp, so a rate that divides another takes a
/// subset of its frames and their answers share messages).
impl PictureSink for Detect {
    fn offer(&self, picture: Picture) {
        let takers: Vec<usize> = self
            .pools
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                // Each pool's decimator sees every picture, so its frames stay on its grid.
                let mut decimators = p.decimators.lock();
                let d = decimators.entry(picture.meta.stream.clone()).or_insert_with(|| Decimator::new(p.config.fps));
                d.take(picture.meta.rtp_timestamp) && p.connected.load(Ordering::Relaxed) > 0
            })
            .map(|(i, _)| i)
            .collect();
        let Some((&last, others)) = takers.split_last() else { return };
        if !others.is_empty() {
            self.merging.expect(&picture.meta, &takers);
        }
        for &pool in others {
            self.offer_to(pool, picture.clone());
        }
        self.offer_to(last, picture);
    }

    fn clear(&self, stream: &str) {
        for (i, pool) in self.pools.iter().enumerate() {
            pool.decimators.lock().remove(stream);
            if let Some(old) = pool.scheduler.clear(stream) {
                self.settle_lost(i, &old.meta);
            }
        }
    }
}

/// One stream's tracker and what its objects do in the stream's zones and lines.
///
/// On the lease holder, [`Tracking::follow`] tracks the boxes its workers find. On the other
/// replicas, [`Tracking::follow_relayed`] follows the holder's messages (their track ids) through
/// the same zones and lines, making the same events with the same ids (stored, so none is
/// lost when the holder dies before its own write), and remembers each track's last box:
/// when the lease comes here, [`Tracking::take_over`] continues those tracks, same ids, same
/// numbering (`epoch`), so a happening both replicas see is one event.
#[derive(Debug, Default)]
struct Tracking {
    /// One tracker per model (by pool), numbering their tracks together: a track id names
    /// one object of one model.
    trackers: Vec<track::Tracker>,
    configs: Vec<track::TrackerConfig>,
    /// Per model: boxes below this score (its `confidence`) reach viewers only when a track
    /// took them.
    min_scores: Vec<f32>,
    /// The models' names, by pool (a relayed box's `model` names its tracker).
    models: Vec<String>,
    analyzer: track::zones::Analyzer,
    /// Each followed object's last box (for `object_left`).
    last_box: HashMap<u64, EventBox>,
    /// The track numbering: when its first tracker started, ms (0: none yet).
    epoch: u64,
    /// How many times each (track, kind, zone or line) happened: the events' ordinals.
    ordinals: HashMap<(u64, EventKind, String), u32>,
    /// Every confirmed track's last sighting (own or relayed) and its model's pool, to
    /// continue them.
    seen: HashMap<u64, (usize, track::TrackSeed)>,
    /// Per model (pool): the capture time of the last relayed answer followed.
    followed: HashMap<usize, u64>,
}

impl Tracking {
    /// Tracking for models (by pool) with these names, tracker settings and minimum scores.
    fn new(models: Vec<(String, track::TrackerConfig, f32)>) -> Tracking {
        let mut t = Tracking::default();
        for (name, config, min_score) in models {
            t.trackers.push(track::Tracker::new(config.clone()));
            t.configs.push(config);
            t.min_scores.push(min_score);
            t.models.push(name);
        }
        t
    }

    /// The pool of the model named `model` (an unknown name: the first model's).
    fn pool_of(&self, model: &str) -> usize {
        self.models.iter().position(|m| m == model).unwrap_or(0)
    }

    /// The lease came here: continue the tracks last seen (relayed from the previous holder),
    /// or start a numbering of our own. Returns how many tracks go on.
    fn take_over(&mut self, now_ms: u64) -> usize {
        if self.epoch == 0 {
            self.epoch = now_ms;
        }
        let next = self.seen.values().map(|(_, s)| s.id + 1).max().unwrap_or(1);
        for (pool, tracker) in self.trackers.iter_mut().enumerate() {
            let seeds: Vec<track::TrackSeed> = self.seen.values().filter(|(p, _)| *p == pool).map(|(_, s)| *s).collect();
            *tracker = track::Tracker::resume(self.configs[pool].clone(), &seeds, next);
        }
        self.seen.len()
    }

    /// Gives the boxes model `pool` found on `frame` their track ids, drops weak boxes no
    /// track took, and returns the events their objects made.
    fn follow(&mut self, pool: usize, frame: &FrameMeta, boxes: &mut Vec<NormalizedBox>) -> Vec<AnalyticsEvent> {
        if self.epoch == 0 {
            self.epoch = crate::core::clock::now_ms();
        }
        let next = self.trackers.iter().map(track::Tracker::next_id).max().unwrap_or(1);
        let (Some(tracker), Some(&min_score)) = (self.trackers.get_mut(pool), self.min_scores.get(pool)) else { return Vec::new() };
        tracker.skip_ids_to(next);
        let dets: Vec<track::Detection> = boxes
            .iter()
            .map(|b| track::Detection { bbox: track::Bbox { x: b.x, y: b.y, w: b.w, h: b.h }, score: b.score, class_id: b.class_id })
            .collect();
        let ids = tracker.update(frame.capture_ms, &dets);
        let mut ids = ids.into_iter();
        boxes.retain_mut(|b| {
            b.track_id = ids.next().flatten();
            b.score >= min_score || b.track_id.is_some()
        });
        let forgotten = tracker.take_forgotten();
        let events = self.analyze(frame, boxes, forgotten);
        let active: usize = self.trackers.iter().map(track::Tracker::active).sum();
        metrics::gauge!("sightline_tracks_active", "stream" => frame.stream.to_string()).set(active as f64);
        for e in events.iter().map(|e| &e.event) {
            if let (Some(line), Some(direction)) = (&e.line, e.direction) {
                metrics::counter!("sightline_line_crossings_total", "stream" => e.stream.clone(), "line" => line.clone(), "direction" => direction, "label" => e.label.clone())
                    .increment(1);
            }
        }
        events
    }

    /// Follows a message of the lease holder (its track ids) through the zones and lines;
    /// returns the events it made there (the holder publishes them; these are to store).
    fn follow_relayed(&mut self, message: &Detections) -> Vec<AnalyticsEvent> {
        let Some(epoch) = message.track_epoch else { return Vec::new() };
        if epoch != self.epoch {
            // Another numbering (a holder that started afresh): its tracks are not ours.
            self.analyzer.clear_objects();
            self.ordinals.clear();
            self.seen.clear();
            self.last_box.clear();
            self.followed.clear();
            self.epoch = epoch;
        }
        let at = message.frame.capture_ms;
        // The models answering here (all, for a message that does not say), less those
        // already followed at this frame or a later one: a model answering after
        // `merge_wait` sends the frame again with the others' boxes, which must not move
        // their tracks back.
        let listed: Vec<usize> = if message.models.is_empty() {
            (0..self.models.len().max(1)).collect()
        } else {
            message.models.iter().map(|m| self.pool_of(m)).collect()
        };
        let fresh: Vec<usize> = listed.into_iter().filter(|p| self.followed.get(p).is_none_or(|t| at > *t)).collect();
        for p in &fresh {
            self.followed.insert(*p, at);
        }
        let boxes: Vec<NormalizedBox> = message.boxes.iter().filter(|b| fresh.contains(&self.pool_of(&b.model))).cloned().collect();
        let max_lost = self.configs.first().map_or(0, |c| c.max_lost_ms);
        let present: HashSet<u64> = boxes.iter().filter_map(|b| b.track_id).collect();
        // Only the answering models' tracks can be missed (a 2 fps model's are not, on the
        // frames only a 10 fps one took).
        let forgotten: Vec<u64> = self
            .seen
            .values()
            .filter(|(pool, s)| fresh.contains(pool) && !present.contains(&s.id) && at.saturating_sub(s.seen_ms) > max_lost)
            .map(|(_, s)| s.id)
            .collect();
        self.analyze(&message.frame, &boxes, forgotten)
    }

    /// What the tracked `boxes` of `frame` (and the `forgotten` tracks) did in the zones and
    /// lines, as events numbered per track.
    fn analyze(&mut self, frame: &FrameMeta, boxes: &[NormalizedBox], forgotten: Vec<u64>) -> Vec<AnalyticsEvent> {
        let stream = frame.stream.to_string();
        let mut events = Vec::new();
        let event = |kind, label: &str, track_id, bbox: Option<EventBox>| NewEvent {
            kind,
            stream: stream.clone(),
            label: label.to_owned(),
            track_id,
            line: None,
            direction: None,
            zone: None,
            inside_ms: None,
            ts_ms: frame.capture_ms,
            seq: frame.seq,
            rtp_timestamp: frame.rtp_timestamp.get(),
            bbox,
        };
        for b in boxes {
            let Some(id) = b.track_id else { continue };
            let bbox = EventBox { x: b.x, y: b.y, w: b.w, h: b.h };
            self.last_box.insert(id, bbox);
            let seed = track::TrackSeed {
                id,
                class_id: b.class_id,
                bbox: track::Bbox { x: b.x, y: b.y, w: b.w, h: b.h },
                seen_ms: frame.capture_ms,
            };
            self.seen.insert(id, (self.pool_of(&b.model), seed));
            for happening in self.analyzer.observe(id, &b.label, anchor(b), frame.capture_ms) {
                let e = describe(happening, event(EventKind::ObjectAppeared, &b.label, id, Some(bbox)));
                events.push(self.numbered(e));
            }
        }
        for id in forgotten {
            let bbox = self.last_box.remove(&id);
            self.seen.remove(&id);
            if let Some((label, happenings)) = self.analyzer.forget(id) {
                for happening in happenings {
                    let e = describe(happening, event(EventKind::ObjectLeft, &label, id, bbox));
                    events.push(self.numbered(e));
                }
            }
            self.ordinals.retain(|(track, _, _), _| *track != id);
        }
        events
    }

    /// The event with its id: this numbering, this track's `n`th such happening here.
    fn numbered(&mut self, e: NewEvent) -> AnalyticsEvent {
        let place = e.line.clone().or_else(|| e.zone.clone()).unwrap_or_default();
        let n = self.ordinals.entry((e.track_id, e.kind, place)).or_insert(0);
        *n += 1;
        let n = *n;
        AnalyticsEvent::numbered(e, self.epoch, n)
    }
}

/// Where an object is: its box's bottom centre.
fn anchor(b: &NormalizedBox) -> track::zones::Point {
    track::zones::Point { x: b.x + b.w / 2.0, y: b.y + b.h }
}

/// The event for a happening, from a template with the object and frame filled in.
fn describe(happening: track::zones::Happening, mut e: NewEvent) -> NewEvent {
    use track::zones::Happening;
    match happening {
        Happening::Appeared => e.kind = EventKind::ObjectAppeared,
        Happening::Left => e.kind = EventKind::ObjectLeft,
        Happening::LineCrossed { line, inward } => {
            e.kind = EventKind::LineCrossed;
            e.line = Some(line);
            e.direction = Some(if inward { "in" } else { "out" });
        }
        Happening::ZoneEnter { zone } => {
            e.kind = EventKind::ZoneEnter;
            e.zone = Some(zone);
        }
        Happening::ZoneExit { zone } => {
            e.kind = EventKind::ZoneExit;
            e.zone = Some(zone);
        }
        Happening::Loitering { zone, inside_ms } => {
            e.kind = EventKind::Loitering;
            e.zone = Some(zone);
            e.inside_ms = Some(inside_ms);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use media::{FrameMeta, RtpTimestamp};

    use super::*;

    fn message(at_ms: u64, boxes: &[(f32, f32)]) -> Detections {
        let frame = FrameMeta {
            stream: "cam".into(),
            seq: at_ms,
            rtp_timestamp: RtpTimestamp::new(at_ms as u32 * 90),
            capture_ms: at_ms,
            width: 1280,
            height: 720,
        };
        let boxes = boxes
            .iter()
            .map(|&(x, score)| NormalizedBox {
                x,
                y: 0.2,
                w: 0.1,
                h: 0.2,
                class_id: 0,
                label: "person".into(),
                score,
                track_id: None,
                model: "people".into(),
            })
            .collect();
        Detections::new(frame, boxes, vec!["people".into()], 5.0, 20.0)
    }

    /// Tracking for one model, "people", with these settings.
    fn one_model(config: track::TrackerConfig, min_score: f32) -> Tracking {
        Tracking::new(vec![("people".into(), config, min_score)])
    }

    /// What the holder does with a message of model `pool`: its boxes tracked, the epoch set.
    fn follow(t: &mut Tracking, pool: usize, m: &mut Detections) -> Vec<AnalyticsEvent> {
        let events = t.follow(pool, &m.frame, &mut m.boxes);
        m.track_epoch = Some(t.epoch);
        events
    }

    #[test]
    fn a_replica_following_the_holder_makes_its_events_and_continues_its_tracks() {
        let line = track::zones::Line {
            id: "mid".into(),
            points: vec![track::zones::Point { x: 0.5, y: 0.0 }, track::zones::Point { x: 0.5, y: 1.0 }],
            labels: vec![],
        };
        let tracking = || {
            let mut t = one_model(track::TrackerConfig::default(), 0.5);
            t.analyzer.set_geometry(vec![], vec![line.clone()]);
            t
        };
        let (mut holder, mut other) = (tracking(), tracking());
        holder.take_over(1_000_000);
        // An object walking right, its anchor (bottom centre) at 0.33 .. 0.48: not across yet.
        // Another one, far right, is there for the first 300 ms only: the walker's id is not
        // the first (a replica numbering afresh would give it another).
        let at = |t: u64| {
            let walker = (0.28 + t as f32 * 0.0001, 0.9);
            if t < 300 { message(t, &[(0.85, 0.9), walker]) } else { message(t, &[walker]) }
        };
        let mut made = Vec::new();
        for t in (0..=1500).step_by(100) {
            let mut m = at(t);
            let mine: Vec<String> = follow(&mut holder, 0, &mut m).into_iter().map(|e| e.id).collect();
            // Relayed as JSON, as Redis carries it.
            let relayed: Detections = serde_json::from_str(m.json()).unwrap();
            let theirs: Vec<String> = other.follow_relayed(&relayed).into_iter().map(|e| e.id).collect();
            assert_eq!(mine, theirs, "t={t}: the same events, the same ids");
            made.extend(mine);
        }
        assert_eq!(made.len(), 3, "two appeared, one left: {made:?}");
        // The holder dies; 2.5 s later the other replica has the lease and sees the object
        // across the line. Its crossing is the one the holder would have made: same track,
        // same id.
        let tracks = other.take_over(1_001_600);
        assert_eq!(tracks, 1);
        let mut m = at(4000);
        let continued = follow(&mut other, 0, &mut m);
        let mut m2 = at(4000);
        let would_have = follow(&mut holder, 0, &mut m2);
        let crossing = |events: &[AnalyticsEvent]| {
            events.iter().find(|e| e.event.kind == EventKind::LineCrossed).map(|e| (e.id.clone(), e.event.track_id))
        };
        assert!(crossing(&continued).is_some_and(|(_, track)| track > 1), "{continued:?}");
        assert_eq!(crossing(&continued), crossing(&would_have));
        assert_eq!(m.track_epoch, m2.track_epoch, "one numbering");
        // A holder that started afresh (another epoch): followers drop the old tracks.
        let mut fresh = tracking();
        fresh.take_over(2_000_000);
        let mut m = at(5000);
        follow(&mut fresh, 0, &mut m);
        other.follow_relayed(&m);
        assert_eq!(other.epoch, 2_000_000);
        assert_eq!(other.seen.keys().copied().collect::<Vec<_>>(), vec![1], "only the new holder's track");
    }

    #[test]
    fn weak_boxes_reach_viewers_only_when_they_continue_a_track() {
        let mut t = one_model(track::TrackerConfig::default(), 0.5);
        let mut m = message(0, &[(0.1, 0.9)]);
        let events = follow(&mut t, 0, &mut m);
        let id = m.boxes[0].track_id.expect("the first frame's strong box is tracked at once");
        assert_eq!(events.iter().map(|e| e.event.kind).collect::<Vec<_>>(), vec![EventKind::ObjectAppeared]);
        // Partly hidden: a weak box where the person walks on keeps the track; a weak box
        // elsewhere (noise) is dropped.
        let mut m = message(100, &[(0.11, 0.3), (0.7, 0.3)]);
        follow(&mut t, 0, &mut m);
        assert_eq!(m.boxes.len(), 1, "{:?}", m.boxes);
        assert_eq!((m.boxes[0].x, m.boxes[0].track_id), (0.11, Some(id)));
    }

    #[test]
    fn two_models_number_their_tracks_together_and_a_takeover_keeps_each_with_its_model() {
        let models = || {
            Tracking::new(vec![
                ("people".into(), track::TrackerConfig::default(), 0.5),
                ("cars".into(), track::TrackerConfig::default(), 0.5),
            ])
        };
        let (mut holder, mut other) = (models(), models());
        holder.take_over(1_000_000);
        let car = |t: u64| {
            let mut m = message(t, &[(0.6, 0.9)]);
            m.boxes[0].model = "cars".into();
            m.models = vec!["cars".into()];
            m
        };
        let mut ids = std::collections::BTreeMap::new();
        for t in (0..=1000).step_by(100) {
            // People at 10 fps, cars at 2 fps.
            let mut m = message(t, &[(0.1 + t as f32 * 0.0001, 0.9)]);
            follow(&mut holder, 0, &mut m);
            ids.entry("people").or_insert_with(Vec::new).push(m.boxes[0].track_id);
            other.follow_relayed(&serde_json::from_str(m.json()).unwrap());
            if t % 500 == 0 {
                let mut c = car(t);
                follow(&mut holder, 1, &mut c);
                ids.entry("cars").or_insert_with(Vec::new).push(c.boxes[0].track_id);
                other.follow_relayed(&serde_json::from_str(c.json()).unwrap());
            }
        }
        let (person, vehicle) = (ids["people"][1].expect("person tracked"), ids["cars"][1].expect("car tracked"));
        assert_ne!(person, vehicle, "one numbering: {ids:?}");
        assert!(ids["people"].iter().skip(1).all(|id| *id == Some(person)), "{ids:?}");
        assert!(ids["cars"].iter().all(|id| *id == Some(vehicle)), "the 2 fps model keeps its track between its frames: {ids:?}");
        // The other replica takes over: each track continues in its own model's tracker.
        assert_eq!(other.take_over(1_001_200), 2);
        let mut c = car(1500);
        follow(&mut other, 1, &mut c);
        assert_eq!(c.boxes[0].track_id, Some(vehicle));
        let mut m = message(1500, &[(0.25, 0.9)]);
        follow(&mut other, 0, &mut m);
        assert_eq!(m.boxes[0].track_id, Some(person));
        let mut fresh = None;
        for t in [1600, 1700, 1800] {
            let mut new = message(t, &[(0.25, 0.9), (0.9, 0.95)]);
            follow(&mut other, 0, &mut new);
            fresh = new.boxes.iter().find(|b| b.x == 0.9).and_then(|b| b.track_id);
        }
        let fresh = fresh.expect("a new object is tracked");
        assert!(fresh > person.max(vehicle), "a new object gets a new id: {fresh}");
    }

    #[test]
    fn a_follower_neither_replays_a_late_superset_nor_forgets_a_slow_models_tracks() {
        let models = || {
            Tracking::new(vec![
                ("people".into(), track::TrackerConfig::default(), 0.5),
                ("cars".into(), track::TrackerConfig::default(), 0.5),
            ])
        };
        let (mut holder, mut other) = (models(), models());
        holder.take_over(1_000_000);
        let relay = |m: &Detections| -> Detections { serde_json::from_str(m.json()).unwrap() };
        let car = |t: u64| {
            let mut m = message(t, &[(0.6, 0.9)]);
            m.boxes[0].model = "cars".into();
            m.models = vec!["cars".into()];
            m
        };
        let mut late = None;
        for t in (0..=1000).step_by(100) {
            let mut m = message(t, &[(0.1 + t as f32 * 0.0001, 0.9)]);
            follow(&mut holder, 0, &mut m);
            other.follow_relayed(&relay(&m));
            if t == 0 {
                let mut c = car(0);
                follow(&mut holder, 1, &mut c);
                other.follow_relayed(&relay(&c));
            }
            if t == 800 {
                // The car model answers frame 800 after merge_wait: its message comes again
                // with the people's boxes of that frame, after the people's frame 900.
                let mut c = car(800);
                follow(&mut holder, 1, &mut c);
                let mut superset = relay(&m);
                superset.boxes.extend(c.boxes.clone());
                superset.models = vec!["people".into(), "cars".into()];
                late = Some(superset);
            }
        }
        let person = holder.seen.values().find(|(pool, _)| *pool == 0).map(|(_, s)| s.id).expect("a person track");
        let vehicle = holder.seen.values().find(|(pool, _)| *pool == 1).map(|(_, s)| s.id).expect("a car track");
        assert_eq!(other.seen[&person].1.seen_ms, 1000);
        let events = other.follow_relayed(&late.unwrap());
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(other.seen[&person].1.seen_ms, 1000, "the person's track is not moved back to frame 800");
        assert_eq!(other.seen[&vehicle].1.seen_ms, 800, "the car's answer is followed");
        // People alone for 1.5 s more: the car track is not theirs to miss.
        for t in (1100..=2500).step_by(100) {
            let mut m = message(t, &[(0.1 + t as f32 * 0.0001, 0.9)]);
            follow(&mut holder, 0, &mut m);
            other.follow_relayed(&relay(&m));
        }
        assert!(other.seen.contains_key(&vehicle), "kept until the car model misses it");
        let mut empty = car(3000);
        empty.boxes.clear();
        follow(&mut holder, 1, &mut empty);
        other.follow_relayed(&relay(&empty));
        assert!(!other.seen.contains_key(&vehicle), "missed by its own model for over 1 s: forgotten");
    }
}
