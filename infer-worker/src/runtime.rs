//! ONNX Runtime through `ort` (load-dynamic): finding the shared library, and a
//! [`Detector`] = one model session plus its output layout, class names and input size.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use crate::image::{I420, i420_to_input, rgb_to_input};
use crate::letterbox::Letterbox;
use crate::names;
use crate::yolo::{self, Detection, Layout};

/// Errors loading or running a model; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No ONNX Runtime library found.
    #[error("ONNX Runtime library not found: set ORT_DYLIB_PATH, detect.onnxruntime, or `pip install onnxruntime` ({0})")]
    NoLibrary(String),
    /// The library or model failed to load.
    #[error("cannot load {what}: {detail}")]
    Load {
        /// What failed.
        what: String,
        /// Why.
        detail: String,
    },
    /// The model is not a recognised YOLO detector.
    #[error("unsupported model: {0}")]
    Model(String),
    /// Inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// Finds `libonnxruntime`: `explicit`, else `ORT_DYLIB_PATH`, else the `onnxruntime` Python
/// package's `capi/` folder (asking `python3`).
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(p) = explicit {
        return p.exists().then(|| p.to_path_buf()).ok_or_else(|| RuntimeError::NoLibrary(format!("{} does not exist", p.display())));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return p
            .exists()
            .then_some(p.clone())
            .ok_or_else(|| RuntimeError::NoLibrary(format!("ORT_DYLIB_PATH={} does not exist", p.display())));
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"])
        .output()
        .map_err(|e| RuntimeError::NoLibrary(format!("python3: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::NoLibrary("python3 cannot import onnxruntime".into()));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = std::fs::read_dir(&dir)
        .map_err(|e| RuntimeError::NoLibrary(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.")));
    lib.ok_or_else(|| RuntimeError::NoLibrary(format!("no libonnxruntime.so.* in {}", dir.display())))
}

/// Detection settings.
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// Minimum score kept, 0..=1.
    pub confidence: f32,
    /// NMS IoU threshold (class-aware).
    pub iou: f32,
    /// Intra-op threads for ONNX Runtime.
    pub threads: usize,
    /// Class names overriding the model's metadata.
    pub labels: Option<Vec<String>>,
    /// Where the model runs.
    pub provider: Provider,
    /// ONNX Runtime's graph optimization level.
    pub optimization: Optimization,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig { confidence: 0.5, iou: 0.45, threads: 1, labels: None, provider: Provider::Cpu, optimization: Optimization::Auto }
    }
}

/// ONNX Runtime's graph optimization level (ONNX Runtime docs, "Graph Optimizations").
///
/// `All` adds the layout transformation to NCHWc blocks, which speeds up models made of wide
/// convolutions and slows down models of element-wise work on full-size planes: the test
/// camera's shape model runs in 18.4 ms with it and 10.8 ms without (one thread, this
/// machine's Xeon, `infer-worker bench`). `Auto` therefore times both at load on the CPU provider and keeps the faster
/// (for a model whose first run takes at most 150 ms: a larger one keeps `All`); other
/// providers get `All`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Optimization {
    /// Time `all` and `extended` at load (CPU) and keep the faster.
    Auto,
    /// Every optimization, layout transformations included (ONNX Runtime's default).
    All,
    /// Node fusions, no layout transformation.
    Extended,
    /// Constant folding and redundant node removal only.
    Basic,
    /// None.
    Disable,
}

impl Optimization {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Optimization::Auto => "auto",
            Optimization::All => "all",
            Optimization::Extended => "extended",
            Optimization::Basic => "basic",
            Optimization::Disable => "disable",
        }
    }

    fn level(self) -> ort::session::builder::GraphOptimizationLevel {
        use ort::session::builder::GraphOptimizationLevel as L;
        match self {
            Optimization::Auto | Optimization::All => L::All,
            Optimization::Extended => L::Level2,
            Optimization::Basic => L::Level1,
            Optimization::Disable => L::Disable,
        }
    }
}

/// ONNX Runtime execution provider. Anything but `Cpu` must be compiled into the loaded
/// library (the PyPI `onnxruntime` wheel has only CPU; `onnxruntime-gpu` has CUDA and
/// TensorRT); asking for one it lacks is a load error, not a silent CPU fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// The default CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    Tensorrt,
    /// Intel OpenVINO.
    Openvino,
}

impl Provider {
    /// The name used in config and the worker's `Hello`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::Tensorrt => "tensorrt",
            Provider::Openvino => "openvino",
        }
    }

    /// Whether the loaded ONNX Runtime library has this provider (call after a model
    /// loaded: the library is loaded with it).
    pub fn available(self) -> bool {
        use ort::ep::ExecutionProvider;
        match self {
            Provider::Cpu => true,
            Provider::Cuda => ort::ep::CUDA::is_available().unwrap_or(false),
            Provider::Tensorrt => ort::ep::TensorRT::is_available().unwrap_or(false),
            Provider::Openvino => ort::ep::OpenVINO::is_available().unwrap_or(false),
        }
    }

    /// The provider's registration, or `None` for the CPU default.
    fn dispatch(self) -> Result<Option<ort::ep::ExecutionProviderDispatch>, RuntimeError> {
        use ort::ep::ExecutionProvider;
        let (available, dispatch) = match self {
            Provider::Cpu => return Ok(None),
            Provider::Cuda => (ort::ep::CUDA::is_available(), ort::ep::CUDA::default().build()),
            Provider::Tensorrt => (ort::ep::TensorRT::is_available(), ort::ep::TensorRT::default().build()),
            Provider::Openvino => (ort::ep::OpenVINO::is_available(), ort::ep::OpenVINO::default().build()),
        };
        match available {
            Ok(true) => Ok(Some(dispatch.error_on_failure())),
            Ok(false) => Err(RuntimeError::Load {
                what: format!("execution provider {}", self.name()),
                detail: "not compiled into this ONNX Runtime library (for cuda/tensorrt install onnxruntime-gpu)".into(),
            }),
            Err(e) => Err(RuntimeError::Load { what: format!("execution provider {}", self.name()), detail: e.to_string() }),
        }
    }
}

/// Detections with the time each step took.
#[derive(Clone, Debug)]
pub struct Timed {
    /// Boxes in source pixels.
    pub detections: Vec<Detection>,
    /// Colour conversion and letterbox, ms.
    pub pre_ms: f32,
    /// The model run, ms.
    pub infer_ms: f32,
    /// Decoding and NMS, ms.
    pub post_ms: f32,
}

/// A loaded model. Not thread-safe: one per worker.
pub struct Detector {
    session: Session,
    /// The environment must outlive the session.
    _env: ort::environment::Environment,
    layout: Layout,
    input_name: String,
    /// Model input side, px.
    pub input_size: u32,
    /// Class names, index = class id.
    pub names: Vec<String>,
    config: DetectorConfig,
    optimization: OptimizationChoice,
}

/// Timed runs per level when [`Optimization::Auto`] chooses (after one warm-up run each).
const PROBE_RUNS: usize = 2;
/// [`Optimization::Auto`] compares the levels only for a model whose warm-up run took at most
/// this long, ms: timing both costs ~6 runs and a second session at every worker start
/// (~0.1 s for the test model), and a worker replaced after a crash should detect again
/// within 2 s. A slower model (a large YOLO on the CPU, where the NCHWc layout usually
/// helps) keeps `all`.
const PROBE_MAX_RUN_MS: f32 = 150.0;

/// The graph optimization level a [`Detector`] runs with.
#[derive(Clone, Copy, Debug)]
pub struct OptimizationChoice {
    /// The level in use.
    pub level: Optimization,
    /// Its fastest probe run at load, ms (the warm-up run's time when nothing was compared).
    pub run_ms: f32,
    /// The level it was compared with and that level's fastest run, ms (`auto` on the CPU).
    pub other: Option<(Optimization, f32)>,
}

/// Runs the model once on `probe`; returns its output shape and how long the run took, ms.
fn run_once(session: &mut Session, input_name: &str, size: u32, probe: &[f32]) -> Result<(Vec<i64>, f32), RuntimeError> {
    let side = size as usize;
    let tensor = TensorRef::from_array_view(([1usize, 3, side, side], probe)).map_err(|e| RuntimeError::Run(e.to_string()))?;
    let started = std::time::Instant::now();
    let outputs = session.run(ort::inputs![input_name => tensor]).map_err(|e| RuntimeError::Run(e.to_string()))?;
    let took = started.elapsed().as_secs_f32() * 1000.0;
    let (shape, _) = outputs[0].try_extract_tensor::<f32>().map_err(|e| RuntimeError::Model(e.to_string()))?;
    Ok((shape.to_vec(), took))
}

/// The fastest of [`PROBE_RUNS`] runs on `probe` (after the caller's warm-up run), ms.
fn fastest_run(session: &mut Session, input_name: &str, size: u32, probe: &[f32]) -> Result<f32, RuntimeError> {
    let mut best = f32::INFINITY;
    for _ in 0..PROBE_RUNS {
        best = best.min(run_once(session, input_name, size, probe)?.1);
    }
    Ok(best)
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("layout", &self.layout).field("input_size", &self.input_size).field("names", &self.names).finish()
    }
}

fn load_err(what: impl Into<String>) -> impl FnOnce(ort::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Load { what, detail: e.to_string() }
}

/// The process's ONNX Runtime environment: `ort` allows one per process, ever, so it is made
/// once (loading `library`) and shared by every [`Detector`]; asking for another library later
/// is an error.
fn environment(library: &Path) -> Result<ort::environment::Environment, RuntimeError> {
    static ENV: std::sync::Mutex<Option<(PathBuf, ort::environment::Environment)>> = std::sync::Mutex::new(None);
    let mut held = ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((loaded, env)) = &*held {
        if loaded != library {
            return Err(RuntimeError::Load {
                what: library.display().to_string(),
                detail: format!("this process already uses the ONNX Runtime library {}", loaded.display()),
            });
        }
        return Ok(env.clone());
    }
    let env = ort::init_from(library)
        .map_err(|e| RuntimeError::Load { what: library.display().to_string(), detail: e.to_string() })?
        .with_name("sightline-infer")
        .build()
        .map_err(load_err("ONNX Runtime environment"))?;
    *held = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

impl Detector {
    /// Loads ONNX Runtime from `library` and the model; recognises its layout from the
    /// output shape (a dynamic anchor count is taken from a probe run).
    pub fn load(library: &Path, model: &Path, config: DetectorConfig) -> Result<Detector, RuntimeError> {
        let env = environment(library)?;
        let open = |level: Optimization| -> Result<Session, RuntimeError> {
            let mut builder = Session::builder(&env)
                .map_err(load_err("session builder"))?
                .with_intra_threads(config.threads)
                .map_err(|e| RuntimeError::Load { what: "session options".into(), detail: e.to_string() })?
                .with_optimization_level(level.level())
                .map_err(|e| RuntimeError::Load { what: "graph optimization level".into(), detail: e.to_string() })?;
            if let Some(ep) = config.provider.dispatch()? {
                builder = builder.with_execution_providers([ep]).map_err(|e| RuntimeError::Load {
                    what: format!("execution provider {}", config.provider.name()),
                    detail: e.to_string(),
                })?;
            }
            builder.commit_from_file(model).map_err(load_err(model.display().to_string()))
        };
        let first = match config.optimization {
            Optimization::Auto => Optimization::All,
            chosen => chosen,
        };
        let mut session = open(first)?;
        let input = session.inputs().first().ok_or_else(|| RuntimeError::Model("no input".into()))?;
        let input_name = input.name().to_owned();
        let input_size = input.dtype().tensor_shape().and_then(|s| s.get(2).copied()).filter(|&s| s > 0).map_or(640, |s| s as u32);
        let names = match &config.labels {
            Some(l) => l.clone(),
            None => session.metadata().ok().and_then(|m| m.custom("names")).and_then(|n| names::parse_ultralytics(&n)).unwrap_or_default(),
        };
        let probe = vec![0.5f32; (3 * input_size * input_size) as usize];
        // The first run warms the session up (and gives the output shape).
        let (shape, warm_ms) = run_once(&mut session, &input_name, input_size, &probe)?;
        let compare = config.optimization == Optimization::Auto && config.provider == Provider::Cpu && warm_ms <= PROBE_MAX_RUN_MS;
        let first_ms = if compare { fastest_run(&mut session, &input_name, input_size, &probe)? } else { warm_ms };
        let mut optimization = OptimizationChoice { level: first, run_ms: first_ms, other: None };
        if compare {
            let mut other = open(Optimization::Extended)?;
            run_once(&mut other, &input_name, input_size, &probe)?;
            let other_ms = fastest_run(&mut other, &input_name, input_size, &probe)?;
            if other_ms < first_ms {
                session = other;
                optimization = OptimizationChoice { level: Optimization::Extended, run_ms: other_ms, other: Some((first, first_ms)) };
            } else {
                optimization.other = Some((Optimization::Extended, other_ms));
            }
        }
        let layout = yolo::layout(&shape, (!names.is_empty()).then_some(names.len())).map_err(|e| RuntimeError::Model(e.to_string()))?;
        Ok(Detector { session, _env: env, layout, input_name, input_size, names, config, optimization })
    }

    /// The graph optimization level in use, and what the load measured.
    pub fn optimization(&self) -> OptimizationChoice {
        self.optimization
    }

    /// The recognised output layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Runs the model on a letterboxed input tensor; returns the boxes in input pixels after
    /// NMS, and how long the model run itself took.
    pub fn infer(&mut self, input: &[f32]) -> Result<(Vec<Detection>, std::time::Duration), RuntimeError> {
        let side = self.input_size as usize;
        let tensor = TensorRef::from_array_view(([1usize, 3, side, side], input)).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let started = std::time::Instant::now();
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let run = started.elapsed();
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| RuntimeError::Run(e.to_string()))?;
        let dets = yolo::decode(self.layout, shape, data, self.config.confidence);
        Ok((if self.layout == Layout::EndToEnd { dets } else { yolo::nms(dets, self.config.iou) }, run))
    }

    /// Detects on packed RGB; boxes in source pixels.
    pub fn detect_rgb(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<Detection>, RuntimeError> {
        Ok(self.detect_rgb_timed(rgb, width, height, std::time::Instant::now())?.detections)
    }

    /// Detects on an I420 picture; boxes in source pixels.
    pub fn detect_i420(&mut self, picture: &I420<'_>) -> Result<Vec<Detection>, RuntimeError> {
        Ok(self.detect_i420_timed(picture)?.detections)
    }

    /// [`Detector::detect_i420`] with the time of each step.
    pub fn detect_i420_timed(&mut self, picture: &I420<'_>) -> Result<Timed, RuntimeError> {
        let started = std::time::Instant::now();
        let lb = Letterbox::new(picture.width, picture.height, self.input_size);
        let input = i420_to_input(picture, &lb).map_err(|e| RuntimeError::Run(e.to_string()))?;
        self.run_timed(&input, &lb, started)
    }

    /// Letterbox, run, map back; `started` is when pre-processing began.
    fn detect_rgb_timed(&mut self, rgb: &[u8], width: u32, height: u32, started: std::time::Instant) -> Result<Timed, RuntimeError> {
        let lb = Letterbox::new(width, height, self.input_size);
        let input = rgb_to_input(rgb, width, height, &lb).map_err(|e| RuntimeError::Run(e.to_string()))?;
        self.run_timed(&input, &lb, started)
    }

    /// Runs the model on a letterboxed input and maps the boxes back to source pixels.
    fn run_timed(&mut self, input: &[f32], lb: &Letterbox, started: std::time::Instant) -> Result<Timed, RuntimeError> {
        let pre = started.elapsed();
        let (dets, run) = self.infer(input)?;
        let detections = dets.iter().map(|d| lb.to_source(d)).collect();
        let ms = |d: std::time::Duration| d.as_secs_f32() * 1000.0;
        Ok(Timed { detections, pre_ms: ms(pre), infer_ms: ms(run), post_ms: ms(started.elapsed().saturating_sub(pre + run)) })
    }
}
