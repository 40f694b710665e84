//! `infer-worker`: runs a YOLO model through ONNX Runtime.
//!
//! `infer-worker detect --model M.onnx --image frame.jpg` prints the detections of one JPEG
//! as JSON (boxes in source pixels); `infer-worker serve --socket S --model M.onnx` connects
//! to the gateway and answers the frames it sends (see the library's `wire` module).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infer::runtime::{Detector, DetectorConfig, find_library};

/// Sightline detection worker (YOLO on ONNX Runtime).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the gateway's worker socket and detect on the frames it sends.
    Serve {
        /// The gateway's Unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// libonnxruntime.so path (default: ORT_DYLIB_PATH, else the onnxruntime Python package).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// Minimum score.
        #[arg(long, default_value_t = 0.5)]
        confidence: f32,
        /// NMS IoU threshold.
        #[arg(long, default_value_t = 0.45)]
        iou: f32,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Detect objects in one JPEG and print JSON.
    Detect {
        /// The ONNX model (YOLOv8/11, YOLOv5 or end-to-end export).
        #[arg(long)]
        model: PathBuf,
        /// A JPEG picture.
        #[arg(long)]
        image: PathBuf,
        /// libonnxruntime.so path (default: ORT_DYLIB_PATH, else the onnxruntime Python package).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// Minimum score.
        #[arg(long, default_value_t = 0.5)]
        confidence: f32,
        /// NMS IoU threshold.
        #[arg(long, default_value_t = 0.45)]
        iou: f32,
        /// A labels file (one class name per line) instead of the model's names.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

fn detect(model: PathBuf, image: PathBuf, onnxruntime: Option<PathBuf>, confidence: f32, iou: f32, labels: Option<PathBuf>) -> anyhow::Result<()> {
    let library = find_library(onnxruntime.as_deref())?;
    let labels = labels.map(|p| std::fs::read_to_string(&p).map(|t| infer::names::parse_labels(&t))).transpose()?;
    let config = DetectorConfig { confidence, iou, labels, ..DetectorConfig::default() };
    let mut detector = Detector::load(&library, &model, config)?;
    let jpeg = std::fs::read(&image)?;
    let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB)?;
    let rgb: Vec<u8> = img.pixels.chunks(img.pitch).flat_map(|row| &row[..img.width * 3]).copied().collect();
    let (w, h) = (img.width as u32, img.height as u32);
    let dets = detector.detect_rgb(&rgb, w, h)?;
    let boxes: Vec<_> = dets
        .iter()
        .map(|d| {
            serde_json::json!({
                "x": d.x, "y": d.y, "w": d.w, "h": d.h,
                "class_id": d.class_id,
                "label": detector.names.get(d.class_id).cloned().unwrap_or_else(|| d.class_id.to_string()),
                "score": d.score,
            })
        })
        .collect();
    println!("{}", serde_json::json!({"width": w, "height": h, "layout": format!("{:?}", detector.layout()), "boxes": boxes}));
    Ok(())
}

fn serve(socket: PathBuf, model: PathBuf, onnxruntime: Option<PathBuf>, confidence: f32, iou: f32, threads: usize) -> anyhow::Result<()> {
    let library = find_library(onnxruntime.as_deref())?;
    let config = DetectorConfig { confidence, iou, threads, labels: None };
    let detector = Detector::load(&library, &model, config)?;
    let name = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    infer::serve::serve(&socket, detector, &name)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { socket, model, onnxruntime, confidence, iou, threads } => serve(socket, model, onnxruntime, confidence, iou, threads),
        Command::Detect { model, image, onnxruntime, confidence, iou, labels } => detect(model, image, onnxruntime, confidence, iou, labels),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infer-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
