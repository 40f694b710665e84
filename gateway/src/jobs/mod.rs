//! Offline video jobs (issue #15): a whole file through a pipeline of filters, split into
//! chunks of whole GOPs ([`input`]), processed by `infer-worker job` processes ([`dispatch`]:
//! local children, or Redis Streams consumer groups on any machine), re-assembled in order
//! into a fragmented MP4 with metrics and a preview ([`output`]).
//!
//! Each job lives in `{jobs.dir}/{id}/`: `job.json` (its status, rewritten as it runs),
//! `input.*` (an upload; removed when the job ends), `result.mp4`, `metrics.json`,
//! `preview.jpg`. A gateway that restarts marks the jobs it was running failed, with the
//! reason; finished jobs are kept `jobs.max_age`.

pub(crate) mod dispatch;
pub(crate) mod input;
pub(crate) mod output;
pub(crate) mod tracking;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};
use wire::job::{ChunkResult, FrameBoxes, Stage, Task, TaskHeader};

use self::dispatch::Dispatch;
use self::input::{Chunk, InputInfo};
use self::output::{Metrics, Mp4Writer};
use self::tracking::ChunkTracker;
use crate::config::{Config, JobsConfig};
use crate::core::Error;
use crate::core::clock::now_ms;

/// Previews kept per job for its contact sheet.
const PREVIEWS: usize = 16;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JobState {
    /// Accepted, not started.
    Queued,
    /// Chunks are being processed.
    Running,
    /// `result.mp4` and `metrics.json` are ready.
    Done,
    /// Stopped by an error (`error` says which).
    Failed,
    /// Stopped by `DELETE /api/jobs/{id}`.
    Cancelled,
}

impl JobState {
    /// Whether the job ended.
    pub(crate) fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A job as `GET /api/jobs/{id}` shows it (and `job.json` keeps it).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JobStatus {
    /// The job's id.
    pub(crate) id: String,
    /// Where it is.
    pub(crate) state: JobState,
    /// The filters, in order, each `{"name": …, parameters…}`.
    #[schema(value_type = Vec<Object>)]
    pub(crate) pipeline: Vec<Stage>,
    /// The input's file name (an upload's own name, or the path under `jobs.input_dir`).
    pub(crate) source: String,
    /// What the input holds.
    pub(crate) input: InputInfo,
    /// Pictures processed.
    pub(crate) frames_done: u64,
    /// A `track` job's first pass: pictures the model has seen (the tracker follows its
    /// boxes through the whole video before the drawing pass starts).
    #[serde(default)]
    pub(crate) frames_detected: u64,
    /// Pictures in the input.
    pub(crate) frames_total: u64,
    /// `frames_done / frames_total`, 0..=1 (a `track` job: each pass counts half).
    pub(crate) progress: f64,
    /// Pictures processed per second so far.
    pub(crate) fps: f64,
    /// Seconds left at that rate.
    pub(crate) eta_s: Option<f64>,
    /// Chunks handed to another worker because theirs died or stalled.
    pub(crate) retried_chunks: u32,
    /// Where chunks go: `local` or `redis`.
    pub(crate) workers: String,
    /// Submitted, ms since the Unix epoch.
    pub(crate) created_ms: u64,
    /// Started, ms since the Unix epoch.
    pub(crate) started_ms: Option<u64>,
    /// Ended, ms since the Unix epoch.
    pub(crate) finished_ms: Option<u64>,
    /// Why it failed.
    pub(crate) error: Option<String>,
    /// Bytes of `result.mp4` once done.
    pub(crate) result_bytes: Option<u64>,
}

/// A job in memory.
#[derive(Debug)]
struct Entry {
    status: watch::Sender<JobStatus>,
    cancel: watch::Sender<bool>,
    previews: Mutex<Vec<Vec<u8>>>,
}

/// Every job of this gateway. See the module docs.
#[derive(Debug)]
pub(crate) struct Jobs {
    dir: PathBuf,
    config: JobsConfig,
    dispatch: Arc<dyn Dispatch>,
    jobs: Mutex<HashMap<String, Arc<Entry>>>,
    /// `[detect]`'s tracker thresholds (`track` stages).
    tracker: track::TrackerConfig,
}

/// A job's directory name: 16 lowercase hex digits.
fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Jobs {
    /// Opens `jobs.dir` (created when missing), loads the jobs there (those a previous run left
    /// running become failed) and connects the dispatcher.
    pub(crate) async fn start(config: &Config) -> anyhow::Result<Arc<Jobs>> {
        let dir = config.jobs.dir.clone().unwrap_or_else(|| config.data_dir.join("jobs"));
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let dispatch = dispatch::from_config(config).await?;
        let jobs = Arc::new(Jobs {
            dir,
            config: config.jobs.clone(),
            dispatch,
            jobs: Mutex::new(HashMap::new()),
            tracker: config.detect.tracker(),
        });
        jobs.load();
        let weak = Arc::downgrade(&jobs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let Some(jobs) = weak.upgrade() else { return };
                jobs.expire();
            }
        });
        Ok(jobs)
    }

    fn load(&self) {
        let Ok(dirs) = std::fs::read_dir(&self.dir) else { return };
        let mut loaded = 0;
        for d in dirs.flatten() {
            let id = d.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) {
                continue;
            }
            let Ok(mut status) = std::fs::read(d.path().join("job.json"))
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<JobStatus>(&b).map_err(|_| ()))
            else {
                warn!(job = %id, "job directory without a readable job.json; left alone");
                continue;
            };
            if !status.state.finished() {
                status.state = JobState::Failed;
                status.error = Some("the gateway restarted while the job ran; submit it again".into());
                status.finished_ms = Some(now_ms());
                remove_work_files(&d.path());
                let _ = write_status(&d.path(), &status);
            }
            let (tx, _) = watch::channel(status);
            self.jobs.lock().insert(id, Arc::new(Entry { status: tx, cancel: watch::channel(false).0, previews: Mutex::default() }));
            loaded += 1;
        }
        if loaded > 0 {
            info!(jobs = loaded, dir = %self.dir.display(), "jobs loaded");
        }
    }

    /// Deletes jobs that ended more than `jobs.max_age` ago.
    fn expire(&self) {
        let cutoff = now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
        let old: Vec<String> = self
            .jobs
            .lock()
            .iter()
            .filter(|(_, e)| e.status.borrow().finished_ms.is_some_and(|t| t < cutoff))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.jobs.lock().remove(&id);
            let _ = std::fs::remove_dir_all(self.dir.join(&id));
        }
    }

    /// The job settings.
    pub(crate) fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// A new job id and its (created) directory, for an upload to be written into.
    pub(crate) fn reserve(&self) -> Result<(String, PathBuf), Error> {
        let id = format!("{:016x}", rand::random::<u64>());
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::JobIo(format!("cannot create {}: {e}", dir.display())))?;
        Ok((id, dir))
    }

    /// Gives up a reserved id (a refused upload): its directory and everything in it go.
    pub(crate) fn discard(&self, id: &str) {
        if valid_id(id) {
            let _ = std::fs::remove_dir_all(self.dir.join(id));
        }
    }

    /// A path under `jobs.input_dir`, resolved (symbolic links too).
    ///
    /// Errors (400): no `input_dir` configured, the file missing, or outside the directory.
    pub(crate) fn input_path(&self, path: &str) -> Result<PathBuf, Error> {
        let Some(root) = &self.config.input_dir else {
            return Err(Error::BadRequest("jobs.input_dir is not configured: upload the video instead".into()));
        };
        let root = root.canonicalize().map_err(|e| Error::BadRequest(format!("jobs.input_dir: {e}")))?;
        let asked = Path::new(path);
        let joined = if asked.is_absolute() { asked.to_path_buf() } else { root.join(asked) };
        let resolved = joined.canonicalize().map_err(|_| Error::BadRequest(format!("no file {path:?} under jobs.input_dir")))?;
        if !resolved.starts_with(&root) || !resolved.is_file() {
            return Err(Error::BadRequest(format!("{path:?} is not a file under jobs.input_dir")));
        }
        Ok(resolved)
    }

    /// Starts job `id` on `input` (in its reserved directory for an upload, `owned`, or under
    /// `jobs.input_dir`). Probes the input first.
    ///
    /// Errors (400): the input is not a readable H.264/H.265 video (the reserved directory is
    /// removed).
    pub(crate) async fn submit(
        self: &Arc<Self>,
        id: String,
        input: PathBuf,
        owned: bool,
        source: String,
        pipeline: Vec<Stage>,
    ) -> Result<JobStatus, Error> {
        let probe_path = input.clone();
        let probed = tokio::task::spawn_blocking(move || input::probe(&probe_path)).await.map_err(|e| Error::JobIo(e.to_string()))?;
        let info = match probed {
            Ok(info) => info,
            Err(e) => {
                self.discard(&id);
                return Err(Error::BadRequest(format!("{source}: {e}")));
            }
        };
        let status = JobStatus {
            id: id.clone(),
            state: JobState::Queued,
            pipeline,
            source,
            frames_total: info.frames,
            input: info,
            frames_done: 0,
            frames_detected: 0,
            progress: 0.0,
            fps: 0.0,
            eta_s: None,
            retried_chunks: 0,
            workers: self.dispatch.kind().into(),
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            error: None,
            result_bytes: None,
        };
        let dir = self.dir.join(&id);
        write_status(&dir, &status).map_err(|e| Error::JobIo(format!("cannot write the job's status: {e}")))?;
        let entry =
            Arc::new(Entry { status: watch::channel(status.clone()).0, cancel: watch::channel(false).0, previews: Mutex::default() });
        self.jobs.lock().insert(id.clone(), entry.clone());
        info!(job = %id, frames = status.frames_total, pipeline = ?status.pipeline.iter().map(Stage::name).collect::<Vec<_>>(), "job queued");
        let me = self.clone();
        tokio::spawn(async move {
            let run = Run { jobs: me.clone(), entry: entry.clone(), dir: dir.clone(), input: input.clone() };
            let outcome = run.run().await;
            let mut end = entry.status.borrow().clone();
            end.finished_ms = Some(now_ms());
            match outcome {
                Ok(Outcome::Done(bytes)) => {
                    end.state = JobState::Done;
                    end.result_bytes = Some(bytes);
                    end.progress = 1.0;
                    end.eta_s = Some(0.0);
                }
                Ok(Outcome::Cancelled) => {
                    end.state = JobState::Cancelled;
                    remove_work_files(&dir);
                    let _ = std::fs::remove_file(dir.join("result.mp4"));
                }
                Err(e) => {
                    warn!(job = %end.id, "job failed: {e}");
                    end.state = JobState::Failed;
                    end.error = Some(e);
                    remove_work_files(&dir);
                }
            }
            if owned {
                let _ = std::fs::remove_file(&input);
            }
            metrics::counter!("sightline_jobs_total", "state" => format!("{:?}", end.state).to_lowercase()).increment(1);
            info!(job = %end.id, state = ?end.state, "job ended");
            let _ = write_status(&dir, &end);
            entry.status.send_replace(end);
        });
        Ok(status)
    }

    /// A job's status.
    pub(crate) fn get(&self, id: &str) -> Result<JobStatus, Error> {
        Ok(self.entry(id)?.status.borrow().clone())
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>, Error> {
        self.jobs.lock().get(id).cloned().ok_or_else(|| Error::UnknownJob { id: id.to_owned() })
    }

    /// Every job, newest first.
    pub(crate) fn list(&self) -> Vec<JobStatus> {
        let mut all: Vec<JobStatus> = self.jobs.lock().values().map(|e| e.status.borrow().clone()).collect();
        all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// Follows a job's status (the current one first).
    pub(crate) fn subscribe(&self, id: &str) -> Result<watch::Receiver<JobStatus>, Error> {
        Ok(self.entry(id)?.status.subscribe())
    }

    /// Cancels a running or queued job (its status becomes `cancelled`, its files go) and
    /// returns true; a job that ended is deleted with its files (false).
    pub(crate) async fn delete(&self, id: &str) -> Result<bool, Error> {
        let entry = self.entry(id)?;
        if !entry.status.borrow().state.finished() {
            entry.cancel.send_replace(true);
            self.dispatch.cancel(id).await;
            let mut rx = entry.status.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.state.finished())).await;
            return Ok(true);
        }
        self.jobs.lock().remove(id);
        if valid_id(id) {
            let _ = std::fs::remove_dir_all(self.dir.join(id));
        }
        Ok(false)
    }

    /// A file of a job that is done (`result.mp4`, `metrics.json`).
    ///
    /// Errors: unknown job (404), not done yet (409).
    pub(crate) fn output(&self, id: &str, name: &str) -> Result<PathBuf, Error> {
        let status = self.get(id)?;
        if status.state != JobState::Done {
            return Err(Error::JobNotDone { id: id.to_owned(), state: format!("{:?}", status.state).to_lowercase() });
        }
        Ok(self.dir.join(id).join(name))
    }

    /// The job's contact sheet so far (JPEG), or the stored one once done.
    ///
    /// Errors: unknown job (404), no processed picture yet (409).
    pub(crate) fn preview(&self, id: &str) -> Result<Vec<u8>, Error> {
        let entry = self.entry(id)?;
        let state = entry.status.borrow().state;
        let previews = entry.previews.lock().clone();
        let sheet =
            if previews.is_empty() { std::fs::read(self.dir.join(id).join("preview.jpg")).ok() } else { output::contact_sheet(&previews) };
        sheet.ok_or_else(|| Error::JobNotDone { id: id.to_owned(), state: format!("{state:?}").to_lowercase() })
    }
}

/// A chunk's result and how many times it was handed over, or why it failed.
type Dispatched = Result<(ChunkResult, u32), String>;

/// How a run ended (errors are the other way).
enum Outcome {
    Done(u64),
    Cancelled,
}

/// What the workers do with each chunk in one pass over the input.
struct Pass {
    pipeline: Vec<Stage>,
    detect_only: bool,
}

/// One job's run.
struct Run {
    jobs: Arc<Jobs>,
    entry: Arc<Entry>,
    dir: PathBuf,
    input: PathBuf,
}

impl Run {
    fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        self.entry.status.send_modify(f);
    }

    /// Sends every chunk of the input to the workers (at most `jobs.max_in_flight` out at
    /// once) as `pass` says, and hands each result to `on_result` with the times its chunk
    /// was handed over, queued (ms) and back (ms). Returns the number of chunks, `None` when
    /// the job was cancelled.
    async fn pass(
        &self,
        pass: Pass,
        mut tracks_of: impl FnMut(u32) -> Vec<FrameBoxes>,
        mut on_result: impl FnMut(ChunkResult, u32, u64, u64) -> Result<(), String>,
    ) -> Result<Option<u32>, String> {
        let config = &self.jobs.config;
        let status = self.entry.status.borrow().clone();
        let (id, info) = (status.id.clone(), status.input.clone());
        let codec = input::wire_codec(&info);
        let (tx, mut rx) = mpsc::channel::<Chunk>(2);
        let path = self.input.clone();
        let min_frames = config.chunk_frames;
        let splitter = tokio::task::spawn_blocking(move || input::split(&path, min_frames, |c| tx.blocking_send(c).is_ok()));
        let mut queued: HashMap<u32, u64> = HashMap::new();
        let mut in_flight: JoinSet<(u32, Dispatched)> = JoinSet::new();
        let mut split_done = false;
        let mut cancel = self.entry.cancel.subscribe();
        loop {
            if split_done && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = cancel.wait_for(|c| *c) => {
                    in_flight.abort_all();
                    splitter.abort();
                    return Ok(None);
                }
                chunk = rx.recv(), if !split_done && in_flight.len() < config.max_in_flight => {
                    let Some(chunk) = chunk else {
                        split_done = true;
                        continue;
                    };
                    let queued_ms = now_ms();
                    queued.insert(chunk.index, queued_ms);
                    let header = TaskHeader {
                        job: id.clone(),
                        chunk: chunk.index,
                        codec,
                        width: info.width,
                        height: info.height,
                        pipeline: pass.pipeline.clone(),
                        units: chunk.units,
                        queued_ms,
                        detect_only: pass.detect_only,
                        tracks: tracks_of(chunk.index),
                    };
                    let bytes = Task { header, payload: chunk.payload }.encode();
                    let (dispatch, job, index) = (self.jobs.dispatch.clone(), id.clone(), chunk.index);
                    in_flight.spawn(async move { (index, dispatch.run(&job, index, bytes).await) });
                }
                joined = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (index, result) = joined.map_err(|e| format!("a chunk's task failed: {e}"))?;
                    let (result, retries) = result?;
                    if let Some(e) = &result.header.error {
                        return Err(e.clone());
                    }
                    if result.header.chunk != index {
                        return Err(format!("asked for chunk {index}, a worker answered chunk {}", result.header.chunk));
                    }
                    let queued_ms = queued.remove(&index).unwrap_or_else(now_ms);
                    on_result(result, retries, queued_ms, now_ms())?;
                }
            }
        }
        let chunks = splitter.await.map_err(|e| format!("splitting failed: {e}"))??;
        Ok(Some(chunks))
    }

    /// Progress after `detected` pictures of a `track` job's first pass (0 otherwise) and
    /// `done` of the drawing pass, `elapsed` s into the job: each pass is half of a `track`
    /// job.
    fn progress(&self, detected: u64, done: u64, tracking: bool, elapsed: f64) {
        self.update(|s| {
            s.frames_detected = detected;
            s.frames_done = done;
            let work = if tracking { (detected + done) as f64 / 2.0 } else { done as f64 };
            s.progress = (work / s.frames_total.max(1) as f64).min(1.0);
            s.fps = work / elapsed.max(0.001);
            s.eta_s = (s.fps > 0.0).then(|| (s.frames_total as f64 - work).max(0.0) / s.fps);
        });
    }

    async fn run(&self) -> Result<Outcome, String> {
        let started = Instant::now();
        let config = &self.jobs.config;
        self.update(|s| {
            s.state = JobState::Running;
            s.started_ms = Some(now_ms());
        });
        let status = self.entry.status.borrow().clone();
        let _ = write_status(&self.dir, &status);
        let (id, pipeline, info) = (status.id.clone(), status.pipeline.clone(), status.input.clone());
        let step = (90_000.0 / info.fps.max(0.001)).round() as i64;
        let chunk_estimate = (info.frames as usize).div_ceil(config.chunk_frames).max(1);
        let preview_every = chunk_estimate.div_ceil(PREVIEWS).max(1) as u32;
        let mut last_save = Instant::now();
        let mut save = |run: &Run| {
            if last_save.elapsed() > Duration::from_secs(1) {
                last_save = Instant::now();
                let _ = write_status(&run.dir, &run.entry.status.borrow());
            }
        };

        // `track`: a first pass runs the model on every picture; one tracker follows the
        // boxes through the whole video; the drawing pass gets each chunk's tracked boxes.
        let tracking = pipeline.contains(&Stage::Track);
        let mut tracks = HashMap::new();
        let mut tracking_metrics = None;
        // Workers' time on the detection pass, s (in `speedup_vs_one_worker` with the rest).
        let mut detection_worker_s = 0.0;
        if tracking {
            let mut tracker = ChunkTracker::new(self.jobs.tracker.clone());
            let (mut detected, mut worker_s) = (0u64, 0.0f64);
            let first = Pass { pipeline: vec![Stage::Detect], detect_only: true };
            let chunks = self
                .pass(
                    first,
                    |_| Vec::new(),
                    |result, _, _, _| {
                        let h = &result.header;
                        if h.detections.len() != h.frames.len() {
                            return Err(format!("chunk {}: {} pictures, boxes for {}", h.chunk, h.frames.len(), h.detections.len()));
                        }
                        detected += h.frames.len() as u64;
                        worker_s += f64::from(h.total_ms) / 1000.0;
                        tracker.push(h.chunk, result.header.detections);
                        self.progress(detected, 0, true, started.elapsed().as_secs_f64());
                        save(self);
                        Ok(())
                    },
                )
                .await?;
            let Some(chunks) = chunks else { return Ok(Outcome::Cancelled) };
            if detected != info.frames {
                return Err(format!("the detection pass saw {detected} pictures, the input has {}", info.frames));
            }
            let (tracked, ids) = tracker.finish(chunks)?;
            tracks = tracked;
            detection_worker_s = worker_s;
            tracking_metrics = Some(serde_json::json!({
                "detection_pass_s": started.elapsed().as_secs_f64(),
                "detection_worker_s": worker_s,
                "tracks": ids,
            }));
        }

        let part = self.dir.join("result.mp4.part");
        let mut writer = Mp4Writer::create(&part, step).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        let mut metrics = Metrics::default();
        let mut retried: HashMap<u32, (u32, u64, u64)> = HashMap::new();
        let mut done = 0u64;
        let detected = if tracking { info.frames } else { 0 };
        // With `track`, `detect` draws the same boxes: once is enough.
        let drawing =
            Pass { pipeline: pipeline.iter().filter(|s| !(tracking && **s == Stage::Detect)).cloned().collect(), detect_only: false };
        let chunks = self
            .pass(
                drawing,
                |index| tracks.remove(&index).unwrap_or_default(),
                |result, retries, queued_ms, back_ms| {
                    let index = result.header.chunk;
                    if index % preview_every == 0 && !result.preview().is_empty() {
                        let mut previews = self.entry.previews.lock();
                        if previews.len() < PREVIEWS {
                            previews.push(result.preview().to_vec());
                        }
                    }
                    if retries > 0 {
                        self.update(|s| s.retried_chunks += 1);
                    }
                    done += result.header.frames.len() as u64;
                    retried.insert(index, (retries, queued_ms, back_ms));
                    for written in writer.push(result)? {
                        let (retries, queued_ms, back_ms) = retried.remove(&written.header.chunk).unwrap_or((0, back_ms, back_ms));
                        metrics.add(&written, retries, queued_ms, back_ms);
                    }
                    self.progress(detected, done, tracking, started.elapsed().as_secs_f64());
                    save(self);
                    Ok(())
                },
            )
            .await?;
        let Some(chunks) = chunks else { return Ok(Outcome::Cancelled) };
        if writer.written() != chunks {
            return Err(format!("{} of {chunks} chunks came back", writer.written()));
        }
        if writer.frames != info.frames {
            return Err(format!("the output has {} frames, the input {}", writer.frames, info.frames));
        }
        writer.finish().map_err(|e| format!("cannot write the result: {e}"))?;
        let result = self.dir.join("result.mp4");
        // The input's audio, copied as encoded beside the processed video.
        let audio = if info.audio {
            let (video, input, with) = (part.clone(), self.input.clone(), self.dir.join(WITH_AUDIO));
            let copied =
                tokio::task::spawn_blocking(move || output::add_audio(&video, &input, &with)).await.unwrap_or_else(|e| Err(e.to_string()));
            match copied {
                Ok(codec) => {
                    std::fs::rename(self.dir.join(WITH_AUDIO), &part).map_err(|e| format!("cannot write the result: {e}"))?;
                    serde_json::json!({"copied": true, "codec": codec})
                }
                Err(reason) => {
                    warn!(job = %id, reason, "the input's audio is not in the result");
                    let _ = std::fs::remove_file(self.dir.join(WITH_AUDIO));
                    serde_json::json!({"copied": false, "reason": reason})
                }
            }
        } else {
            serde_json::json!({"copied": false, "reason": "the input has no audio"})
        };
        std::fs::rename(&part, &result).map_err(|e| format!("cannot write the result: {e}"))?;
        metrics.worker_s += detection_worker_s;
        metrics.finish(started.elapsed().as_secs_f64());
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "job": id,
            "pipeline": pipeline,
            "input": info,
            "workers": self.jobs.dispatch.kind(),
            "audio": audio,
            "tracking": tracking_metrics,
            "metrics": metrics,
        }))
        .map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join("metrics.json"), json).map_err(|e| format!("cannot write metrics.json: {e}"))?;
        if let Some(sheet) = output::contact_sheet(&self.entry.previews.lock()) {
            let _ = std::fs::write(self.dir.join("preview.jpg"), sheet);
        }
        self.entry.previews.lock().clear();
        let bytes = std::fs::metadata(&result).map(|m| m.len()).unwrap_or(0);
        info!(job = %id, frames = metrics.frames, wall_s = metrics.wall_s, fps = metrics.effective_fps, retried = metrics.retried_chunks, "job done");
        Ok(Outcome::Done(bytes))
    }
}

/// The result with the input's audio added, while it is written.
const WITH_AUDIO: &str = "result.audio.mp4.part";

/// Removes what only a running job needs (a partial result).
fn remove_work_files(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("result.mp4.part"));
    let _ = std::fs::remove_file(dir.join(WITH_AUDIO));
}

/// Writes `job.json` (through a temporary file: never half written).
fn write_status(dir: &Path, status: &JobStatus) -> std::io::Result<()> {
    let tmp = dir.join("job.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.join("job.json"))
}
