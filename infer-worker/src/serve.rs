//! Worker mode: connect to the gateway, announce the model ([`Hello`]), then answer each
//! picture with [`Detections`] (or a [`Failure`] for that picture). Blocking and
//! single-threaded: a worker has at most one picture in flight, by design.
//!
//! Two ways in (the `wire` crate's two transports):
//! - [`serve`]: the gateway's Unix socket. The gateway sends the frame ring ([`Ring`] +
//!   memfd) and each [`Frame`] names a slot. The worker ends when the gateway closes the
//!   socket (the gateway's supervisor starts another).
//! - [`serve_remote`]: TCP or TLS (`tcp://host:port`, `tls://host:port`) from another
//!   machine, with the gateway's worker token in the [`Hello`]; each picture arrives inline
//!   ([`Message::Picture`], JPEG or I420). The worker reconnects after a lost connection
//!   (250 ms doubling to 5 s) and stops only when the gateway refuses it ([`Message::Refused`]).
//!
//! Garbage from the gateway ends that connection with an error, never a panic.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::image::I420;
use crate::runtime::Detector;
use wire::fdpass::recv_with_fd;
use wire::{Detections, Encoding, Failure, Frame, Hello, Message, PictureHeader, Ring, WireBox};

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket failed.
    #[error("gateway socket: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway sent something that is not the protocol.
    #[error("protocol error from the gateway: {0}")]
    Protocol(#[from] wire::WireError),
    /// The gateway refused this worker (a wrong token); retrying would not help.
    #[error("the gateway refused this worker: {0}")]
    Refused(String),
    /// The `--connect` address or the TLS settings are unusable.
    #[error("{0}")]
    Setup(String),
}

/// What the worker announces in its [`Hello`].
#[derive(Clone, Debug)]
pub struct Announce {
    /// Model file name.
    pub model: String,
    /// Execution provider in use.
    pub provider: String,
}

struct Worker {
    detector: Detector,
    ring: Option<(File, Ring)>,
    pending_fd: Option<File>,
    buf: Vec<u8>,
    /// The picture read from the ring (or decoded from a JPEG), reused from frame to frame:
    /// a fresh 1.4 MB buffer per 720p frame cost 15 % more than the read itself (0.098 vs
    /// 0.083 ms, zeroing and page faults).
    picture: Vec<u8>,
    jpeg: Option<turbojpeg::Decompressor>,
}

/// One connection's byte stream, and the file descriptor that may ride along (Unix only).
trait Link {
    fn recv(&mut self, chunk: &mut [u8]) -> std::io::Result<(usize, Option<File>)>;
    fn send(&mut self, data: &[u8]) -> std::io::Result<()>;
}

impl Link for UnixStream {
    fn recv(&mut self, chunk: &mut [u8]) -> std::io::Result<(usize, Option<File>)> {
        let (n, fd) = recv_with_fd(&*self, chunk)?;
        Ok((n, fd.map(File::from)))
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_all(data)
    }
}

/// A TCP or TLS stream: bytes only.
struct Stream<S>(S);

impl<S: Read + Write> Link for Stream<S> {
    fn recv(&mut self, chunk: &mut [u8]) -> std::io::Result<(usize, Option<File>)> {
        Ok((self.0.read(chunk)?, None))
    }

    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)?;
        self.0.flush()
    }
}

/// Connects to `socket` and serves until the gateway closes the connection.
pub fn serve(socket: &Path, detector: Detector, announce: &Announce) -> Result<(), ServeError> {
    let mut stream = UnixStream::connect(socket)?;
    let mut worker = Worker::new(detector);
    worker.run(&mut stream, worker.hello(announce, None, String::new()))
}

/// Where a remote worker connects: `tcp://host:port` or `tls://host:port`. Its `Debug`
/// output leaves the token out.
#[derive(Clone)]
pub struct Remote {
    /// The gateway's worker address.
    pub url: String,
    /// The gateway's worker token (`detect.remote.token`).
    pub token: String,
    /// PEM certificates to trust for `tls://` (default: the Mozilla roots in `webpki-roots`).
    pub ca: Option<PathBuf>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("token", &"<redacted>").field("ca", &self.ca).finish()
    }
}

/// First wait before reconnecting; doubles to [`RECONNECT_MAX`], and starts over after a
/// connection that served.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A connection attempt gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A gateway silent this long (no picture, no ping) is taken for gone: reconnect.
const SILENT_GATEWAY: Duration = Duration::from_secs(30);

/// Connects to the first address of `addr` (`host:port`) that answers within
/// [`CONNECT_TIMEOUT`].
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Serves the gateway at `remote` forever: reconnects when the connection is lost or cannot
/// be made. Returns only on a refusal (a wrong token) or unusable settings.
pub fn serve_remote(remote: &Remote, detector: Detector, announce: &Announce) -> Result<(), ServeError> {
    let target = Target::parse(&remote.url)?;
    let tls = match &target.tls {
        Some(_) => Some(Arc::new(client_config(remote.ca.as_deref())?)),
        None => None,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let mut worker = Worker::new(detector);
    let mut wait = RECONNECT_MIN;
    loop {
        let started = Instant::now();
        let hello = worker.hello(announce, Some(remote.token.clone()), host.clone());
        let result = match connect(&target.addr) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                // An idle gateway pings every 2 s: silence this long means it is gone.
                let _ = tcp.set_read_timeout(Some(SILENT_GATEWAY));
                eprintln!("infer-worker: connected to {}", remote.url);
                match (&target.tls, &tls) {
                    (Some(name), Some(config)) => match rustls::ClientConnection::new(config.clone(), name.clone()) {
                        Ok(conn) => worker.run(&mut Stream(rustls::StreamOwned::new(conn, tcp)), hello),
                        Err(e) => Err(ServeError::Setup(format!("TLS: {e}"))),
                    },
                    _ => worker.run(&mut Stream(tcp), hello),
                }
            }
            Err(e) => Err(ServeError::Io(e)),
        };
        match result {
            Err(e @ (ServeError::Refused(_) | ServeError::Setup(_))) => return Err(e),
            Ok(()) => eprintln!("infer-worker: the gateway closed the connection; reconnecting"),
            Err(e) => eprintln!("infer-worker: {e}; reconnecting"),
        }
        worker.ring = None;
        worker.buf.clear();
        if started.elapsed() > Duration::from_secs(2) {
            wait = RECONNECT_MIN;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

/// A parsed `--connect` URL.
struct Target {
    /// `host:port`, as `TcpStream::connect` resolves it.
    addr: String,
    /// For `tls://`: the name the gateway's certificate must carry.
    tls: Option<rustls::pki_types::ServerName<'static>>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ServeError> {
        let bad = |why: &str| ServeError::Setup(format!("--connect {url:?}: {why} (expected tcp://host:port or tls://host:port)"));
        let (scheme, addr) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("bad host or port"));
        }
        let tls = match scheme {
            "tcp" => None,
            "tls" => {
                let name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                Some(rustls::pki_types::ServerName::try_from(name).map_err(|e| bad(&e.to_string()))?)
            }
            _ => return Err(bad("unknown scheme")),
        };
        Ok(Target { addr: addr.to_owned(), tls })
    }
}

/// rustls (ring) trusting `ca`'s certificates, or the Mozilla roots.
fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ServeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ServeError::Setup(format!("--tls-ca {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ServeError::Setup(format!("--tls-ca {}: no usable certificate", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Worker {
    fn new(detector: Detector) -> Worker {
        Worker { detector, ring: None, pending_fd: None, buf: Vec::with_capacity(4096), picture: Vec::new(), jpeg: None }
    }

    fn hello(&self, announce: &Announce, token: Option<String>, host: String) -> Hello {
        Hello {
            model: announce.model.clone(),
            input_size: self.detector.input_size,
            names: self.detector.names.clone(),
            provider: announce.provider.clone(),
            pid: std::process::id(),
            host,
            capacity: 1,
            token,
        }
    }

    /// Sends `hello`, then answers the gateway until it closes the connection.
    fn run(&mut self, link: &mut dyn Link, hello: Hello) -> Result<(), ServeError> {
        link.send(&wire::encode(&Message::Hello(hello)))?;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let (n, fd) = link.recv(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(fd) = fd {
                self.pending_fd = Some(fd);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            while let Some((msg, used)) = wire::decode_from_gateway(&self.buf)? {
                self.buf.drain(..used);
                if let Message::Refused(r) = msg {
                    return Err(ServeError::Refused(r.reason));
                }
                if let Some(reply) = self.handle(msg) {
                    link.send(&wire::encode(&reply))?;
                }
            }
        }
    }

    fn handle(&mut self, msg: Message) -> Option<Message> {
        match msg {
            Message::Ring(ring) => match self.pending_fd.take() {
                Some(file) => {
                    self.ring = Some((file, ring));
                    None
                }
                None => Some(fail(None, "Ring message without a file descriptor")),
            },
            Message::Frame(frame) => Some(match self.detect_slot(&frame) {
                Ok(d) => Message::Detections(d),
                Err(e) => fail(Some(frame.meta.seq), &e),
            }),
            Message::Picture(header, bytes) => Some(match self.detect_inline(&header, &bytes) {
                Ok(d) => Message::Detections(d),
                Err(e) => fail(Some(header.meta.seq), &e),
            }),
            Message::Ping(beat) => Some(Message::Pong(beat)),
            other => Some(fail(None, &format!("unexpected message kind {} from the gateway", other.kind()))),
        }
    }

    fn detect_slot(&mut self, frame: &Frame) -> Result<Detections, String> {
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
        file.read_exact_at(&mut self.picture, u64::from(frame.slot) * ring.slot_bytes)
            .map_err(|e| format!("reading slot {}: {e}", frame.slot))?;
        self.run_model(&frame.meta, (frame.y_stride, frame.uv_stride), frame.full_range, started, None)
    }

    /// A picture that came inline: I420 as is, or a 4:2:0 JPEG decoded to its YUV planes.
    fn detect_inline(&mut self, header: &PictureHeader, bytes: &[u8]) -> Result<Detections, String> {
        let meta = &header.meta;
        let (w, h) = (meta.width as usize, meta.height as usize);
        if w == 0 || h == 0 || w > 8192 || h > 8192 {
            return Err(format!("picture of {w}x{h} px"));
        }
        let cw = w.div_ceil(2);
        let size = w * h + 2 * cw * h.div_ceil(2);
        let started = Instant::now();
        let decode_ms = match header.encoding {
            Encoding::I420 => {
                if bytes.len() != size {
                    return Err(format!("I420 picture of {} bytes, {w}x{h} needs {size}", bytes.len()));
                }
                self.picture.clear();
                self.picture.extend_from_slice(bytes);
                None::<f32>
            }
            Encoding::Jpeg => {
                // 4:2:0 JPEG planes have even sizes: the gateway leaves out an odd last
                // column and row (boxes keep their coordinates).
                let (ew, eh) = (w & !1, h & !1);
                if ew == 0 || eh == 0 {
                    return Err(format!("no JPEG of a {w}x{h} picture"));
                }
                if self.jpeg.is_none() {
                    self.jpeg = Some(turbojpeg::Decompressor::new().map_err(|e| format!("JPEG decoder: {e}"))?);
                }
                let jpeg = self.jpeg.as_mut().expect("made above");
                let found = jpeg.read_header(bytes).map_err(|e| format!("JPEG: {e}"))?;
                if (found.width, found.height, found.subsamp) != (ew, eh, turbojpeg::Subsamp::Sub2x2) {
                    return Err(format!("JPEG of {}x{} {:?}, expected {ew}x{eh} 4:2:0", found.width, found.height, found.subsamp));
                }
                self.picture.resize(ew * eh * 3 / 2, 0);
                let out = turbojpeg::YuvImage {
                    pixels: &mut self.picture[..],
                    width: ew,
                    align: 1,
                    height: eh,
                    subsamp: turbojpeg::Subsamp::Sub2x2,
                };
                jpeg.decompress_to_yuv(bytes, out).map_err(|e| format!("JPEG: {e}"))?;
                let decode_ms = started.elapsed().as_secs_f32() * 1000.0;
                let even = wire::FrameMeta { width: ew as u32, height: eh as u32, ..meta.clone() };
                return self.run_model(&even, (ew as u32, (ew / 2) as u32), header.full_range, started, Some(decode_ms));
            }
        };
        self.run_model(meta, (meta.width, cw as u32), header.full_range, started, decode_ms)
    }

    /// Runs the model on `self.picture` (packed planes at `strides`); `started` is when the
    /// picture began to arrive in memory (its read or decode counts as pre-processing).
    fn run_model(
        &mut self,
        meta: &wire::FrameMeta,
        strides: (u32, u32),
        full_range: bool,
        started: Instant,
        decode_ms: Option<f32>,
    ) -> Result<Detections, String> {
        let y_len = (strides.0 * meta.height) as usize;
        let c_len = (strides.1 * meta.height.div_ceil(2)) as usize;
        let (y, rest) = self.picture.split_at(y_len);
        let (u, v) = rest.split_at(c_len);
        let i420 = I420 { width: meta.width, height: meta.height, y, u, v, strides, full_range };
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
            decode_ms,
        })
    }
}

fn fail(seq: Option<u64>, message: &str) -> Message {
    Message::Failure(Failure { seq, message: message.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_urls() {
        let t = Target::parse("tcp://gateway:7000").unwrap();
        assert_eq!((t.addr.as_str(), t.tls.is_none()), ("gateway:7000", true));
        let t = Target::parse("tls://[::1]:7000").unwrap();
        assert_eq!(t.addr, "[::1]:7000");
        assert_eq!(t.tls.unwrap().to_str(), "::1");
        for bad in ["gateway:7000", "udp://g:7000", "tcp://g", "tcp://:7000", "tcp://g:99999"] {
            assert!(matches!(Target::parse(bad), Err(ServeError::Setup(_))), "{bad}");
        }
    }
}
