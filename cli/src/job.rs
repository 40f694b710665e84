//! `sightline job …`: the gateway's offline video jobs from a terminal (issue #15). `submit`
//! uploads a video with a pipeline, shows a progress bar until the job ends, then downloads
//! the result MP4 and its metrics; `status`, `list` and `cancel` do what they say.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where the gateway is and how to authenticate.
#[derive(Debug, clap::Args)]
pub(crate) struct Server {
    /// The gateway's base URL (IPv6 in brackets: `http://[::1]:8080`).
    #[arg(long, env = "SIGHTLINE_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// A control token (`auth.control_tokens`), when the gateway requires one.
    #[arg(long, env = "SIGHTLINE_TOKEN", global = true)]
    token: Option<String>,
}

/// `sightline job` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Upload VIDEO, follow the job, download the result and its metrics.
    Submit {
        /// The video (H.264/H.265 in MP4, MKV, MOV or MPEG-TS).
        video: PathBuf,
        /// Filters in order, comma-separated: blur, grayscale, edges, motion, detect (or a
        /// JSON array with parameters: `[{"name":"blur","sigma":8}]`).
        #[arg(long)]
        pipeline: String,
        /// Where to write the result (default: VIDEO's name with `.processed.mp4`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the metrics JSON (default: the result's name with `.metrics.json`).
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Print the job's id and return at once, without waiting.
        #[arg(long)]
        detach: bool,
    },
    /// Print a job's status as JSON.
    Status {
        /// The job's id.
        id: String,
    },
    /// List the jobs, newest first.
    List,
    /// Cancel a queued or running job, or delete an ended one with its files.
    Cancel {
        /// The job's id.
        id: String,
    },
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(server: &Server) -> anyhow::Result<Client> {
        // No overall timeout: uploads and downloads of large videos take their time.
        let http = reqwest::blocking::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(None).build()?;
        Ok(Client { http, base: server.server.trim_end_matches('/').to_owned(), token: server.token.clone() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A JSON answer, or the gateway's error (`{"error", "detail"}`) as this error.
    fn json(&self, req: reqwest::blocking::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = req.send().with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let body: Value = if status == reqwest::StatusCode::NO_CONTENT { Value::Null } else { resp.json().unwrap_or(Value::Null) };
        if !status.is_success() {
            let detail = body["detail"].as_str().map_or_else(|| body.to_string(), str::to_owned);
            bail!("{} {}: {detail}", status.as_u16(), body["error"].as_str().unwrap_or("error"));
        }
        Ok((status.as_u16(), body))
    }

    fn download(&self, path: &str, to: &Path) -> anyhow::Result<u64> {
        let mut resp = self.request(reqwest::Method::GET, path).send().with_context(|| format!("cannot reach {}", self.base))?;
        if !resp.status().is_success() {
            bail!("GET {path}: {}", resp.status());
        }
        let tmp = to.with_extension("part");
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let n = resp.copy_to(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, to)?;
        Ok(n)
    }
}

/// Runs one `sightline job` command.
pub(crate) fn run(server: &Server, command: JobCommand) -> anyhow::Result<()> {
    let client = Client::new(server)?;
    match command {
        JobCommand::Submit { video, pipeline, out, metrics, detach } => submit(&client, &video, &pipeline, out, metrics, detach),
        JobCommand::Status { id } => {
            let (_, s) = client.json(client.request(reqwest::Method::GET, &format!("/api/jobs/{id}")))?;
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(())
        }
        JobCommand::List => {
            let (_, list) = client.json(client.request(reqwest::Method::GET, "/api/jobs"))?;
            for j in list.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<9}  {:>5.1} %  {:<24}  {}",
                    j["id"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    j["pipeline"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect::<Vec<_>>().join(","),
                    j["source"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        JobCommand::Cancel { id } => {
            let (code, s) = client.json(client.request(reqwest::Method::DELETE, &format!("/api/jobs/{id}")))?;
            if code == 204 {
                println!("job {id} deleted");
            } else {
                println!("job {id} {}", s["state"].as_str().unwrap_or("cancelled"));
            }
            Ok(())
        }
    }
}

fn submit(
    client: &Client,
    video: &Path,
    pipeline: &str,
    out: Option<PathBuf>,
    metrics: Option<PathBuf>,
    detach: bool,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(video).with_context(|| format!("cannot read {}", video.display()))?.len();
    // Credentials first: a refused upload would be refused only after it was sent.
    client.json(client.request(reqwest::Method::GET, "/api/jobs"))?;
    let form = reqwest::blocking::multipart::Form::new()
        .file("video", video)
        .with_context(|| format!("cannot read {}", video.display()))?
        .text("pipeline", pipeline.to_owned());
    let upload = ProgressBar::new_spinner().with_message(format!("uploading {} ({:.1} MB)", video.display(), size as f64 / 1e6));
    upload.enable_steady_tick(Duration::from_millis(120));
    let result = client.json(client.request(reqwest::Method::POST, "/api/jobs").multipart(form));
    upload.finish_and_clear();
    let (_, job) = result?;
    let id = job["id"].as_str().context("the gateway answered without a job id")?.to_owned();
    if detach {
        println!("{id}");
        return Ok(());
    }
    eprintln!("job {id}: {} frames, {}", job["frames_total"], job["workers"].as_str().unwrap_or(""));
    let bar = ProgressBar::new(job["frames_total"].as_u64().unwrap_or(0));
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} frames  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let status = loop {
        let (_, s) = client.json(client.request(reqwest::Method::GET, &format!("/api/jobs/{id}")))?;
        // `progress` counts a `track` job's detection pass as its first half.
        let total = s["frames_total"].as_u64().unwrap_or(0);
        bar.set_position((s["progress"].as_f64().unwrap_or(0.0) * total as f64).round() as u64);
        let detecting = s["frames_done"].as_u64() == Some(0) && s["frames_detected"].as_u64().is_some_and(|d| d > 0);
        bar.set_message(format!(
            "{}{:.1} fps, ETA {}",
            if detecting { "detection pass for tracking, " } else { "" },
            s["fps"].as_f64().unwrap_or(0.0),
            s["eta_s"].as_f64().map_or_else(|| "-".to_owned(), |e| format!("{e:.0} s"))
        ));
        if matches!(s["state"].as_str(), Some("done" | "failed" | "cancelled")) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    bar.finish_and_clear();
    match status["state"].as_str() {
        Some("done") => {}
        Some(state) => bail!("job {id} {state}: {}", status["error"].as_str().unwrap_or("")),
        None => bail!("job {id}: no state in {status}"),
    }
    let out = out.unwrap_or_else(|| video.with_extension("processed.mp4"));
    let bytes = client.download(&format!("/api/jobs/{id}/result.mp4"), &out)?;
    let metrics = metrics.unwrap_or_else(|| out.with_extension("metrics.json"));
    client.download(&format!("/api/jobs/{id}/metrics.json"), &metrics)?;
    let (_, m) = client.json(client.request(reqwest::Method::GET, &format!("/api/jobs/{id}/metrics.json")))?;
    let m = &m["metrics"];
    eprintln!(
        "job {id} done: {} frames in {:.1} s ({:.1} fps, {:.2}x one worker, {} chunks retried) -> {} ({:.1} MB), {}",
        m["frames"],
        m["wall_s"].as_f64().unwrap_or(0.0),
        m["effective_fps"].as_f64().unwrap_or(0.0),
        m["speedup_vs_one_worker"].as_f64().unwrap_or(0.0),
        m["retried_chunks"],
        out.display(),
        bytes as f64 / 1e6,
        metrics.display()
    );
    Ok(())
}
