//! Object detection (DESIGN.md step 6): decoded pictures go to `infer-worker` processes over
//! a Unix socket; the boxes come back and go out to viewers as typed `Detections`. Video
//! never waits for it.
//!
//! # Layout
//! - this file: [`start`] binds the workers' socket and starts every task below;
//!   [`Detection`] holds them for the shutdown.
//! - [`service`]: [`Detect`], the service's state: workers' status, the detected streams,
//!   where messages go, and the status the API shows per stream.
//! - [`scheduler`]: per-stream slots holding only the newest picture; idle workers take from
//!   the stream served longest ago. One per model (`detect.model`, `[[detect.models]]`):
//!   each model has its own pool of workers and rate.
//! - [`merge`]: a frame several models took gets one message with all their boxes.
//! - [`connection`]: one task per connected worker: handshake, its shared-memory frame ring
//!   (or inline pictures for a remote worker), one frame in flight, heartbeats, answers to
//!   detection messages.
//! - [`remote`]: the TCP/TLS port remote workers connect to (`[detect.remote]`).
//! - [`supervisor`]: spawns `detect.workers` worker processes and restarts them with backoff.
//! - [`lease`]: per stream, while its camera is pulled, holds the cluster's detection lease
//!   and turns the stream's pictures towards the scheduler while it holds it.
//! - [`relay`]: this replica's messages to the other replicas, and theirs to this one's
//!   viewers, renamed to this replica's copy of the frame.
//!
//! Pictures cross to a local worker in a memfd ring sent once with SCM_RIGHTS; each frame is
//! then a small header naming its slot. A remote worker gets each picture inline, as a JPEG or
//! raw I420 (see the `wire` crate).

mod connection;
mod lease;
mod merge;
mod relay;
mod remote;
mod scheduler;
mod service;
mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub(crate) use self::service::{Detect, DetectionView, WorkerView};
use crate::config::DetectConfig;
use crate::core::detections::DetectionFanout;
use crate::core::events::EventFanout;
use crate::pipeline::Pipelines;
use crate::state::ClusterStore;
use crate::stream::Streams;

/// Running detection: the service and the tasks that serve it.
#[derive(Debug)]
pub(crate) struct Detection {
    service: Arc<Detect>,
    /// The supervisors and lease holders, awaited by [`Detection::shutdown`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Binds the worker socket, starts accepting workers and spawns each model's supervised
/// worker processes (`detect.workers` of `detect.model`, then each `[[detect.models]]`'s
/// `workers`); for each stream with `detect = true`, follows its pull and
/// the cluster's detection lease. With a store shared by replicas, the messages this replica
/// produces are also published to the others (`sightline:detections:{id}`), and theirs reach
/// this replica's viewers.
///
/// Errors: the socket cannot be made (detection is then off; video is not affected).
pub(crate) fn start(
    config: &DetectConfig,
    cluster: Arc<dyn ClusterStore>,
    streams: &Arc<Streams>,
    pipelines: &Pipelines,
    fanout: Arc<DetectionFanout>,
    events: Arc<EventFanout>,
) -> anyhow::Result<Detection> {
    let socket = match &config.socket {
        Some(path) => path.clone(),
        None => private_socket_path()?,
    };
    // A socket file left by an earlier run would make bind fail.
    if socket.exists() {
        std::fs::remove_file(&socket).map_err(|e| anyhow::anyhow!("cannot replace worker socket {}: {e}", socket.display()))?;
    }
    let listener = UnixListener::bind(&socket).map_err(|e| anyhow::anyhow!("cannot listen on worker socket {}: {e}", socket.display()))?;
    let pools = config.pools();
    for p in &pools {
        info!(socket = %socket.display(), name = %p.name, model = %p.model.display(), fps = p.fps, workers = p.workers, "detection model");
    }
    let detected: Vec<_> = streams.all().filter(|rt| rt.config.detect).cloned().collect();
    let relayed = cluster.subscribe_detections();
    let relay = relayed.is_some().then(|| relay::spawn_out(cluster.clone()));
    let service = Arc::new(Detect::new(config, socket, fanout, events, detected.iter().map(|rt| rt.id.clone()), relay));
    // Each stream's zones and lines, now and whenever they are edited (on any replica).
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for rt in &detected {
        let (service, id, mut geometry) = (service.clone(), rt.id.clone(), rt.watch_geometry());
        let mut stopping = service.stopping();
        tasks.push(tokio::spawn(async move {
            loop {
                let g = geometry.borrow_and_update().clone();
                service.set_geometry(&id, g.zones.iter().map(|z| z.zone()).collect(), g.lines.iter().map(|l| l.line()).collect());
                tokio::select! {
                    changed = geometry.changed() => if changed.is_err() { return },
                    () = stopping.wait() => return,
                }
            }
        }));
    }
    metrics::gauge!("sightline_detect_workers").set(0.0);
    metrics::counter!("sightline_detect_worker_restarts_total").absolute(0);
    tokio::spawn(accept(service.clone(), listener));
    match remote::listen(&config.remote, service.clone()) {
        Ok(Some(addr)) => service.set_remote_listen(addr),
        Ok(None) => {}
        Err(e) => error!(error = %e, "remote detection workers cannot connect (local workers go on)"),
    }
    if let Some(relayed) = relayed {
        tokio::spawn(relay::relay_in(service.clone(), streams.clone(), relayed));
    }
    for (pool, p) in pools.iter().enumerate() {
        tasks.extend((0..p.workers).map(|index| tokio::spawn(supervisor::supervise(service.clone(), pool, index))));
    }
    for rt in detected {
        let Some(pixels) = pipelines.get(&rt.id) else { continue };
        tasks.push(tokio::spawn(lease::follow(rt.clone(), pixels.clone(), service.clone(), cluster.clone())));
    }
    Ok(Detection { service, tasks: Mutex::new(tasks) })
}

impl Detection {
    /// The service (status, subscriptions).
    pub(crate) fn service(&self) -> &Arc<Detect> {
        &self.service
    }

    /// Stops the workers this gateway spawned (they are killed: a worker holds no state),
    /// waits for the streams' detection leases to be released (they follow the gateway's
    /// shutdown signal) and removes the socket.
    pub(crate) async fn shutdown(&self) {
        self.service.stop();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        self.service.remove_socket();
        info!("detection workers stopped");
    }
}

/// Accepts worker connections forever, one [`connection::serve`] task each.
async fn accept(detect: Arc<Detect>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection::serve(detect.clone(), stream, detect.next_worker_id()));
            }
            Err(e) => {
                warn!(error = %e, "worker socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
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
