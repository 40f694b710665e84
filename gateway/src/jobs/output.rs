//! A job's outputs: the processed video (fragmented MP4 through [`media::fmp4`], one fragment
//! per chunk, written in order as chunks come back in any order), the metrics JSON and the
//! preview contact sheet.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use media::VideoCodec;
use media::fmp4::{self, Sample};
use serde::Serialize;
use wire::job::{ChunkResult, unit_slices};

/// Writes chunks to the MP4 in order; holds those that arrive early.
#[derive(Debug)]
pub(crate) struct Mp4Writer {
    file: std::io::BufWriter<std::fs::File>,
    /// Ticks the last picture lasts (the input's frame step).
    step: u32,
    next: u32,
    waiting: BTreeMap<u32, ChunkResult>,
    init_written: bool,
    /// Pictures written.
    pub(crate) frames: u64,
}

impl Mp4Writer {
    /// A writer to `path` (created).
    pub(crate) fn create(path: &Path, step: i64) -> std::io::Result<Mp4Writer> {
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        Ok(Mp4Writer {
            file,
            step: step.clamp(1, i64::from(u32::MAX)) as u32,
            next: 0,
            waiting: BTreeMap::new(),
            init_written: false,
            frames: 0,
        })
    }

    /// Takes a chunk (any order); writes every chunk now in order. Returns the chunks written.
    pub(crate) fn push(&mut self, result: ChunkResult) -> Result<Vec<ChunkResult>, String> {
        if result.header.chunk >= self.next {
            self.waiting.insert(result.header.chunk, result);
        }
        let mut written = Vec::new();
        while let Some(r) = self.waiting.remove(&self.next) {
            self.write(&r)?;
            self.next += 1;
            written.push(r);
        }
        Ok(written)
    }

    fn write(&mut self, r: &ChunkResult) -> Result<(), String> {
        let h = &r.header;
        let mut samples = Vec::with_capacity(h.units.len());
        for (unit, bytes) in unit_slices(&h.units, r.units()) {
            let (sets, data) = fmp4::sample_data(VideoCodec::H264, bytes);
            if !self.init_written {
                let init = fmp4::init_segment(VideoCodec::H264, &sets, h.width, h.height).map_err(|e| format!("chunk {}: {e}", h.chunk))?;
                self.file.write_all(&init).map_err(|e| e.to_string())?;
                self.init_written = true;
            }
            samples.push(Sample { pts: unit.pts, keyframe: unit.key, data });
        }
        if samples.is_empty() {
            return Ok(());
        }
        let fragment = fmp4::fragment(h.chunk + 1, &samples, self.step)?;
        self.file.write_all(&fragment).map_err(|e| e.to_string())?;
        self.frames += samples.len() as u64;
        Ok(())
    }

    /// Chunks written so far.
    pub(crate) fn written(&self) -> u32 {
        self.next
    }

    /// Flushes and syncs the file.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }
}

/// One picture in the metrics.
#[derive(Debug, Serialize)]
pub(crate) struct FrameMetric {
    /// Output index (presentation order).
    pub(crate) index: u64,
    /// Presentation time, ms from the start.
    pub(crate) pts_ms: f64,
    /// The chunk that carried it.
    pub(crate) chunk: u32,
    /// The worker that processed it.
    pub(crate) worker: String,
    /// Filters + encoding, ms.
    pub(crate) ms: f32,
    /// Times its chunk was handed to another worker.
    pub(crate) retries: u32,
    /// Its chunk's wait in the queue, ms.
    pub(crate) queue_wait_ms: u64,
}

/// Per-worker totals.
#[derive(Debug, Default, Serialize)]
pub(crate) struct WorkerMetric {
    /// Chunks done.
    pub(crate) chunks: u32,
    /// Pictures done.
    pub(crate) frames: u64,
    /// Time spent on them, ms.
    pub(crate) busy_ms: f64,
}

/// What a job measured, built up chunk by chunk.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Metrics {
    /// Pictures processed.
    pub(crate) frames: u64,
    /// Chunks.
    pub(crate) chunks: u32,
    /// From the job's start to its last chunk written, s.
    pub(crate) wall_s: f64,
    /// `frames / wall_s`.
    pub(crate) effective_fps: f64,
    /// Workers' time on the chunks (decode, filters, encode), s: the wall time one worker
    /// would need.
    pub(crate) worker_s: f64,
    /// `worker_s / wall_s`: how many workers' worth of work ran at once.
    pub(crate) speedup_vs_one_worker: f64,
    /// Chunks a worker took over from one that died or stalled.
    pub(crate) retried_chunks: u32,
    /// Pictures in those chunks.
    pub(crate) retried_frames: u64,
    /// `retried_frames / frames`, %.
    pub(crate) retried_frames_pct: f64,
    /// Decoding, filters and encoding, ms over all chunks.
    pub(crate) decode_ms: f64,
    /// Filters, ms.
    pub(crate) filter_ms: f64,
    /// Encoding, ms.
    pub(crate) encode_ms: f64,
    /// Median wait of a chunk between being queued and a worker taking it, ms.
    pub(crate) queue_wait_p50_ms: u64,
    /// Longest such wait, ms.
    pub(crate) queue_wait_max_ms: u64,
    /// Median per-chunk distribution overhead, ms: from being queued to its result back at
    /// the gateway, less the worker's time on it (waiting for a free worker, transfer both
    /// ways, Redis).
    pub(crate) overhead_p50_ms: f64,
    /// Median time from a worker's end of a chunk to its result at the gateway, ms: the
    /// result's way back (message, Redis `RPUSH` and `BLPOP`, or the pipe), without any wait
    /// (worker and gateway clocks; across machines their skew adds in).
    pub(crate) return_p50_ms: f64,
    /// Per worker.
    pub(crate) workers: BTreeMap<String, WorkerMetric>,
    /// Per picture, in output order.
    pub(crate) per_frame: Vec<FrameMetric>,
    #[serde(skip)]
    waits: Vec<u64>,
    #[serde(skip)]
    overheads: Vec<f64>,
    #[serde(skip)]
    returns: Vec<f64>,
}

impl Metrics {
    /// Counts a chunk written: `retries` times handed over, queued at `queued_ms`, its result
    /// back at `back_ms`.
    pub(crate) fn add(&mut self, r: &ChunkResult, retries: u32, queued_ms: u64, back_ms: u64) {
        let h = &r.header;
        let wait = h.started_ms.saturating_sub(queued_ms);
        self.waits.push(wait);
        self.overheads.push((back_ms.saturating_sub(queued_ms) as f64 - f64::from(h.total_ms)).max(0.0));
        self.returns.push((back_ms as f64 - h.started_ms as f64 - f64::from(h.total_ms)).max(0.0));
        self.chunks += 1;
        self.worker_s += f64::from(h.total_ms) / 1000.0;
        self.decode_ms += f64::from(h.decode_ms);
        self.filter_ms += f64::from(h.filter_ms);
        self.encode_ms += f64::from(h.encode_ms);
        if retries > 0 {
            self.retried_chunks += 1;
            self.retried_frames += h.frames.len() as u64;
        }
        let w = self.workers.entry(h.worker.clone()).or_default();
        w.chunks += 1;
        w.frames += h.frames.len() as u64;
        w.busy_ms += f64::from(h.total_ms);
        for f in &h.frames {
            self.per_frame.push(FrameMetric {
                index: self.frames,
                pts_ms: f.pts as f64 / 90.0,
                chunk: h.chunk,
                worker: h.worker.clone(),
                ms: f.ms,
                retries,
                queue_wait_ms: wait,
            });
            self.frames += 1;
        }
    }

    /// Totals, once the job ran `wall_s`.
    pub(crate) fn finish(&mut self, wall_s: f64) {
        self.wall_s = wall_s;
        self.effective_fps = if wall_s > 0.0 { self.frames as f64 / wall_s } else { 0.0 };
        self.speedup_vs_one_worker = if wall_s > 0.0 { self.worker_s / wall_s } else { 0.0 };
        self.retried_frames_pct = if self.frames > 0 { 100.0 * self.retried_frames as f64 / self.frames as f64 } else { 0.0 };
        self.waits.sort_unstable();
        self.queue_wait_p50_ms = self.waits.get(self.waits.len() / 2).copied().unwrap_or(0);
        self.queue_wait_max_ms = self.waits.last().copied().unwrap_or(0);
        self.overheads.sort_by(f64::total_cmp);
        self.overhead_p50_ms = self.overheads.get(self.overheads.len() / 2).copied().unwrap_or(0.0);
        self.returns.sort_by(f64::total_cmp);
        self.return_p50_ms = self.returns.get(self.returns.len() / 2).copied().unwrap_or(0.0);
    }
}

/// A contact sheet: the previews (JPEG, one per sampled chunk, in order) tiled four across,
/// as one JPEG. `None` without previews.
pub(crate) fn contact_sheet(previews: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut tiles = Vec::new();
    for jpeg in previews {
        if let Ok(img) = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB) {
            tiles.push(img);
        }
    }
    let first = tiles.first()?;
    let (tw, th) = (first.width, first.height);
    let cols = tiles.len().min(4);
    let rows = tiles.len().div_ceil(4);
    let (w, h) = (tw * cols, th * rows);
    let mut sheet = vec![0u8; w * h * 3];
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = ((i % 4) * tw, (i / 4) * th);
        for y in 0..th.min(tile.height) {
            let src = &tile.pixels[y * tile.pitch..y * tile.pitch + tw.min(tile.width) * 3];
            let at = ((y0 + y) * w + x0) * 3;
            sheet[at..at + src.len()].copy_from_slice(src);
        }
    }
    let img = turbojpeg::Image { pixels: sheet.as_slice(), width: w, pitch: w * 3, height: h, format: turbojpeg::PixelFormat::RGB };
    turbojpeg::compress(img, 80, turbojpeg::Subsamp::Sub2x2).ok().map(|b| b.to_vec())
}
