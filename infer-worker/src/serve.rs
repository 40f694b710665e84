//! Worker mode: connect to the gateway's Unix socket, announce the model ([`Hello`]), take
//! the frame ring ([`Ring`] + memfd), then answer each [`Frame`] with [`Detections`] (or a
//! [`Failure`] for that frame). Blocking and single-threaded: a worker has at most one frame
//! in flight, by design. Garbage from the gateway ends the worker with an error (the gateway
//! restarts it); end of stream ends it cleanly.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use crate::image::I420;
use crate::runtime::Detector;
use wire::fdpass::recv_with_fd;
use wire::{Detections, Failure, Frame, Hello, Message, Ring, WireBox};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket failed.
    #[error("gateway socket: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway sent something that is not the protocol.
    #[error("protocol error from the gateway: {0}")]
    Protocol(#[from] wire::WireError),
}

struct Worker {
    detector: Detector,
    ring: Option<(File, Ring)>,
    pending_fd: Option<File>,
    buf: Vec<u8>,
    /// The picture read from the ring, reused from frame to frame: a fresh 1.4 MB buffer per
    /// 720p frame cost 15 % more than the read itself (0.098 vs 0.083 ms, zeroing and page
    /// faults).
    picture: Vec<u8>,
}

/// Connects to `socket` and serves until the gateway closes the connection.
/// `provider` is announced in the [`Hello`].
pub fn serve(socket: &Path, detector: Detector, model_name: &str, provider: &str) -> Result<(), ServeError> {
    let stream = UnixStream::connect(socket)?;
    let hello = Hello {
        model: model_name.to_owned(),
        input_size: detector.input_size,
        names: detector.names.clone(),
        provider: provider.to_owned(),
        pid: std::process::id(),
    };
    (&stream).write_all_bytes(&wire::encode(&Message::Hello(hello)))?;
    let mut worker = Worker { detector, ring: None, pending_fd: None, buf: Vec::with_capacity(4096), picture: Vec::new() };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let (n, fd) = recv_with_fd(&stream, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        if let Some(fd) = fd {
            worker.pending_fd = Some(File::from(fd));
        }
        worker.buf.extend_from_slice(&chunk[..n]);
        while let Some((msg, used)) = wire::decode(&worker.buf)? {
            worker.buf.drain(..used);
            if let Some(reply) = worker.handle(msg) {
                (&stream).write_all_bytes(&wire::encode(&reply))?;
            }
        }
    }
}

trait WriteAll {
    fn write_all_bytes(self, data: &[u8]) -> std::io::Result<()>;
}

impl WriteAll for &UnixStream {
    fn write_all_bytes(mut self, data: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(&mut self, data)
    }
}

impl Worker {
    fn handle(&mut self, msg: Message) -> Option<Message> {
        match msg {
            Message::Ring(ring) => match self.pending_fd.take() {
                Some(file) => {
                    self.ring = Some((file, ring));
                    None
                }
                None => Some(fail(None, "Ring message without a file descriptor")),
            },
            Message::Frame(frame) => Some(match self.detect(&frame) {
                Ok(d) => Message::Detections(d),
                Err(e) => fail(Some(frame.meta.seq), &e),
            }),
            Message::Ping(beat) => Some(Message::Pong(beat)),
            other => Some(fail(None, &format!("unexpected message kind {} from the gateway", other.kind()))),
        }
    }

    fn detect(&mut self, frame: &Frame) -> Result<Detections, String> {
        let (file, ring) = self.ring.as_ref().ok_or("Frame before Ring")?;
        let meta = &frame.meta;
        let bytes = frame.picture_bytes();
        if frame.slot >= ring.slots || bytes > ring.slot_bytes || meta.width == 0 || meta.height == 0 {
            return Err(format!("frame {}x{} in slot {} does not fit the ring {ring:?}", meta.width, meta.height, frame.slot));
        }
        if frame.y_stride < meta.width || frame.uv_stride < meta.width.div_ceil(2) {
            return Err(format!("strides {}/{} too small for width {}", frame.y_stride, frame.uv_stride, meta.width));
        }
        let started = Instant::now();
        self.picture.resize(bytes as usize, 0);
        let picture = &mut self.picture[..bytes as usize];
        file.read_exact_at(picture, u64::from(frame.slot) * ring.slot_bytes).map_err(|e| format!("reading slot {}: {e}", frame.slot))?;
        let y_len = (frame.y_stride * meta.height) as usize;
        let c_len = (frame.uv_stride * meta.height.div_ceil(2)) as usize;
        let (y, rest) = picture.split_at(y_len);
        let (u, v) = rest.split_at(c_len);
        let i420 = I420 {
            width: meta.width,
            height: meta.height,
            y,
            u,
            v,
            strides: (frame.y_stride, frame.uv_stride),
            full_range: frame.full_range,
        };
        let timed = self.detector.detect_i420_timed(&i420).map_err(|e| e.to_string())?;
        let boxes = timed
            .detections
            .iter()
            .map(|d| WireBox { x: d.x, y: d.y, w: d.w, h: d.h, class_id: d.class_id as u32, score: d.score })
            .collect();
        let read_ms = started.elapsed().as_secs_f32() * 1000.0 - timed.pre_ms - timed.infer_ms - timed.post_ms;
        Ok(Detections {
            stream: meta.stream.clone(),
            seq: meta.seq,
            boxes,
            pre_ms: timed.pre_ms + read_ms.max(0.0),
            infer_ms: timed.infer_ms,
            post_ms: timed.post_ms,
        })
    }
}

fn fail(seq: Option<u64>, message: &str) -> Message {
    Message::Failure(Failure { seq, message: message.to_owned() })
}
