//! The generated test model (models/testcam-shapes.onnx) on real ONNX Runtime (the PyPI
//! wheel's libonnxruntime) finds the shapes the built-in test camera draws: every shape of
//! a frame gets a box of its class with IoU >= 0.5 against where the camera drew it.

use std::path::{Path, PathBuf};

use infer::image::I420;
use infer::runtime::{Detector, DetectorConfig, Optimization, RuntimeError, find_library};
use infer::yolo::{Detection, Layout, iou};
use testcam::scene::{SceneRenderer, shapes_at};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn detector() -> Detector {
    let library = find_library(None).expect("libonnxruntime from ORT_DYLIB_PATH or `pip install onnxruntime`");
    Detector::load(&library, &workspace().join("models/testcam-shapes.onnx"), DetectorConfig::default()).expect("model loads")
}

/// A limited-range `w`x`h` I420 picture with rows of exactly its width.
fn tight_i420<'a>(y: &'a [u8], u: &'a [u8], v: &'a [u8], w: usize, h: usize) -> I420<'a> {
    I420 { width: w as u32, height: h as u32, y, u, v, strides: (w as u32, (w / 2) as u32), full_range: false }
}

#[test]
fn boxes_land_on_the_drawn_shapes() {
    let mut det = detector();
    assert_eq!(det.layout(), Layout::V8 { classes: 3 });
    assert_eq!(det.names, vec!["circle", "square", "bar"], "class names from the ONNX metadata");
    assert_eq!(det.input_size, 640);
    let (w, h) = (1280usize, 720usize);
    let scene = SceneRenderer::new(w, h);
    for n in (0..2000).step_by(97) {
        let frame = scene.render(n, 1_700_000_000_000);
        let picture = tight_i420(&frame.y, &frame.u, &frame.v, w, h);
        let found = det.detect_i420(&picture).unwrap();
        let shapes = shapes_at(n, w, h);
        let boxes: Vec<Detection> = shapes
            .iter()
            .map(|s| Detection { x: s.x as f32, y: s.y as f32, w: s.w as f32, h: s.h as f32, class_id: 0, score: 1.0 })
            .collect();
        for (i, shape) in shapes.iter().enumerate() {
            let truth = boxes[i];
            // A shape partly hidden under a later-drawn one is not fully visible: skip it.
            if boxes[i + 1..].iter().any(|later| iou(later, &truth) > 0.0) {
                continue;
            }
            let label = shape.kind.label();
            let best = found.iter().filter(|d| det.names[d.class_id] == label).map(|d| iou(d, &truth)).fold(0.0f32, f32::max);
            assert!(best >= 0.5, "frame {n}: {label} at {truth:?}: best IoU {best:.2} among {found:?}");
        }
        assert!(found.len() <= 4, "frame {n}: at most one stray box: {found:?}");
    }
}

/// Mean IoU of each fully visible shape's best box of its class against where the camera
/// drew it, over `frames`, for pictures made by `picture` from the rendered planes.
fn mean_iou(det: &mut Detector, frames: &[u64], mut picture: impl FnMut(&[u8]) -> Vec<u8>) -> (f32, f32) {
    let (w, h) = (1280usize, 720usize);
    let scene = SceneRenderer::new(w, h);
    let (mut sum, mut worst, mut n_shapes) = (0.0f32, 1.0f32, 0);
    for &n in frames {
        let frame = scene.render(n, 1_700_000_000_000);
        let packed = [&frame.y[..], &frame.u[..], &frame.v[..]].concat();
        let planes = picture(&packed);
        let (y, rest) = planes.split_at(w * h);
        let (u, v) = rest.split_at(w * h / 4);
        let i420 = tight_i420(y, u, v, w, h);
        let found = det.detect_i420(&i420).unwrap();
        let shapes = shapes_at(n, w, h);
        let truths: Vec<Detection> = shapes
            .iter()
            .map(|s| Detection { x: s.x as f32, y: s.y as f32, w: s.w as f32, h: s.h as f32, class_id: 0, score: 1.0 })
            .collect();
        for (i, shape) in shapes.iter().enumerate() {
            if truths[i + 1..].iter().any(|later| iou(later, &truths[i]) > 0.0) {
                continue;
            }
            let best =
                found.iter().filter(|d| det.names[d.class_id] == shape.kind.label()).map(|d| iou(d, &truths[i])).fold(0.0f32, f32::max);
            sum += best;
            worst = worst.min(best);
            n_shapes += 1;
        }
    }
    (sum / n_shapes as f32, worst)
}

/// What a remote worker gets with `detect.remote.encoding = "jpeg"`: a JPEG of the YUV 4:2:0
/// planes (no colour conversion), decoded back to planes. Boxes on such pictures are as good
/// as on the raw planes at the default quality (90); the sizes and times are printed for the
/// README's remote-worker table (the test camera's flat shapes compress far better than a
/// real scene: see `scripts/bench-remote.sh` for a camera's picture).
#[test]
fn jpeg_pictures_keep_the_boxes() {
    let mut det = detector();
    let frames: Vec<u64> = (0..2000).step_by(97).collect();
    let (raw, raw_worst) = mean_iou(&mut det, &frames, <[u8]>::to_vec);
    eprintln!("i420: {} bytes/frame, mean IoU {raw:.3} (worst {raw_worst:.3})", 1280 * 720 * 3 / 2);
    for quality in [50, 75, 90] {
        let (mut bytes, mut encode_ms, mut decode_ms, mut count) = (0usize, 0f64, 0f64, 0u32);
        let (mean, worst) = mean_iou(&mut det, &frames, |planes| {
            let mut c = turbojpeg::Compressor::new().unwrap();
            c.set_quality(quality).unwrap();
            let t = std::time::Instant::now();
            let yuv = turbojpeg::YuvImage { pixels: planes, width: 1280, align: 1, height: 720, subsamp: turbojpeg::Subsamp::Sub2x2 };
            let jpeg = c.compress_yuv_to_vec(yuv).unwrap();
            encode_ms += t.elapsed().as_secs_f64() * 1000.0;
            let mut out = vec![0u8; planes.len()];
            let t = std::time::Instant::now();
            let mut d = turbojpeg::Decompressor::new().unwrap();
            let yuv = turbojpeg::YuvImage { pixels: &mut out[..], width: 1280, align: 1, height: 720, subsamp: turbojpeg::Subsamp::Sub2x2 };
            d.decompress_to_yuv(&jpeg, yuv).unwrap();
            decode_ms += t.elapsed().as_secs_f64() * 1000.0;
            bytes += jpeg.len();
            count += 1;
            out
        });
        let n = f64::from(count);
        eprintln!(
            "jpeg q{quality}: {} bytes/frame, encode {:.2} ms, decode {:.2} ms, mean IoU {mean:.3} (worst {worst:.3})",
            bytes / count as usize,
            encode_ms / n,
            decode_ms / n
        );
        if quality == 90 {
            assert!((mean - raw).abs() <= 0.01 && worst >= 0.5, "q90: mean IoU {mean:.3} vs {raw:.3} raw, worst {worst:.3}");
        }
    }
}

#[test]
fn a_missing_library_or_model_is_a_clear_error() {
    let err = find_library(Some(Path::new("/nonexistent/libonnxruntime.so.1"))).unwrap_err();
    assert!(matches!(err, RuntimeError::NoLibrary(_)) && err.to_string().contains("pip install onnxruntime"), "{err}");
    let library = find_library(None).unwrap();
    let err = Detector::load(&library, Path::new("/nonexistent/model.onnx"), DetectorConfig::default()).unwrap_err();
    assert!(matches!(err, RuntimeError::Load { .. }), "{err}");
}

#[test]
fn committed_model_matches_its_generator() {
    let out = tempfile_path("testcam-shapes.onnx");
    let status = std::process::Command::new("python3")
        .arg(workspace().join("scripts/make_test_model.py"))
        .arg(&out)
        .status()
        .expect("python3 with onnx (pip install onnx)");
    assert!(status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(workspace().join("models/testcam-shapes.onnx")).unwrap(),
        "regenerate with scripts/make_test_model.py"
    );
}

fn tempfile_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sightline-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `auto` times both levels and keeps one; `all` and `extended` find the same boxes on
/// the same pictures (the levels change how the graph runs, not what it computes); planes
/// with padded rows (a decoder's strides) give the boxes of tight ones.
#[test]
fn optimization_levels_and_strides_keep_the_boxes() {
    let library = find_library(None).expect("libonnxruntime");
    let model = workspace().join("models/testcam-shapes.onnx");
    let load = |optimization| Detector::load(&library, &model, DetectorConfig { optimization, ..DetectorConfig::default() }).unwrap();
    let auto = load(Optimization::Auto);
    let chosen = auto.optimization();
    let (other, other_ms) = chosen.other.expect("auto on the CPU compares two levels");
    assert_ne!(chosen.level, other);
    assert!(chosen.run_ms <= other_ms && chosen.run_ms > 0.0, "{chosen:?}");
    let (mut all, mut extended) = (load(Optimization::All), load(Optimization::Extended));
    assert!(all.optimization().other.is_none());
    let (w, h) = (1280usize, 720usize);
    let scene = SceneRenderer::new(w, h);
    for n in [0, 250, 777] {
        let frame = scene.render(n, 1_700_000_000_000);
        let tight = tight_i420(&frame.y, &frame.u, &frame.v, w, h);
        let a = all.detect_i420(&tight).unwrap();
        let e = extended.detect_i420(&tight).unwrap();
        assert!(!a.is_empty());
        assert_eq!(a.len(), e.len(), "frame {n}: {a:?} vs {e:?}");
        for (x, y) in a.iter().zip(&e) {
            assert!(x.class_id == y.class_id && iou(x, y) > 0.999, "frame {n}: {x:?} vs {y:?}");
        }
        // The same planes with 64 bytes of padding after each row.
        let pad =
            |plane: &[u8], width: usize| plane.chunks_exact(width).flat_map(|r| r.iter().copied().chain([0u8; 64])).collect::<Vec<u8>>();
        let (y, u, v) = (pad(&frame.y, w), pad(&frame.u, w / 2), pad(&frame.v, w / 2));
        let strided = I420 { y: &y, u: &u, v: &v, strides: (w as u32 + 64, (w / 2) as u32 + 64), ..tight };
        assert_eq!(extended.detect_i420(&strided).unwrap(), e, "frame {n}: strided planes");
    }
}
