//! The worker process over its real protocol: this test plays the gateway (Unix socket,
//! memfd ring sent with SCM_RIGHTS, frames in slots) and checks the answers; garbage from
//! the gateway ends the worker with a clear error instead of a panic.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use infer::yolo::{Detection, iou};
use media::{FrameMeta, RtpTimestamp};
use testcam::scene::{SceneRenderer, shapes_at};
use wire::fdpass::{create_ring, send_with_fd};
use wire::{Frame, Message, Ring};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Gateway {
    stream: UnixStream,
    worker: Child,
    buf: Vec<u8>,
    _dir: PathBuf,
}

fn start() -> Gateway {
    let dir = std::env::temp_dir().join(format!("sightline-serve-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("workers.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let worker = Command::new(env!("CARGO_BIN_EXE_infer-worker"))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--model")
        .arg(workspace().join("models/testcam-shapes.onnx"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    Gateway { stream, worker, buf: Vec::new(), _dir: dir }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

impl Gateway {
    fn recv(&mut self) -> Message {
        loop {
            if let Some((msg, used)) = wire::decode(&self.buf).expect("the worker speaks the protocol") {
                self.buf.drain(..used);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "worker closed the socket");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn worker_detects_frames_from_the_ring() {
    let mut gw = start();
    let Message::Hello(hello) = gw.recv() else { panic!("Hello first") };
    assert_eq!(hello.names, vec!["circle", "square", "bar"]);
    assert_eq!((hello.input_size, hello.model.as_str()), (640, "testcam-shapes.onnx"));

    let (w, h) = (1280u32, 720u32);
    let slot_bytes = u64::from(w * h * 3 / 2);
    let ring = create_ring("sightline-test-ring", 2 * slot_bytes).unwrap();
    send_with_fd(&gw.stream, &wire::encode(&Message::Ring(Ring { slots: 2, slot_bytes })), &ring).unwrap();

    let scene = SceneRenderer::new(w as usize, h as usize);
    for (i, n) in [40u64, 333, 1200].into_iter().enumerate() {
        let slot = (i % 2) as u32;
        let frame = scene.render(n, 1_700_000_000_000);
        let mut picture = frame.y.clone();
        picture.extend_from_slice(&frame.u);
        picture.extend_from_slice(&frame.v);
        ring.write_all_at(&picture, u64::from(slot) * slot_bytes).unwrap();
        let msg = Frame {
            meta: FrameMeta {
                stream: "cam".into(),
                seq: n,
                rtp_timestamp: RtpTimestamp::new((n * 3600) as u32),
                capture_ms: 0,
                width: w,
                height: h,
            },
            y_stride: w,
            uv_stride: w / 2,
            full_range: false,
            slot,
        };
        gw.stream.write_all(&wire::encode(&Message::Frame(msg))).unwrap();
        let Message::Detections(d) = gw.recv() else { panic!("Detections for frame {n}") };
        assert_eq!((d.stream.as_str(), d.seq), ("cam", n));
        assert!(d.infer_ms > 0.0 && d.pre_ms > 0.0, "{d:?}");
        let shapes = shapes_at(n, w as usize, h as usize);
        for (k, s) in shapes.iter().enumerate() {
            let truth = Detection { x: s.x as f32, y: s.y as f32, w: s.w as f32, h: s.h as f32, class_id: k, score: 1.0 };
            let hidden = shapes[k + 1..].iter().any(|l| {
                let later = Detection { x: l.x as f32, y: l.y as f32, w: l.w as f32, h: l.h as f32, class_id: 0, score: 1.0 };
                iou(&later, &truth) > 0.0
            });
            if hidden {
                continue;
            }
            let label = s.kind.label();
            let best = d
                .boxes
                .iter()
                .filter(|b| hello.names[b.class_id as usize] == label)
                .map(|b| iou(&Detection { x: b.x, y: b.y, w: b.w, h: b.h, class_id: 0, score: b.score }, &truth))
                .fold(0.0f32, f32::max);
            assert!(best >= 0.5, "frame {n}: {label}: IoU {best:.2} in {:?}", d.boxes);
        }
    }

    // A frame that does not fit its slot is refused for that frame; the worker lives on.
    let bad = Frame {
        meta: FrameMeta { stream: "cam".into(), seq: 9, rtp_timestamp: RtpTimestamp::new(0), capture_ms: 0, width: 4000, height: 4000 },
        y_stride: 4000,
        uv_stride: 2000,
        full_range: false,
        slot: 0,
    };
    gw.stream.write_all(&wire::encode(&Message::Frame(bad))).unwrap();
    let Message::Failure(f) = gw.recv() else { panic!("Failure for an oversized frame") };
    assert_eq!(f.seq, Some(9));

    // Closing the socket ends the worker cleanly.
    drop(gw.stream);
    let status = gw.worker.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn garbage_from_the_gateway_ends_the_worker_with_a_clear_error() {
    let mut gw = start();
    let Message::Hello(_) = gw.recv() else { panic!("Hello first") };
    gw.stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let status = gw.worker.wait().unwrap();
    let mut stderr = String::new();
    gw.worker.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("protocol error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
