//! The `gateway` binary: see `gateway --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sightline::config::Config;
use sightline::config::redact::redact_url;
use testcam::{TestCamSettings, TestCamera};

/// Sightline: RTSP cameras to browsers (SSE/MJPEG feeds, REST start/stop, web UI, metrics).
///
/// Configuration precedence: built-in defaults < config file < SIGHTLINE_* environment
/// variables (nested keys with `__`, e.g. SIGHTLINE_TESTCAM__ENABLED=false) < command line.
/// With no --config, config/sightline.toml is loaded if it exists. Log filter: RUST_LOG.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// TOML config file (default: config/sightline.toml if present, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080 (overrides `listen` in the config).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Add a camera as ID=URL (rtsp://[user:pass@]host/path); repeatable; starts active.
    #[arg(long = "stream", value_name = "ID=URL")]
    streams: Vec<String>,
    /// Share start/stop state with other replicas through Redis (redis://host:port).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run only the built-in RTSP test camera (rtsp://ADDR/testcam).
    Testcam {
        /// RTSP listen address.
        #[arg(long, default_value = "127.0.0.1:8555", value_name = "ADDR")]
        listen: SocketAddr,
        /// Picture width, px.
        #[arg(long, default_value_t = 1280)]
        width: u32,
        /// Picture height, px.
        #[arg(long, default_value_t = 720)]
        height: u32,
        /// Frames per second.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Keyframe interval, frames.
        #[arg(long, default_value_t = 50)]
        gop: u32,
        /// Target bitrate, kbit/s.
        #[arg(long, default_value_t = 2000)]
        bitrate_kbps: u32,
    },
    /// Load and validate the configuration, print it (credentials redacted) and exit.
    CheckConfig,
    /// Check what this configuration needs and report each check with a hint when it fails:
    /// config, ports, state store (round trip, publish/subscribe, replicas, clock skew),
    /// database (reachable, migrated), ONNX Runtime and the model (loads, runs one frame),
    /// each camera (DESCRIBE: codec, resolution, audio; credentials redacted). Exits 1 when a
    /// check fails. Takes the same --config, --listen, --stream and --redis as the gateway.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also stop, start and watch this stream (first SSE frame) on the running gateway.
        #[arg(long, value_name = "ID")]
        start_stop: Option<String>,
        /// Give up on a network check (Redis, database, a camera) after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a viewer token (JWT, HS256 with auth.jwt_secret) for the given streams.
    ///
    /// Send it as `Authorization: Bearer` (WHEP), `?token=` or the `sightline_token` cookie
    /// (SSE, MJPEG).
    Token {
        /// Stream id the token may watch; repeatable; `*` for every stream.
        #[arg(long = "stream", value_name = "ID", required = true)]
        streams: Vec<String>,
        /// Lifetime, e.g. 10m, 1h (at most auth.max_token_ttl).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Who the token is for (the `sub` claim, logged by the gateway).
        #[arg(long, default_value = "viewer")]
        subject: String,
    },
}

fn init_logging(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    for s in &cli.streams {
        config.add_stream_arg(s).map_err(anyhow::Error::msg)?;
    }
    if let Some(url) = &cli.redis {
        config.state.redis_url = Some(url.clone());
    }
    config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(config)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The doctor's report is on stdout; only warnings on stderr.
    let quiet = matches!(cli.command, Some(Command::Doctor { .. }));
    init_logging(cli.log_json, if quiet { "warn,retina=error" } else { "info,retina=warn" });
    let result = match &cli.command {
        Some(Command::Doctor { json, start_stop, timeout }) => {
            let report = match load_config(&cli) {
                Ok(config) => {
                    let options = sightline::doctor::Options { timeout: *timeout, start_stop: start_stop.clone() };
                    sightline::doctor::run(&config, &options).await
                }
                Err(e) => sightline::doctor::config_failed(&e),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", report.text());
            }
            return if report.ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE };
        }
        None => match load_config(&cli) {
            Ok(config) => sightline::run(config).await,
            Err(e) => Err(e),
        },
        Some(Command::CheckConfig) => load_config(&cli).map(|mut c| {
            for s in &mut c.streams {
                s.url = redact_url(&s.url);
            }
            c.state.redis_url = c.state.redis_url.as_deref().map(redact_url);
            c.mqtt.url = c.mqtt.url.as_deref().map(redact_url);
            c.events.database_url = c.events.database_url.as_deref().map(redact_url);
            for w in &mut c.webhooks {
                w.url = redact_url(&w.url);
                w.secret = w.secret.as_ref().map(|_| "***".into());
            }
            for t in &mut c.auth.control_tokens {
                *t = "***".into();
            }
            c.auth.jwt_secret = c.auth.jwt_secret.as_ref().map(|_| "***".into());
            println!("{}", toml_like(&c));
        }),
        Some(Command::Token { streams, ttl, subject }) => load_config(&cli).and_then(|c| {
            let auth = sightline::auth::Auth::new(&c.auth, c.listen);
            let (token, _) = auth.mint(subject, streams, *ttl)?;
            println!("{token}");
            Ok(())
        }),
        Some(Command::Testcam { listen, width, height, fps, gop, bitrate_kbps }) => {
            let settings = TestCamSettings { width: *width, height: *height, fps: *fps, gop: *gop, bitrate_kbps: *bitrate_kbps };
            run_testcam(*listen, settings).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn toml_like(c: &Config) -> String {
    serde_json::to_string_pretty(c).unwrap_or_default()
}

async fn run_testcam(listen: SocketAddr, settings: TestCamSettings) -> anyhow::Result<()> {
    let camera = Arc::new(TestCamera::start(settings)?);
    let addr = testcam::server::spawn(listen, camera).await?;
    tracing::info!("test camera at rtsp://{addr}/testcam");
    sightline::shutdown_signal().await;
    Ok(())
}
