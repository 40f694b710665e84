//! One connected worker: `Hello` first, then one picture at a time, each answered by
//! [`Detections`] or a [`Failure`]. An idle worker gets a `Ping` every [`HEARTBEAT`]; a
//! worker that answers neither a picture nor a ping within `detect.timeout` is killed (if
//! this gateway spawned it) and its connection closed.
//!
//! Two links (the `wire` crate's transports): a local worker on the Unix socket gets the
//! shared-memory ring (a memfd with SCM_RIGHTS) and a [`Frame`] naming a slot per picture; a
//! remote worker (TCP or TLS, see [`super::remote`]) must present `detect.remote.token` in its
//! `Hello` (else it gets [`Message::Refused`] and the connection closes, logged with its
//! address), and gets each picture inline ([`Message::Picture`]: a JPEG of the YUV planes at
//! `detect.remote.jpeg_quality`, or the I420 planes).
//!
//! Garbage from a worker (bad length, version, kind or JSON) closes that connection with a
//! logged error; the gateway and the other workers go on, and the supervisor restarts a
//! spawned worker that exits.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use wire::{Encoding, Frame, Heartbeat, Message, PictureHeader, Refusal, Ring};

use super::service::{Detect, WorkerInfo};
use crate::core::detections::NormalizedBox;
use crate::core::frame::Picture;

/// How long a connecting worker has to send `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The same for a remote worker (its TLS handshake, if any, came before).
const REMOTE_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time after which the gateway pings a worker.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);
/// Slots per ring: one frame in flight, one being written next.
const RING_SLOTS: u32 = 2;
/// The first ring fits 1920x1080 I420; larger pictures get a new, larger ring.
const FIRST_SLOT_BYTES: u64 = 1920 * 1080 * 3 / 2;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("worker closed the connection")]
    Closed,
    #[error("garbage from the worker: {0}")]
    Garbage(String),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub(super) struct RingFile {
    file: File,
    ring: Ring,
    next: u32,
}

/// Where a worker is and how its pictures reach it.
pub(super) enum Link {
    /// The Unix socket: pictures through the shared-memory ring.
    Local { write: OwnedWriteHalf, ring: Option<RingFile> },
    /// TCP or TLS from `peer`: pictures inline, encoded as `encoding`.
    Remote {
        write: Box<dyn AsyncWrite + Send + Unpin>,
        peer: SocketAddr,
        tls: bool,
        encoding: Encoding,
        quality: u8,
        jpeg: Option<turbojpeg::Compressor>,
    },
}

impl Link {
    /// A remote worker's link (`detect.remote`'s encoding and quality).
    pub(super) fn remote(detect: &Detect, write: Box<dyn AsyncWrite + Send + Unpin>, peer: SocketAddr, tls: bool) -> Link {
        let r = &detect.config().remote;
        let encoding = if r.encoding == "i420" { Encoding::I420 } else { Encoding::Jpeg };
        Link::Remote { write, peer, tls, encoding, quality: r.jpeg_quality, jpeg: None }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Local { write, .. } => write.write_all(bytes).await,
            Link::Remote { write, .. } => {
                write.write_all(bytes).await?;
                write.flush().await
            }
        }
    }
}

struct Conn<'a> {
    detect: &'a Arc<Detect>,
    /// The pool of the model it runs.
    pool: usize,
    id: u64,
    pid: u32,
    names: Vec<String>,
    link: Link,
    incoming: mpsc::Receiver<Result<Message, String>>,
    nonce: u64,
    /// Reasons pictures were not sent, each logged once.
    skipped: std::collections::HashSet<String>,
}

/// Serves one worker on the Unix socket until it ends.
pub(crate) async fn serve(detect: Arc<Detect>, stream: UnixStream, id: u64) {
    let (read, write) = stream.into_split();
    serve_link(detect, read, Link::Local { write, ring: None }, id, None).await;
}

/// Serves one worker connection until it ends: `read` is its half of the connection, `link`
/// the other.
///
/// `handshake` (remote connections) is a place among the connections that have not shown a
/// valid `Hello` yet; it is given back once they have, or when they end.
pub(super) async fn serve_link(
    detect: Arc<Detect>,
    read: impl AsyncRead + Send + Unpin + 'static,
    mut link: Link,
    id: u64,
    handshake: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let (tx, mut incoming) = mpsc::channel(8);
    let reader = tokio::spawn(read_messages(read, tx));
    let peer = match &link {
        Link::Local { .. } => None,
        Link::Remote { peer, .. } => Some(*peer),
    };
    let hello_timeout = if peer.is_some() { REMOTE_HELLO_TIMEOUT } else { HELLO_TIMEOUT };
    let hello = match tokio::time::timeout(hello_timeout, incoming.recv()).await {
        Ok(Some(Ok(Message::Hello(hello)))) => Some(hello),
        Ok(Some(Ok(other))) => {
            warn!(worker = id, ?peer, kind = other.kind(), "worker's first message is not Hello; closing");
            None
        }
        Ok(Some(Err(e))) => {
            warn!(worker = id, ?peer, error = %e, "garbage from a connecting worker; closing");
            None
        }
        Ok(None) => None,
        Err(_) => {
            warn!(worker = id, ?peer, "worker sent no Hello within {hello_timeout:?}; closing");
            None
        }
    };
    let Some(hello) = hello else {
        reader.abort();
        return;
    };
    if let Some(peer) = peer
        && !detect.remote_token_matches(hello.token.as_deref())
    {
        let reason = if hello.token.is_some() { "wrong worker token" } else { "no worker token" };
        // The host name is the unauthenticated client's word: shown short and quoted.
        let host: String = hello.host.chars().take(64).collect();
        warn!(worker = id, %peer, ?host, reason, "remote detection worker refused");
        metrics::counter!("sightline_detect_workers_refused_total").increment(1);
        let _ = link.send(&wire::encode(&Message::Refused(Refusal { reason: reason.into() }))).await;
        reader.abort();
        return;
    }
    drop(handshake);
    let (pool, configured) = detect.pool_for(&hello.model);
    let info = match &link {
        Link::Local { .. } => WorkerInfo::local(&hello, pool),
        Link::Remote { peer, tls, encoding, .. } => WorkerInfo::remote(&hello, pool, *peer, *tls, *encoding),
    };
    let name = &detect.pools()[pool].config.name;
    info!(worker = id, kind = info.kind, host = %info.host, pid = hello.pid, model = %hello.model, pool = %name, input_size = hello.input_size, classes = hello.names.len(), provider = %hello.provider, "detection worker connected");
    if !configured {
        // Its boxes carry its own class names; the stream's messages then mix two models.
        let file = detect.pools()[0].config.file_name();
        warn!(worker = id, host = %info.host, model = %hello.model, configured = %file, "worker runs a model no pool is configured with; it serves detect.model's pool");
    }
    detect.worker_connected(id, info);
    let mut conn =
        Conn { detect: &detect, pool, id, pid: hello.pid, names: hello.names, link, incoming, nonce: 0, skipped: Default::default() };
    let ended = conn.run().await;
    reader.abort();
    detect.worker_gone(id);
    match ended {
        Ended::Closed => info!(worker = id, pid = conn.pid, ?peer, "detection worker disconnected"),
        Ended::Timeout(_) => {
            warn!(worker = id, pid = conn.pid, ?peer, error = %ended, "detection worker hung; killing it");
            if peer.is_none() {
                detect.kill_child(conn.pid);
            }
        }
        other => warn!(worker = id, pid = conn.pid, ?peer, error = %other, "detection worker connection closed"),
    }
}

/// Decodes the worker's messages (sans-IO [`wire::decode`]) into `tx`; a decode error is
/// sent as `Err` and ends reading.
async fn read_messages(mut read: impl AsyncRead + Unpin, tx: mpsc::Sender<Result<Message, String>>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        loop {
            match wire::decode(&buf) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            }
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

impl Conn<'_> {
    async fn run(&mut self) -> Ended {
        loop {
            let picture = tokio::select! {
                biased;
                msg = self.incoming.recv() => match msg {
                    None => return Ended::Closed,
                    Some(Err(e)) => return Ended::Garbage(e),
                    Some(Ok(Message::Pong(_))) => continue,
                    Some(Ok(Message::Failure(f))) => {
                        warn!(worker = self.id, pid = self.pid, error = %f.message, "worker reported a failure");
                        continue;
                    }
                    Some(Ok(other)) => return Ended::Garbage(format!("unexpected message kind {} while idle", other.kind())),
                },
                picture = self.detect.pools()[self.pool].scheduler.next() => picture,
                () = tokio::time::sleep(HEARTBEAT) => {
                    if let Err(e) = self.heartbeat().await {
                        return e;
                    }
                    continue;
                }
            };
            let frame = picture.meta.clone();
            let answered = self.frame(picture).await;
            if !matches!(answered, Ok(true)) {
                // Failed, skipped, or the worker is gone: the frame's message waits no more.
                self.detect.settle_lost(self.pool, &frame);
            }
            if let Err(e) = answered {
                return e;
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), Ended> {
        self.nonce += 1;
        let nonce = self.nonce;
        self.send(&wire::encode(&Message::Ping(Heartbeat { nonce }))).await?;
        self.answer(|m| matches!(m, Message::Pong(h) if h.nonce == nonce)).await.map(|_| ())
    }

    /// Sends `bytes`, within `detect.timeout`: a worker that stops reading (or a network that
    /// stops carrying) ends the connection instead of holding it for TCP's own give-up time.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        let timeout = self.detect.config().timeout;
        tokio::time::timeout(timeout, self.link.send(bytes)).await.map_err(|_| Ended::Timeout(timeout))??;
        Ok(())
    }

    /// Waits up to `detect.timeout` for a message `wanted` accepts; pongs and stale answers
    /// in between are skipped.
    async fn answer(&mut self, wanted: impl Fn(&Message) -> bool) -> Result<Message, Ended> {
        let timeout = self.detect.config().timeout;
        let wait = async {
            loop {
                match self.incoming.recv().await {
                    None => return Err(Ended::Closed),
                    Some(Err(e)) => return Err(Ended::Garbage(e)),
                    Some(Ok(m)) if wanted(&m) => return Ok(m),
                    Some(Ok(Message::Pong(_) | Message::Detections(_))) => {}
                    Some(Ok(Message::Failure(f))) if f.seq.is_none() => {
                        warn!(worker = self.id, pid = self.pid, error = %f.message, "worker reported a failure");
                    }
                    Some(Ok(other)) => return Err(Ended::Garbage(format!("unexpected message kind {}", other.kind()))),
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(Err(Ended::Timeout(timeout)))
    }

    /// Hands one picture over and publishes the answer; `Ok(false)`: the picture was not
    /// answered (not sent, or the worker reported a failure).
    async fn frame(&mut self, picture: Picture) -> Result<bool, Ended> {
        let started = Instant::now();
        let labels = [("stream", picture.meta.stream.to_string())];
        metrics::histogram!("sightline_detect_slot_wait_seconds", &labels).record(picture.offered.elapsed().as_secs_f64());
        let (picture, sent) = match &mut self.link {
            Link::Local { .. } => {
                self.write_slot(&picture).await?;
                (picture, 0)
            }
            Link::Remote { encoding, quality, jpeg, .. } => {
                let (encoding, quality) = (*encoding, *quality);
                let header = PictureHeader { meta: picture.meta.clone(), full_range: picture.full_range, encoding };
                let (picture, message) = match encoding {
                    // The planes as they are: one copy, into the frame.
                    Encoding::I420 => {
                        let message = wire::encode_picture(&header, &picture.planes);
                        (picture, message)
                    }
                    Encoding::Jpeg => {
                        // A few ms for 720p, off the async threads.
                        let compressor = jpeg.take();
                        let (picture, bytes, compressor) = tokio::task::spawn_blocking(move || {
                            let (bytes, compressor) = jpeg_of(&picture, quality, compressor);
                            (picture, bytes, compressor)
                        })
                        .await
                        .map_err(|e| Ended::Io(std::io::Error::other(e)))?;
                        if let Link::Remote { jpeg, .. } = &mut self.link {
                            *jpeg = compressor;
                        }
                        match bytes {
                            Ok(bytes) => (picture, wire::encode_picture(&header, &bytes)),
                            Err(e) => {
                                self.skip(&picture, &e.to_string());
                                return Ok(false);
                            }
                        }
                    }
                };
                if message.len() > wire::MAX_PICTURE {
                    let why = format!(
                        "a {}-byte picture is over the workers' {}-byte limit (use encoding = \"jpeg\")",
                        message.len(),
                        wire::MAX_PICTURE
                    );
                    self.skip(&picture, &why);
                    return Ok(false);
                }
                self.send(&message).await?;
                (picture, message.len())
            }
        };
        metrics::histogram!("sightline_detect_handoff_seconds").record(started.elapsed().as_secs_f64());
        let seq = picture.meta.seq;
        let answer = self
            .answer(|m| match m {
                Message::Detections(d) => d.seq == seq && d.stream == picture.meta.stream,
                Message::Failure(f) => f.seq == Some(seq),
                _ => false,
            })
            .await?;
        match answer {
            Message::Detections(d) => {
                self.detect.worker_answered(self.id, sent as u64, d.infer_ms, d.decode_ms);
                self.publish(picture, d);
                Ok(true)
            }
            Message::Failure(f) => {
                metrics::counter!("sightline_detect_failures_total", &labels).increment(1);
                warn!(stream = %picture.meta.stream, seq, worker = self.id, error = %f.message, "worker could not process a frame");
                Ok(false)
            }
            _ => unreachable!("answer() returns only what the filter accepts"),
        }
    }

    /// A picture that cannot go to this worker: counted and logged (each reason once per
    /// connection), the connection goes on.
    fn skip(&mut self, picture: &Picture, why: &str) {
        metrics::counter!("sightline_detect_failures_total", "stream" => picture.meta.stream.to_string()).increment(1);
        if self.skipped.insert(why.to_owned()) {
            warn!(stream = %picture.meta.stream, seq = picture.meta.seq, worker = self.id, reason = why, "picture not sent to the remote worker");
        }
    }

    /// Writes `picture` to the next ring slot (a new, larger ring first if it does not fit)
    /// and sends the [`Frame`] naming it.
    async fn write_slot(&mut self, picture: &Picture) -> Result<(), Ended> {
        let Link::Local { write, ring } = &mut self.link else { unreachable!("local links only") };
        let bytes = picture.planes.len() as u64;
        if ring.as_ref().is_none_or(|r| r.ring.slot_bytes < bytes) {
            *ring = Some(new_ring(write, bytes.max(FIRST_SLOT_BYTES), self.id).await?);
        }
        let ring = ring.as_mut().expect("ring was just made");
        let slot = ring.next;
        ring.next = (ring.next + 1) % ring.ring.slots;
        ring.file.write_all_at(&picture.planes, u64::from(slot) * ring.ring.slot_bytes)?;
        let header = Frame {
            meta: picture.meta.clone(),
            y_stride: picture.meta.width,
            uv_stride: picture.meta.width.div_ceil(2),
            full_range: picture.full_range,
            slot,
        };
        write.write_all(&wire::encode(&Message::Frame(header))).await?;
        Ok(())
    }

    fn publish(&self, picture: Picture, d: wire::Detections) {
        let (w, h) = (picture.meta.width as f32, picture.meta.height as f32);
        let model = &self.detect.pools()[self.pool].config.name;
        let boxes: Vec<NormalizedBox> = d
            .boxes
            .iter()
            .filter(|b| b.x.is_finite() && b.y.is_finite() && b.w.is_finite() && b.h.is_finite() && b.score.is_finite())
            .map(|b| {
                let x0 = (b.x / w).clamp(0.0, 1.0);
                let y0 = (b.y / h).clamp(0.0, 1.0);
                NormalizedBox {
                    x: x0,
                    y: y0,
                    w: ((b.x + b.w) / w).clamp(0.0, 1.0) - x0,
                    h: ((b.y + b.h) / h).clamp(0.0, 1.0) - y0,
                    class_id: b.class_id,
                    label: self.names.get(b.class_id as usize).cloned().unwrap_or_else(|| b.class_id.to_string()),
                    score: b.score.clamp(0.0, 1.0),
                    track_id: None,
                    model: model.clone(),
                }
            })
            .collect();
        let labels = [("stream", picture.meta.stream.to_string()), ("model", model.clone())];
        metrics::histogram!("sightline_detect_inference_seconds", &labels).record(f64::from(d.infer_ms) / 1000.0);
        self.detect.answered(self.pool, picture, boxes, d.infer_ms);
    }
}

/// A new shared-memory ring of [`RING_SLOTS`] slots of `slot_bytes`, sent to the worker.
async fn new_ring(write: &mut OwnedWriteHalf, slot_bytes: u64, worker: u64) -> Result<RingFile, Ended> {
    let slot_bytes = slot_bytes.next_multiple_of(4096);
    let ring = Ring { slots: RING_SLOTS, slot_bytes };
    let file = wire::fdpass::create_ring("sightline-frames", slot_bytes * u64::from(RING_SLOTS))?;
    let data = wire::encode(&Message::Ring(ring));
    let sock: &UnixStream = write.as_ref();
    let sent = loop {
        sock.writable().await?;
        match sock.try_io(Interest::WRITABLE, || wire::fdpass::send_fd_once(sock, &data, &file)) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    };
    write.write_all(&data[sent..]).await?;
    debug!(worker, slot_bytes, "frame ring sent");
    Ok(RingFile { file, ring, next: 0 })
}

/// A JPEG of `picture` for a remote worker (libjpeg-turbo straight from the YUV planes: no
/// colour conversion); the compressor comes back for the next picture.
fn jpeg_of(
    picture: &Picture,
    quality: u8,
    compressor: Option<turbojpeg::Compressor>,
) -> (std::io::Result<Vec<u8>>, Option<turbojpeg::Compressor>) {
    let (w, h) = (picture.meta.width as usize, picture.meta.height as usize);
    // libjpeg-turbo's 4:2:0 planes have even sizes: an odd last row or column is left out
    // (boxes keep their coordinates; the worker expects the even size).
    let (ew, eh) = (w & !1, h & !1);
    if ew == 0 || eh == 0 || picture.planes.len() < Picture::packed_len(picture.meta.width, picture.meta.height) {
        return (Err(std::io::Error::other(format!("no JPEG of a {w}x{h} picture"))), compressor);
    }
    let cropped;
    let pixels = if (ew, eh) == (w, h) {
        &picture.planes[..]
    } else {
        cropped = even_crop(&picture.planes, w, h);
        &cropped[..]
    };
    let mut compressor = match compressor.map_or_else(turbojpeg::Compressor::new, Ok) {
        Ok(c) => c,
        Err(e) => return (Err(std::io::Error::other(format!("JPEG encoder: {e}"))), None),
    };
    let image = turbojpeg::YuvImage { pixels, width: ew, align: 1, height: eh, subsamp: turbojpeg::Subsamp::Sub2x2 };
    let jpeg = compressor
        .set_quality(i32::from(quality))
        .and_then(|()| compressor.compress_yuv_to_vec(image))
        .map_err(|e| std::io::Error::other(format!("JPEG: {e}")));
    (jpeg, Some(compressor))
}

/// The packed I420 planes of a `w`x`h` picture without its odd last column and row.
fn even_crop(planes: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (ew, eh, cw, ch) = (w & !1, h & !1, w.div_ceil(2), h.div_ceil(2));
    let mut out = Vec::with_capacity(ew * eh * 3 / 2);
    for row in planes[..w * h].chunks_exact(w).take(eh) {
        out.extend_from_slice(&row[..ew]);
    }
    for plane in planes[w * h..w * h + 2 * cw * ch].chunks_exact(cw * ch) {
        for row in plane.chunks_exact(cw).take(eh / 2) {
            out.extend_from_slice(&row[..ew / 2]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream as WorkerSocket;

    use media::{FrameMeta, RtpTimestamp};
    use wire::{Hello, WireBox};

    use super::*;
    use crate::config::DetectConfig;
    use crate::core::clock::now_ms;
    use crate::core::detections::DetectionFanout;
    use crate::core::frame::PictureSink;

    fn service(timeout: Duration) -> (Arc<Detect>, Arc<DetectionFanout>) {
        let fanout = Arc::new(DetectionFanout::default());
        let config = DetectConfig { timeout, ..DetectConfig::default() };
        let detect =
            Detect::new(&config, "/nonexistent/workers.sock".into(), fanout.clone(), Arc::default(), std::iter::once("cam".into()), None);
        (Arc::new(detect), fanout)
    }

    /// A 4x2 picture whose bytes count 0..12.
    fn picture(seq: u64) -> Picture {
        let meta =
            FrameMeta { stream: "cam".into(), seq, rtp_timestamp: RtpTimestamp::new(3600), capture_ms: now_ms(), width: 4, height: 2 };
        Picture { meta, full_range: false, planes: (0..12).collect::<Vec<u8>>().into(), offered: Instant::now() }
    }

    /// The worker's end, blocking, as `infer-worker serve` reads it.
    struct FakeWorker {
        sock: WorkerSocket,
        buf: Vec<u8>,
        ring: Option<File>,
    }

    impl FakeWorker {
        fn send(&mut self, m: &Message) {
            self.sock.write_all(&wire::encode(m)).unwrap();
        }

        fn recv(&mut self) -> Message {
            loop {
                if let Some((m, used)) = wire::decode(&self.buf).unwrap() {
                    self.buf.drain(..used);
                    return m;
                }
                let mut chunk = [0u8; 4096];
                let (n, fd) = wire::fdpass::recv_with_fd(&self.sock, &mut chunk).unwrap();
                assert!(n > 0, "the gateway closed the connection");
                if let Some(fd) = fd {
                    self.ring = Some(File::from(fd));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        fn hello(&mut self) {
            let hello =
                Hello { model: "m.onnx".into(), input_size: 640, names: vec!["square".into()], provider: "cpu".into(), ..Hello::default() };
            self.send(&Message::Hello(hello));
        }
    }

    fn connect() -> (UnixStream, FakeWorker) {
        let (gateway, worker) = WorkerSocket::pair().unwrap();
        gateway.set_nonblocking(true).unwrap();
        (UnixStream::from_std(gateway).unwrap(), FakeWorker { sock: worker, buf: Vec::new(), ring: None })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_picture_goes_through_the_ring_and_its_boxes_come_back_normalised() {
        let (detect, fanout) = service(Duration::from_secs(5));
        let mut out = fanout.subscribe("cam");
        let (socket, mut worker) = connect();
        let conn = tokio::spawn(serve(detect.clone(), socket, 1));
        let worker = tokio::task::spawn_blocking(move || {
            worker.hello();
            let Message::Ring(ring) = worker.recv() else { panic!("the ring comes first") };
            let Message::Frame(f) = worker.recv() else { panic!("then the frame") };
            assert_eq!((f.meta.seq, f.meta.width, f.y_stride, f.uv_stride), (7, 4, 4, 2));
            let mut planes = vec![0u8; 12];
            worker
                .ring
                .as_ref()
                .expect("the memfd came with the ring")
                .read_exact_at(&mut planes, u64::from(f.slot) * ring.slot_bytes)
                .unwrap();
            assert_eq!(planes, (0..12).collect::<Vec<u8>>(), "the slot holds the picture");
            let boxes = vec![
                WireBox { x: 1.0, y: 0.5, w: 2.0, h: 1.0, class_id: 0, score: 0.9 },
                WireBox { x: 3.0, y: 1.0, w: 9.0, h: 9.0, class_id: 5, score: 1.5 },
            ];
            worker.send(&Message::Detections(wire::Detections {
                stream: f.meta.stream,
                seq: f.meta.seq,
                boxes,
                pre_ms: 0.1,
                infer_ms: 3.0,
                post_ms: 0.1,
                decode_ms: None,
            }));
            worker
        });
        // Pictures go to a model's pool only while it has a worker.
        while detect.workers().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        PictureSink::offer(&*detect, picture(7));
        let d = tokio::time::timeout(Duration::from_secs(5), out.recv()).await.unwrap().unwrap();
        assert_eq!((d.frame.seq, d.frame.rtp_timestamp.get(), d.infer_ms), (7, 3600, 3.0));
        let b = &d.boxes[0];
        assert_eq!((b.x, b.y, b.w, b.h, b.label.as_str(), b.score), (0.25, 0.25, 0.5, 0.5, "square", 0.9));
        let b = &d.boxes[1];
        assert_eq!(
            (b.x, b.y, b.w, b.h, b.label.as_str(), b.score),
            (0.75, 0.5, 0.25, 0.5, "5", 1.0),
            "clipped to the frame, unknown class by number"
        );
        assert_eq!(detect.view("cam").workers, 1);
        drop(worker.await.unwrap());
        tokio::time::timeout(Duration::from_secs(5), conn).await.expect("closing the socket ends the connection").unwrap();
        assert_eq!(detect.view("cam").workers, 0);
    }

    #[test]
    fn odd_pictures_go_as_even_jpegs() {
        // 5x3: Y 0..15, U 15..21 (3x2), V 21..27.
        let meta = FrameMeta { stream: "cam".into(), seq: 1, rtp_timestamp: RtpTimestamp::new(0), capture_ms: 0, width: 5, height: 3 };
        let planes: Vec<u8> = (0..27).collect();
        assert_eq!(even_crop(&planes, 5, 3), [0, 1, 2, 3, 5, 6, 7, 8, 15, 16, 21, 22]);
        let picture = Picture { meta, full_range: false, planes: planes.into(), offered: Instant::now() };
        let (jpeg, _) = jpeg_of(&picture, 90, None);
        let header = turbojpeg::Decompressor::new().unwrap().read_header(&jpeg.unwrap()).unwrap();
        assert_eq!((header.width, header.height), (4, 2));
        let tiny = Picture { meta: FrameMeta { width: 1, height: 1, ..picture.meta.clone() }, planes: vec![0; 3].into(), ..picture };
        assert!(jpeg_of(&tiny, 90, None).0.is_err(), "no panic on a 1x1 picture");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_does_not_answer_is_dropped() {
        let (detect, _fanout) = service(Duration::from_millis(300));
        let (socket, mut worker) = connect();
        let conn = tokio::spawn(serve(detect.clone(), socket, 1));
        let worker = tokio::task::spawn_blocking(move || {
            worker.hello();
            assert!(matches!(worker.recv(), Message::Ring(_)));
            assert!(matches!(worker.recv(), Message::Frame(_)));
            worker // and no answer
        });
        // Pictures go to a model's pool only while it has a worker.
        while detect.workers().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        PictureSink::offer(&*detect, picture(1));
        let _worker = worker.await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), conn).await.expect("dropped after detect.timeout").unwrap();
        assert_eq!(detect.view("cam").workers, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_closes_only_that_connection() {
        let (detect, _fanout) = service(Duration::from_secs(5));
        for garbage in [&b"\xff\xff\xff\xffjunk"[..], b"\0\0\0\x02\x09\x01", b"\0\0\0\x05\x01\x04{x}"] {
            let (socket, mut worker) = connect();
            let conn = tokio::spawn(serve(detect.clone(), socket, 1));
            worker.hello();
            worker.sock.write_all(garbage).unwrap();
            tokio::time::timeout(Duration::from_secs(3), conn).await.expect("garbage ends the connection").unwrap();
        }
        let (socket, mut worker) = connect();
        let conn = tokio::spawn(serve(detect.clone(), socket, 2));
        worker.sock.write_all(b"not a hello at all").unwrap();
        tokio::time::timeout(Duration::from_secs(3), conn).await.expect("garbage instead of Hello ends it").unwrap();
        assert_eq!(detect.view("cam").workers, 0);
    }
}
