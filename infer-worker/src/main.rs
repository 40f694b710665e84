//! `infer-worker`: runs a YOLO model through ONNX Runtime.
//!
//! `infer-worker detect --model M.onnx --image frame.jpg` prints the detections of one JPEG
//! as JSON (boxes in source pixels); `infer-worker serve --socket S --model M.onnx` connects
//! to the gateway and answers the frames it sends (the `sightline-wire` crate's protocol),
//! and `infer-worker serve --connect tcp://HOST:PORT --token T --model M.onnx` does the same
//! from another machine;
//! `infer-worker bench --model M.onnx` measures bare throughput (the baseline the gateway's
//! end-to-end detections/s are compared with, `scripts/bench-detect.sh`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infer::runtime::{Detector, DetectorConfig, Optimization, Provider, find_library};

/// Sightline detection worker (YOLO on ONNX Runtime).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The model and how to run it (both subcommands).
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// The ONNX model (YOLOv8/11, YOLOv5 or end-to-end export).
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
    /// A labels file (one class name per line) instead of the model's names.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// ONNX Runtime execution provider (must be in the loaded library).
    #[arg(long, value_enum, default_value_t = Provider::Cpu)]
    provider: Provider,
    /// ONNX Runtime graph optimization level; `auto` times `all` and `extended` at load (CPU).
    #[arg(long, value_enum, default_value_t = Optimization::Auto)]
    graph_optimization: Optimization,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<Detector> {
        let library = find_library(self.onnxruntime.as_deref())?;
        let labels = self.labels.as_ref().map(|p| std::fs::read_to_string(p).map(|t| infer::names::parse_labels(&t))).transpose()?;
        let config = DetectorConfig {
            confidence: self.confidence,
            iou: self.iou,
            threads: self.threads,
            labels,
            provider: self.provider,
            optimization: self.graph_optimization,
        };
        let detector = Detector::load(&library, &self.model, config)?;
        let chosen = detector.optimization();
        let other = chosen.other.map(|(level, ms)| format!(", {} {ms:.1} ms", level.name())).unwrap_or_default();
        eprintln!(
            "infer-worker: info: model {}: graph optimization {} ({:.1} ms a run{other})",
            self.model.display(),
            chosen.level.name(),
            chosen.run_ms
        );
        Ok(detector)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the gateway and detect on the pictures it sends: its Unix socket
    /// (`--socket`, same machine, pictures in shared memory) or its remote workers' port
    /// (`--connect tcp://HOST:PORT` or `tls://HOST:PORT` with `--token`, pictures inline;
    /// reconnects until refused).
    Serve {
        /// The gateway's Unix socket.
        #[arg(long, required_unless_present = "connect", conflicts_with = "connect")]
        socket: Option<PathBuf>,
        /// The gateway's `detect.remote.listen` address: `tcp://HOST:PORT` or `tls://HOST:PORT`.
        #[arg(long)]
        connect: Option<String>,
        /// The gateway's `detect.remote.token` (with `--connect`).
        #[arg(long, env = "SIGHTLINE_WORKER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM certificates to trust for `tls://` (default: the Mozilla roots).
        #[arg(long, requires = "connect")]
        tls_ca: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Bare throughput: run the whole per-frame path (I420 -> letterbox -> model -> NMS) on
    /// one synthetic picture in a loop, as a worker would, and print JSON (frames/s, ms).
    Bench {
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Picture width, px.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height, px.
        #[arg(long, default_value_t = 720)]
        height: u32,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Process offline job chunks (decode, filters, encode): from the gateway on stdin/stdout
    /// (`--stdio`, how the gateway runs local workers) or from Redis Streams (`--redis URL`,
    /// workers on any machine).
    Job(JobArgs),
    /// Detect objects in one JPEG and print JSON.
    Detect {
        /// A JPEG picture.
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// `infer-worker job` options.
#[derive(Debug, clap::Args)]
struct JobArgs {
    /// Take chunks from stdin and answer on stdout (a local gateway).
    #[arg(long, conflicts_with = "redis")]
    stdio: bool,
    /// Take chunks from this Redis (Streams consumer group `workers`).
    #[arg(long, required_unless_present = "stdio")]
    redis: Option<String>,
    /// This worker's name in metrics and in the consumer group (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// A task whose worker stopped refreshing its claim this long is taken over, ms.
    #[arg(long, default_value_t = 15_000)]
    claim_idle_ms: u64,
    /// x264 threads per chunk.
    #[arg(long, default_value_t = 1)]
    encode_threads: usize,
    /// Exit when the parent process goes (how the gateway runs its own Redis workers).
    #[arg(long)]
    exit_with_parent: bool,
    /// x264 preset (ultrafast … veryslow).
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// The ONNX model for `detect` stages (without one, pipelines with `detect` fail).
    #[arg(long)]
    model: Option<PathBuf>,
    /// libonnxruntime.so path (default: ORT_DYLIB_PATH, else the onnxruntime Python package).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Minimum score.
    #[arg(long, default_value_t = 0.5)]
    confidence: f32,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn job(args: JobArgs) -> anyhow::Result<()> {
    let detector = match &args.model {
        Some(model) => Some(
            ModelArgs {
                model: model.clone(),
                onnxruntime: args.onnxruntime.clone(),
                confidence: args.confidence,
                iou: 0.45,
                threads: args.threads,
                labels: None,
                provider: Provider::Cpu,
                graph_optimization: Optimization::Auto,
            }
            .load()?,
        ),
        None => None,
    };
    let model = args.model.as_ref().and_then(|m| m.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let processor = infer::job::Processor::new(name, detector, args.encode_threads, &args.preset);
    match args.redis {
        Some(url) if !args.stdio => {
            let options = infer::jobq::RedisOptions {
                url,
                claim_idle: std::time::Duration::from_millis(args.claim_idle_ms),
                model,
                exit_with_parent: args.exit_with_parent,
            };
            infer::jobq::redis(processor, &options)
        }
        _ => infer::jobq::stdio(processor),
    }
}

fn detect(model: &ModelArgs, image: PathBuf) -> anyhow::Result<()> {
    let mut detector = model.load()?;
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

fn bench(model: &ModelArgs, seconds: f64, width: u32, height: u32) -> anyhow::Result<()> {
    let mut detector = model.load()?;
    let (cw, ch) = (width.div_ceil(2) as usize, height.div_ceil(2) as usize);
    // Mid-grey with a diagonal gradient, limited range: content does not change the work.
    let y: Vec<u8> = (0..(width * height) as usize).map(|i| 16 + (i % 200) as u8).collect();
    let (u, v) = (vec![128u8; cw * ch], vec![128u8; cw * ch]);
    let picture = infer::image::I420 { width, height, y: &y, u: &u, v: &v, strides: (width, cw as u32), full_range: false };
    detector.detect_i420(&picture)?; // warm-up
    let started = std::time::Instant::now();
    let (mut frames, mut pre, mut run, mut post) = (0u64, 0f64, 0f64, 0f64);
    while started.elapsed().as_secs_f64() < seconds {
        let t = detector.detect_i420_timed(&picture)?;
        frames += 1;
        pre += f64::from(t.pre_ms);
        run += f64::from(t.infer_ms);
        post += f64::from(t.post_ms);
    }
    let wall = started.elapsed().as_secs_f64();
    let n = frames.max(1) as f64;
    let providers: Vec<&str> = <Provider as clap::ValueEnum>::value_variants().iter().filter(|p| p.available()).map(|p| p.name()).collect();
    println!(
        "{}",
        serde_json::json!({
            "frames": frames, "frames_per_s": frames as f64 / wall, "threads": model.threads,
            "pre_ms": pre / n, "infer_ms": run / n, "post_ms": post / n, "width": width, "height": height,
            "provider": model.provider.name(), "providers": providers,
        })
    );
    Ok(())
}

fn serve(socket: Option<PathBuf>, remote: Option<infer::serve::Remote>, model: &ModelArgs) -> anyhow::Result<()> {
    let detector = model.load()?;
    let name = model.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let announce = infer::serve::Announce { model: name, provider: model.provider.name().to_owned() };
    match (socket, remote) {
        (Some(socket), _) => infer::serve::serve(&socket, detector, &announce)?,
        (None, Some(remote)) => infer::serve::serve_remote(&remote, detector, &announce)?,
        (None, None) => anyhow::bail!("--socket or --connect is required"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { socket, connect, token, tls_ca, model } => match (connect, token) {
            (Some(url), None) => Err(anyhow::anyhow!("--connect {url} needs --token (or SIGHTLINE_WORKER_TOKEN)")),
            (connect, token) => {
                let remote = connect.map(|url| infer::serve::Remote { url, token: token.unwrap_or_default(), ca: tls_ca });
                serve(socket, remote, &model)
            }
        },
        Command::Detect { image, model } => detect(&model, image),
        Command::Job(args) => job(args),
        Command::Bench { seconds, width, height, model } => bench(&model, seconds, width, height),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infer-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
