//! `gateway doctor`: checks what a gateway with this configuration needs, and reports each
//! check with a hint when it fails (issue #16).
//!
//! Checks, in order: the configuration (valid, or nothing else runs); the ports it listens on
//! (HTTP, the test camera's RTSP, the RTSP restream, remote detection workers' TCP, WebRTC's
//! UDP: free, or held by a running Sightline gateway, which `/healthz` tells apart from
//! another program); the state store (Redis: `PING` round
//! trip, a publish/subscribe round trip, the replicas' heartbeats and their clocks against
//! Redis's `TIME`); the event database (reachable, migrations applied; nothing changed);
//! ONNX Runtime and the detection model (`infer-worker bench` loads it with the configured
//! provider and runs one frame); each camera (`DESCRIBE` only: codec, resolution, audio;
//! credentials never shown; `file://` sources probed, `screen://` displays opened); and with `--start-stop ID`, a stop,
//! start and first SSE frame of one stream on the running gateway.
//!
//! The built-in test camera is started for the camera checks when the configuration enables
//! it and no gateway is running (the gateway would start it too).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::redact::redact_url;
use crate::config::{Config, StreamConfig};

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth a look (the gateway still starts).
    Warn,
    /// The gateway, or this part of it, will not work.
    Fail,
    /// Not applicable with this configuration.
    Skip,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked (`config`, `port http`, `state store`, `camera front-door`, …).
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// What was found (credentials redacted).
    pub detail: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Time the check took, ms.
    pub ms: u64,
}

/// Every check. `ok` is false when one failed (the command then exits non-zero).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// The report as lines for a terminal: `[ ok ] name: detail`, hints indented below.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.status {
                Status::Ok => " ok ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!("[{tag}] {}: {} ({} ms)\n", c.name, c.detail, c.ms));
            if let Some(hint) = &c.hint {
                out.push_str(&format!("       hint: {hint}\n"));
            }
        }
        let failed = self.checks.iter().filter(|c| c.status == Status::Fail).count();
        let warned = self.checks.iter().filter(|c| c.status == Status::Warn).count();
        out.push_str(&format!("{} checks: {failed} failed, {warned} warnings\n", self.checks.len()));
        out
    }
}

/// What to check beyond the configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// Network checks (Redis, database, cameras, the running gateway) give up after this.
    pub timeout: Duration,
    /// Stop, start and watch this stream on the running gateway.
    pub start_stop: Option<String>,
}

struct Checks {
    list: Vec<Check>,
}

impl Checks {
    fn push(&mut self, name: impl Into<String>, started: Instant, status: Status, detail: impl Into<String>, hint: Option<String>) {
        let ms = started.elapsed().as_millis() as u64;
        self.list.push(Check { name: name.into(), status, detail: detail.into(), hint, ms });
    }

    /// Whether the last check was skipped (detection off: the other models' checks too).
    fn last_skipped(&self) -> bool {
        self.list.last().is_some_and(|c| matches!(c.status, Status::Skip))
    }
}

/// A report with only the configuration's failure (nothing else can run without it).
pub fn config_failed(error: &anyhow::Error) -> Report {
    let check = Check {
        name: "config".into(),
        status: Status::Fail,
        detail: format!("{error:#}"),
        hint: Some("fix the file named by --config (default config/sightline.toml) or the SIGHTLINE_* variables; `gateway check-config` prints what loads".into()),
        ms: 0,
    };
    Report { ok: false, checks: vec![check] }
}

/// Runs every check on a loaded, valid configuration.
pub async fn run(config: &Config, options: &Options) -> Report {
    let mut checks = Checks { list: Vec::new() };
    checks.push(
        "config",
        Instant::now(),
        Status::Ok,
        format!("valid: {} streams, listen {}, data_dir {}", config.streams.len(), config.listen, config.data_dir.display()),
        None,
    );
    let running = ports(config, options, &mut checks).await;
    state_store(config, options, &mut checks).await;
    database(config, options, &mut checks).await;
    models(config, &mut checks).await;
    // The test camera, as the gateway would start it (unless a running gateway has it).
    let _testcam = if config.testcam.enabled && !running {
        match testcam::TestCamera::start(config.testcam.settings()) {
            Ok(camera) => testcam::server::spawn(config.testcam.listen, Arc::new(camera)).await.ok(),
            Err(_) => None,
        }
    } else {
        None
    };
    for stream in &config.streams {
        camera(stream, options, &mut checks).await;
    }
    if let Some(id) = &options.start_stop {
        start_stop(config, options, id, running, &mut checks).await;
    }
    let ok = !checks.list.iter().any(|c| c.status == Status::Fail);
    Report { ok, checks: checks.list }
}

/// The address to reach a listener on this machine (an unspecified address: loopback).
fn reach(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// Whether a Sightline gateway answers `/healthz` at `addr`.
async fn gateway_at(addr: SocketAddr, timeout: Duration) -> bool {
    let url = format!("http://{}/healthz", reach(addr));
    let Ok(client) = reqwest::Client::builder().timeout(timeout).build() else { return false };
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.is_ok_and(|v| v["status"] == "ok"),
        _ => false,
    }
}

/// The listening ports; returns whether a gateway runs on this configuration's HTTP address.
async fn ports(config: &Config, options: &Options, checks: &mut Checks) -> bool {
    let t = Instant::now();
    let running = match std::net::TcpListener::bind(config.listen) {
        Ok(_) => {
            checks.push("port http", t, Status::Ok, format!("{} is free", config.listen), None);
            false
        }
        Err(_) if gateway_at(config.listen, options.timeout).await => {
            checks.push("port http", t, Status::Ok, format!("{} is a running Sightline gateway (/healthz answers)", config.listen), None);
            true
        }
        Err(e) => {
            let hint = format!("another program holds {}: stop it, or give the gateway another `listen` (--listen)", config.listen);
            checks.push("port http", t, Status::Fail, format!("{}: {e}", config.listen), Some(hint));
            false
        }
    };
    if config.testcam.enabled {
        let t = Instant::now();
        let addr = config.testcam.listen;
        match std::net::TcpListener::bind(addr) {
            Ok(_) => checks.push("port testcam", t, Status::Ok, format!("{addr} is free"), None),
            Err(_) if running => checks.push("port testcam", t, Status::Ok, format!("{addr}: the running gateway's test camera"), None),
            Err(e) => checks.push(
                "port testcam",
                t,
                Status::Fail,
                format!("{addr}: {e}"),
                Some(format!("another program holds {addr}: set testcam.listen, or testcam.enabled = false")),
            ),
        }
    }
    if config.restream.enabled {
        let t = Instant::now();
        let (addr, udp) = (config.restream.listen, config.restream.udp_port);
        let tcp_free = addr.port() == 0 || std::net::TcpListener::bind(addr).is_ok();
        let udp_free = udp == 0 || [udp, udp + 1].iter().all(|p| std::net::UdpSocket::bind((addr.ip(), *p)).is_ok());
        let what = format!("{addr} (UDP {}-{})", udp, udp.saturating_add(1));
        if tcp_free && udp_free {
            checks.push("port restream", t, Status::Ok, format!("{what} free"), None);
        } else if running {
            checks.push("port restream", t, Status::Ok, format!("{what}: the running gateway's RTSP restream"), None);
        } else {
            let hint = format!(
                "another program holds {}: set restream.listen / restream.udp_port (0 picks free ports), or restream.enabled = false",
                if tcp_free { "the UDP ports" } else { "the RTSP port" }
            );
            checks.push("port restream", t, Status::Fail, format!("{what}: in use"), Some(hint));
        }
    }
    if let Some(addr) = config.detect.remote.listen.filter(|a| config.detect.enabled && a.port() != 0) {
        let t = Instant::now();
        match std::net::TcpListener::bind(addr) {
            Ok(_) => checks.push("port detect.remote", t, Status::Ok, format!("{addr} is free (remote detection workers)"), None),
            Err(_) if running => {
                checks.push("port detect.remote", t, Status::Ok, format!("{addr}: the running gateway's remote workers' port"), None)
            }
            Err(e) => checks.push(
                "port detect.remote",
                t,
                Status::Fail,
                format!("{addr}: {e}"),
                Some(format!("another program holds {addr}: set detect.remote.listen, or remove [detect.remote]")),
            ),
        }
    }
    if config.webrtc.enabled && config.webrtc.udp_port != 0 {
        let t = Instant::now();
        // The sockets the gateway would bind.
        let (ip, loops) = (config.webrtc.bind_ip(config.listen), config.webrtc.loop_count());
        let busy: Vec<String> = (0..loops as u16)
            .map(|i| config.webrtc.udp_port + i)
            .filter(|p| std::net::UdpSocket::bind((ip, *p)).is_err())
            .map(|p| p.to_string())
            .collect();
        let range = format!("{ip} UDP {}..={}", config.webrtc.udp_port, config.webrtc.udp_port + loops as u16 - 1);
        if busy.is_empty() {
            checks.push("port webrtc", t, Status::Ok, format!("{range} free"), None);
        } else if running {
            checks.push("port webrtc", t, Status::Ok, format!("{range}: held by the running gateway"), None);
        } else {
            let hint = "another program holds them: set webrtc.udp_port (0 picks free ports)".to_owned();
            checks.push("port webrtc", t, Status::Fail, format!("{range}: {} in use", busy.join(", ")), Some(hint));
        }
    }
    running
}

async fn state_store(config: &Config, options: &Options, checks: &mut Checks) {
    let t = Instant::now();
    let Some(url) = config.state.redis_url.as_deref() else {
        checks.push("state store", t, Status::Ok, "in-memory (embedded, one gateway)", None);
        return;
    };
    let shown = redact_url(url);
    let hint = Some(format!("start Redis at {shown}, or check state.redis_url (--redis)"));
    match tokio::time::timeout(options.timeout, redis_checks(url)).await {
        Ok(Ok(found)) => {
            let mut detail = format!(
                "Redis {shown}: PING {:.1} ms, publish/subscribe {:.1} ms, this machine's clock {:+} ms from Redis",
                found.ping_ms, found.pubsub_ms, found.local_skew_ms
            );
            let mut status = Status::Ok;
            let mut hints = Vec::new();
            if found.replicas.is_empty() {
                detail.push_str("; no replica heartbeats (no gateway running against it)");
            } else {
                let list: Vec<String> = found.replicas.iter().map(|(id, skew)| format!("{id} {skew:+} ms")).collect();
                detail.push_str(&format!("; {} replicas, clocks against Redis: {}", found.replicas.len(), list.join(", ")));
            }
            let worst = found.replicas.iter().map(|(_, s)| s.abs()).chain([found.local_skew_ms.abs()]).max().unwrap_or(0);
            if worst > CLOCK_FAIL_MS {
                status = Status::Fail;
                hints.push(format!(
                    "clocks {worst} ms apart: recordings and events are timed by wall clock; run NTP (chrony) on every machine"
                ));
            } else if worst > CLOCK_WARN_MS {
                status = Status::Warn;
                hints.push(format!("clocks {worst} ms apart: run NTP (chrony) on every machine"));
            }
            checks.push("state store", t, status, detail, (!hints.is_empty()).then(|| hints.join("; ")));
        }
        Ok(Err(e)) => {
            let password = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_owned));
            checks.push(
                "state store",
                t,
                Status::Fail,
                format!("Redis {shown}: {}", crate::config::redact::scrub(&e, password.as_deref())),
                hint,
            )
        }
        Err(_) => checks.push("state store", t, Status::Fail, format!("Redis {shown}: no answer within {:?}", options.timeout), hint),
    }
}

/// Clocks further apart than this are a warning, ms.
const CLOCK_WARN_MS: i64 = 250;
/// ... and a failure (recordings cut a segment when capture times jump 3 s).
const CLOCK_FAIL_MS: i64 = 2_000;

struct RedisFound {
    ping_ms: f64,
    pubsub_ms: f64,
    /// This machine's clock minus Redis's, ms.
    local_skew_ms: i64,
    /// Each replica's id and its clock minus Redis's when it wrote its heartbeat, ms.
    replicas: Vec<(String, i64)>,
}

async fn redis_checks(url: &str) -> Result<RedisFound, String> {
    use redis::AsyncCommands;
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let ping_ms = t.elapsed().as_secs_f64() * 1000.0;
    // Redis's clock, taken halfway through the round trip.
    let before = crate::core::clock::now_ms();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let after = crate::core::clock::now_ms();
    let redis_ms = secs * 1000 + micros / 1000;
    let local_skew_ms = (before + after) as i64 / 2 - redis_ms as i64;

    let channel = format!("sightline:doctor:{:016x}", rand::random::<u64>());
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub.subscribe(&channel).await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let _: i64 = conn.publish(&channel, "doctor").await.map_err(|e| e.to_string())?;
    {
        use futures::StreamExt;
        let mut messages = pubsub.on_message();
        messages.next().await.ok_or("the subscription closed before the message came back")?;
    }
    let pubsub_ms = t.elapsed().as_secs_f64() * 1000.0;

    let keys: Vec<String> = conn.keys(crate::state::REPLICA_PATTERN).await.map_err(|e| e.to_string())?;
    let mut replicas = Vec::new();
    for key in keys {
        let body: Option<String> = conn.get(&key).await.map_err(|e| e.to_string())?;
        let pttl: i64 = conn.pttl(&key).await.map_err(|e| e.to_string())?;
        let Some(info) = body.and_then(|b| serde_json::from_str::<crate::state::ReplicaInfo>(&b).ok()) else { continue };
        if info.now_ms == 0 || pttl < 0 {
            continue; // a replica from before clocks were in heartbeats
        }
        // Written `age` ago by Redis's clock (the key's lifetime minus what is left of it).
        let age = crate::state::HEARTBEAT_TTL.as_millis() as i64 - pttl;
        let skew = info.now_ms as i64 - (redis_ms as i64 - age);
        let id = key.trim_start_matches("sightline:replica:").to_owned();
        replicas.push((id, skew));
    }
    replicas.sort();
    Ok(RedisFound { ping_ms, pubsub_ms, local_skew_ms, replicas })
}

async fn database(config: &Config, options: &Options, checks: &mut Checks) {
    let t = Instant::now();
    let url = config.events.database_url.as_deref();
    let checked = tokio::time::timeout(options.timeout, crate::archive::Db::migration_status(&config.data_dir, url)).await;
    let name = "database";
    match checked {
        Ok(Ok((backend, applied, known))) if applied == known => {
            checks.push(name, t, Status::Ok, format!("{backend}: reachable, {applied} of {known} migrations applied"), None)
        }
        Ok(Ok((backend, 0, known))) => checks.push(
            name,
            t,
            Status::Ok,
            format!("{backend}: reachable, not created yet ({known} migrations to apply at the first start)"),
            None,
        ),
        Ok(Ok((backend, applied, known))) if applied < known => checks.push(
            name,
            t,
            Status::Warn,
            format!("{backend}: {applied} of {known} migrations applied"),
            Some("the gateway applies the rest when it starts".into()),
        ),
        Ok(Ok((backend, applied, known))) => checks.push(
            name,
            t,
            Status::Fail,
            format!("{backend}: {applied} migrations applied, this build knows {known}"),
            Some("a newer gateway migrated this database: run that version, or restore a backup".into()),
        ),
        Ok(Err(e)) => {
            let hint = match url {
                Some(_) => "check events.database_url (user, password, database) and that PostgreSQL runs".to_owned(),
                None => format!("check that {} is readable and not damaged", config.data_dir.join("events.db").display()),
            };
            checks.push(name, t, Status::Fail, e, Some(hint))
        }
        Err(_) => checks.push(name, t, Status::Fail, format!("no answer within {:?}", options.timeout), None),
    }
}

/// Loads each model (`detect.model`, then `[[detect.models]]`) with the configured provider
/// in `infer-worker bench` and runs one frame.
async fn models(config: &Config, checks: &mut Checks) {
    let pools = config.detect.pools();
    for (i, pool) in pools.iter().enumerate() {
        let name = if i == 0 { "detection".to_owned() } else { format!("detection model {}", pool.name) };
        model(config, pool, &name, checks).await;
        if i == 0 && checks.last_skipped() {
            return;
        }
    }
}

/// [`models`] for one model, reported as check `name`.
async fn model(config: &Config, pool: &crate::config::PoolConfig, name: &str, checks: &mut Checks) {
    let t = Instant::now();
    let d = &config.detect;
    let wanted = config.streams.iter().any(|s| s.detect);
    if !d.enabled || !wanted {
        let why = if d.enabled { "no stream has detect = true" } else { "detect.enabled = false" };
        checks.push(name, t, Status::Skip, why, None);
        return;
    }
    if !d.spawn {
        checks.push(name, t, Status::Skip, "detect.spawn = false: the models run on the workers that connect", None);
        return;
    }
    if !pool.model.exists() {
        let key = if name == "detection" { "detect.model".to_owned() } else { format!("the model of [[detect.models]] {}", pool.name) };
        let hint = format!("set {key} to a YOLO ONNX export (models/testcam-shapes.onnx finds the test camera's shapes)");
        checks.push(name, t, Status::Fail, format!("model {} not found", pool.model.display()), Some(hint));
        return;
    }
    let bin = d.worker_binary();
    let mut cmd = tokio::process::Command::new(&bin);
    // A warm-up frame, then one timed (the loop runs while less than 1 ms passed).
    cmd.args(["bench", "--seconds", "0.001", "--width", "640", "--height", "360", "--provider", &d.provider])
        .arg("--model")
        .arg(&pool.model)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    if let Some(lib) = &d.onnxruntime {
        cmd.arg("--onnxruntime").arg(lib);
    }
    if let Some(labels) = &pool.labels {
        cmd.arg("--labels").arg(labels);
    }
    let ran = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await;
    let model = pool.model.display();
    match ran {
        Ok(Ok(out)) if out.status.success() => {
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let providers: Vec<&str> = j["providers"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
            let detail = format!(
                "{model} loads in ONNX Runtime (providers: {}) with provider {}; one 640x360 frame: {:.1} ms (model {:.1} ms)",
                providers.join(", "),
                d.provider,
                j["pre_ms"].as_f64().unwrap_or(0.0) + j["infer_ms"].as_f64().unwrap_or(0.0) + j["post_ms"].as_f64().unwrap_or(0.0),
                j["infer_ms"].as_f64().unwrap_or(0.0)
            );
            checks.push(name, t, Status::Ok, detail, None);
        }
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("").to_owned();
            let hint = if err.contains("onnxruntime") || err.contains("libonnxruntime") {
                "install ONNX Runtime (`pip install onnxruntime`, scripts/deps.sh) or set detect.onnxruntime to libonnxruntime.so"
            } else if d.provider != "cpu" {
                "the provider must be compiled into the loaded ONNX Runtime (onnxruntime-gpu for cuda/tensorrt); try provider = \"cpu\""
            } else {
                "check that the model is a YOLO ONNX export (YOLOv5/v8/11 or end-to-end)"
            };
            checks.push(name, t, Status::Fail, format!("{model}: {err}"), Some(hint.into()));
        }
        Ok(Err(e)) => checks.push(
            name,
            t,
            Status::Fail,
            format!("cannot run {}: {e}", bin.display()),
            Some("build the workspace (`cargo build --release`) or set detect.worker_bin".into()),
        ),
        Err(_) => checks.push(name, t, Status::Fail, format!("{model}: no frame within 120 s"), None),
    }
}

async fn camera(stream: &StreamConfig, options: &Options, checks: &mut Checks) {
    let t = Instant::now();
    let name = format!("camera {}", stream.id);
    let shown = redact_url(&stream.url);
    let scheme = stream.url.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    match scheme.as_str() {
        "rtsp" | "rtsps" => match crate::source::rtsp::describe(stream, options.timeout).await {
            Ok(d) => {
                let size = match (d.width, d.height) {
                    (Some(w), Some(h)) => format!("{w}x{h}"),
                    _ => "size in band".into(),
                };
                let audio = d.audio.as_deref().map_or_else(|| "no audio".to_owned(), |a| format!("audio {a}"));
                let detail = format!("{shown}: {} {size}, {audio}", d.codec);
                if d.supported {
                    checks.push(name, t, Status::Ok, detail, None);
                } else {
                    let hint = "set the camera's video codec to H.264 or H.265".to_owned();
                    checks.push(name, t, Status::Fail, format!("{detail} (not H.264/H.265)"), Some(hint));
                }
            }
            Err(e) => {
                let text = e.to_string();
                let hint = if text.contains("401") || text.contains("Unauthorized") {
                    "the camera refused the credentials: check user and password in the URL"
                } else if text.contains("404") || text.contains("Not Found") {
                    "the camera has no such path: check the URL's path (the camera's manual lists its RTSP paths)"
                } else if text.contains("timed out") {
                    "no answer: check the address, the port (554) and firewalls between here and the camera"
                } else {
                    ""
                };
                let hint = if hint.is_empty() {
                    let at = url::Url::parse(&stream.url)
                        .ok()
                        .map(|u| format!("{}:{}", u.host_str().unwrap_or("?"), u.port().unwrap_or(554)))
                        .unwrap_or_default();
                    format!("check that the camera is on and that this machine reaches {at} (ping, firewalls)")
                } else {
                    hint.to_owned()
                };
                checks.push(name, t, Status::Fail, format!("{shown}: {text}"), Some(hint));
            }
        },
        "file" => {
            let path = stream.url.trim_start_matches("file://").to_owned();
            let probed = tokio::task::spawn_blocking(move || crate::jobs::input::probe(Path::new(&path))).await;
            match probed {
                Ok(Ok(info)) => {
                    let audio = if info.audio { "audio" } else { "no audio" };
                    let detail = format!(
                        "{shown}: {} {}x{} {:.2} fps, {:.1} s, {audio}",
                        info.codec, info.width, info.height, info.fps, info.duration_s
                    );
                    checks.push(name, t, Status::Ok, detail, None);
                }
                Ok(Err(e)) => checks.push(
                    name,
                    t,
                    Status::Fail,
                    format!("{shown}: {e}"),
                    Some("the file must be an H.264/H.265 MP4, MKV, MOV or TS".into()),
                ),
                Err(e) => checks.push(name, t, Status::Fail, format!("{shown}: {e}"), None),
            }
        }
        "screen" => {
            let url = stream.url.clone();
            match tokio::task::spawn_blocking(move || crate::source::screen::probe(&url)).await {
                Ok(Ok((w, h))) => checks.push(name, t, Status::Ok, format!("{shown}: X display captured at {w}x{h}"), None),
                Ok(Err(e)) => {
                    let hint = "start the X server (Xvfb :99) or fix the display; the gateway needs its XAUTHORITY cookie".to_owned();
                    checks.push(name, t, Status::Fail, format!("{shown}: {e}"), Some(hint))
                }
                Err(e) => checks.push(name, t, Status::Fail, format!("{shown}: {e}"), None),
            }
        }
        other => checks.push(name, t, Status::Skip, format!("{shown}: {other}: sources are not checked"), None),
    }
}

/// Stops (when active), starts and watches one stream on the running gateway until its first
/// SSE frame; leaves it as it was (stopped again if it was stopped).
async fn start_stop(config: &Config, options: &Options, id: &str, running: bool, checks: &mut Checks) {
    let t = Instant::now();
    let name = format!("start-stop {id}");
    if !running {
        let hint = format!("start the gateway (`gateway --config …`) on {} first", config.listen);
        checks.push(name, t, Status::Fail, "no gateway running to stop and start the stream on", Some(hint));
        return;
    }
    match round_trip(config, options, id).await {
        Ok(detail) => checks.push(name, t, Status::Ok, detail, None),
        Err(e) => checks.push(name, t, Status::Fail, e, Some(format!("see the gateway's log for stream {id}"))),
    }
}

async fn round_trip(config: &Config, options: &Options, id: &str) -> Result<String, String> {
    let base = format!("http://{}", reach(config.listen));
    let client = reqwest::Client::builder().timeout(options.timeout.max(Duration::from_secs(5)) * 3).build().map_err(|e| e.to_string())?;
    let token = config.auth.control_tokens.first().cloned();
    let call = |method: reqwest::Method, path: String| {
        let mut r = client.request(method, format!("{base}{path}"));
        if let Some(t) = &token {
            r = r.bearer_auth(t);
        }
        r
    };
    let stream: serde_json::Value = call(reqwest::Method::GET, format!("/api/streams/{id}"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .error_for_status()
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let was_active = stream["active"].as_bool().unwrap_or(false);
    let post = |action: &'static str| {
        let r = call(reqwest::Method::POST, format!("/api/streams/{id}/{action}"));
        async move { r.send().await.map_err(|e| e.to_string())?.error_for_status().map(|_| ()).map_err(|e| format!("{action}: {e}")) }
    };
    let t = Instant::now();
    if was_active {
        post("stop").await?;
    }
    let stopped_ms = t.elapsed().as_millis();
    let t = Instant::now();
    post("start").await?;
    // The first frame of the SSE feed (an on-demand stream connects because of it).
    let mut feed = call(reqwest::Method::GET, format!("/api/streams/{id}/feed"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .error_for_status()
        .map_err(|e| e.to_string())?;
    let mut seen = String::new();
    let deadline = Instant::now() + options.timeout.max(Duration::from_secs(5)) * 3;
    let first = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, feed.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                seen.push_str(&String::from_utf8_lossy(&bytes));
                if seen.contains("event: frame") {
                    break t.elapsed().as_millis();
                }
                if seen.len() > 1 << 20 {
                    seen.drain(..seen.len() - 64);
                }
            }
            Ok(Ok(None)) => return Err("the feed ended before a frame".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("started, but no frame within {:?}", options.timeout.max(Duration::from_secs(5)) * 3)),
        }
    };
    drop(feed);
    if !was_active {
        post("stop").await?;
    }
    Ok(if was_active {
        format!("stopped in {stopped_ms} ms, started and first SSE frame in {first} ms (its viewers saw the interruption)")
    } else {
        format!("started and first SSE frame in {first} ms, stopped again")
    })
}
