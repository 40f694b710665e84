//! The generated test model (models/testcam-shapes.onnx) on real ONNX Runtime (the PyPI
//! wheel's libonnxruntime) finds the shapes the built-in test camera draws: every shape of
//! a frame gets a box of its class with IoU >= 0.5 against where the camera drew it.

use std::path::{Path, PathBuf};

use infer::image::I420;
use infer::runtime::{Detector, DetectorConfig, RuntimeError, find_library};
use infer::yolo::{Detection, Layout, iou};
use testcam::scene::{SceneRenderer, shapes_at};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn detector() -> Detector {
    let library = find_library(None).expect("libonnxruntime from ORT_DYLIB_PATH or `pip install onnxruntime`");
    Detector::load(&library, &workspace().join("models/testcam-shapes.onnx"), DetectorConfig::default()).expect("model loads")
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
        let picture = I420 {
            width: w as u32,
            height: h as u32,
            y: &frame.y,
            u: &frame.u,
            v: &frame.v,
            strides: (w as u32, (w / 2) as u32),
            full_range: false,
        };
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
