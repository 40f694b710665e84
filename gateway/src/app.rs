//! The gateway's top level: [`run`] wires every part together and owns the shutdown order.
//! The only module that sees all the others.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::{Config, PullMode};
use crate::core::detections::DetectionFanout;
use crate::core::events::EventFanout;
use crate::core::shutdown::{Shutdown, ShutdownTrigger};
use crate::detect::Detection;
use crate::http::AppState;
use crate::http::guard::ControlRate;
use crate::out::webrtc::Webrtc;
use crate::pipeline::Pipelines;
use crate::source::CameraSource;
use crate::state::{ClusterStore, MemoryStore, RedisStore, StateStore};
use crate::stream::Streams;

/// How long open HTTP connections may take to finish after shutdown began.
const DRAIN: Duration = Duration::from_secs(3);
/// The whole shutdown, from the signal to the exit, stays within this (SIGKILL usually
/// follows SIGTERM after 10 s); the steps after the drain get what is left (at least 3 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);

/// Runs the gateway until SIGINT/SIGTERM: the test camera (if enabled), the streams and the
/// HTTP server on `config.listen`.
///
/// Shutdown (well within 10 s): `/readyz` answers 503 at once; SSE feeds get
/// `event: stopped` with `"reason":"shutdown"` and end, WHEP sessions get the same on their
/// data channel and close; new feeds and WHEP sessions are refused (503); after
/// `shutdown_grace` no new connections are accepted and open ones get 3 s to finish;
/// streams stop pulling (detection leases released), workers are killed, this replica's
/// Redis heartbeat is removed.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if config.auth.enabled_for(config.listen) {
        info!(listen = %config.listen, mode = ?config.auth.mode, control_tokens = config.auth.control_tokens.len(), viewer_tokens = config.auth.jwt_secret.is_some(), "authentication ON: start/stop need a control token, viewing needs a token");
    } else {
        warn!(listen = %config.listen, mode = ?config.auth.mode, "authentication OFF: anyone who reaches {} can watch and start/stop streams", config.listen);
    }
    // The HTTP port first: it is the one the operator named, so a taken one fails before
    // anything starts, and the listeners bound below on port 0 (test camera, restream) cannot
    // be handed it by the kernel (a test harness that picked it free and released it lost it
    // that way once).
    let listener = crate::core::net::tcp_listener(config.listen).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    // Kept alive for the whole run: dropping it stops the encoder thread.
    let _camera = if config.testcam.enabled {
        let camera = Arc::new(testcam::TestCamera::start(config.testcam.settings())?);
        let addr = testcam::server::spawn(config.testcam.listen, camera.clone())
            .await
            .map_err(|e| anyhow::anyhow!("test camera cannot listen on {}: {e}", config.testcam.listen))?;
        info!(%addr, "built-in test camera at rtsp://{addr}/testcam");
        Some(camera)
    } else {
        None
    };
    let replica_id = config
        .replica_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into()), std::process::id()));
    let advertise = config.advertise_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
    let (store, cluster, redis): (Arc<dyn StateStore>, Arc<dyn ClusterStore>, _) = match &config.state.redis_url {
        Some(url) => {
            let redis = RedisStore::connect(url, &replica_id, &advertise).await?;
            (redis.clone(), redis.clone(), Some(redis))
        }
        None => {
            let memory = Arc::new(MemoryStore::with_geometry_file(&config.data_dir.join("geometry.json")));
            (memory.clone(), memory, None)
        }
    };
    let (shutdown_trigger, shutdown) = ShutdownTrigger::new();
    // The restream binds first: its address is how other replicas relay `one_per_cluster`
    // streams from this one.
    let restream = crate::restream::bind(&config.restream).await?;
    let mut source: Arc<dyn CameraSource> = Arc::new(crate::source::any::Sources::default());
    if let Some(bound) = restream.as_ref().filter(|_| redis.is_some() && config.streams.iter().any(|s| s.pull == PullMode::OnePerCluster)) {
        let advertised = crate::restream::advertised(&config, bound.addr);
        let redis_local = config
            .state
            .redis_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .is_some_and(|u| matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")));
        if advertised.contains("://127.") && !redis_local {
            warn!(restream = %advertised, "the restream is advertised on loopback but Redis is elsewhere: replicas on other hosts cannot relay from this one; set restream.listen or restream.advertise");
        }
        info!(restream = %advertised, "streams with pull = \"one_per_cluster\" are pulled by one replica, relayed by the others");
        let token = config.auth.control_tokens.first().cloned();
        source = Arc::new(crate::stream::cluster_pull::ClusterPull::new(source, cluster.clone(), &replica_id, &advertised, token));
    }
    let parts = assemble(&config, store, cluster, replica_id, source, shutdown.clone()).await?;
    let (streams, detect, control_rate) = (parts.state.streams.clone(), parts.detection, parts.state.control_rate.clone());
    let archive = parts.state.archive.clone();
    let (_mqtt, _webhooks) = (parts.mqtt, parts.webhooks);
    // Authentication follows each listener: `auth.mode = "auto"` turns it on for a restream
    // reachable beyond loopback even when HTTP listens on loopback only.
    if let Some(bound) = restream {
        let restream_auth = Arc::new(Auth::new(&config.auth, config.restream.listen));
        crate::restream::serve(bound, streams.clone(), restream_auth, config.limits.max_connections, shutdown.clone())?;
    }
    let router = crate::http::app(parts.state, &config.static_dir);
    info!(addr = %listener.local_addr()?, "HTTP listening; web UI at http://{}/", listener.local_addr()?);
    // Histogram samples wait in the recorder until drained: without a scrape they would pile
    // up for ever (the 30-minute soak showed +0.4 MiB/min with 200 viewers). The Prometheus
    // exporter leaves this upkeep to us.
    let upkeep = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            crate::metrics::handle().run_upkeep();
        }
    });
    // Idle clients leave the rate limiter's map now and then.
    let shrink = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            control_rate.shrink();
        }
    });
    let (close_trigger, close) = ShutdownTrigger::new();
    let server = tokio::spawn(crate::http::server::serve(listener, router, config.limits.clone(), close, DRAIN));
    shutdown_signal().await;
    let began = std::time::Instant::now();
    info!(grace_ms = config.shutdown_grace.as_millis() as u64, "shutting down: /readyz fails from now on, feeds and WHEP sessions end");
    shutdown_trigger.trigger();
    shrink.abort();
    upkeep.abort();
    tokio::time::sleep(config.shutdown_grace).await;
    close_trigger.trigger();
    let _ = server.await;
    // Independent steps, side by side: a slow one (Redis unreachable) does not hold up the
    // others.
    let cleanup = async {
        tokio::join!(
            streams.stopped(),
            async {
                if let Some(d) = &detect {
                    d.shutdown().await;
                }
            },
            async {
                if let Some(redis) = &redis {
                    redis.leave().await;
                }
            },
            archive.stopped(),
        )
    };
    let left = SHUTDOWN_DEADLINE.saturating_sub(began.elapsed());
    if tokio::time::timeout(left, cleanup).await.is_err() {
        warn!(left_ms = left.as_millis() as u64, "shutdown steps did not finish in time; exiting anyway");
        if let Some(d) = &detect {
            d.service().remove_socket();
        }
    }
    info!(took_ms = began.elapsed().as_millis() as u64, "shut down");
    Ok(())
}

/// The running parts of a gateway, before it listens.
pub(crate) struct Assembled {
    /// What the HTTP handlers share.
    pub(crate) state: AppState,
    /// Detection, for the shutdown (its service is in `state`).
    pub(crate) detection: Option<Detection>,
    /// The MQTT publisher of analytics events, while `[mqtt]` names a broker.
    pub(crate) mqtt: Option<crate::out::mqtt::Mqtt>,
    /// The webhooks analytics events are POSTed to (`[[webhooks]]`).
    pub(crate) webhooks: Option<crate::out::webhook::Webhooks>,
}

/// Starts the streams (pulling from `source`), their pipelines, detection and WebRTC, and
/// gathers what the HTTP layer needs. `run` calls it with the RTSP source; tests with a fake
/// camera.
///
/// Errors: the store cannot be reached, or WebRTC cannot bind its UDP sockets.
pub(crate) async fn assemble(
    config: &Config,
    store: Arc<dyn StateStore>,
    cluster: Arc<dyn ClusterStore>,
    replica_id: String,
    source: Arc<dyn CameraSource>,
    shutdown: Shutdown,
) -> anyhow::Result<Assembled> {
    crate::metrics::handle();
    crate::metrics::export_zeros();
    let streams = Streams::start(config, store.clone(), replica_id.clone(), source, shutdown.clone()).await?;
    let pipelines = Arc::new(Pipelines::new(streams.all().map(|rt| (&rt.id, &rt.hub)), config.feeds.viewer_queue));
    // Detection is optional: if its socket cannot be set up, video still runs.
    let events = Arc::new(EventFanout::default());
    let archive = crate::archive::Archive::start(config, &replica_id, &events, shutdown.clone());
    let detections = Arc::new(DetectionFanout::default());
    let recorders = crate::record::Recorders::start(config, &streams, archive.clone(), &events, &detections, &shutdown);
    let mqtt = crate::out::mqtt::start(&config.mqtt, &replica_id, &events);
    let webhooks = crate::out::webhook::start(&config.webhooks, &events);
    let detection = match config.detect.enabled {
        true => match crate::detect::start(&config.detect, cluster.clone(), &streams, &pipelines, detections, events.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(error = %e, "detection disabled");
                None
            }
        },
        false => None,
    };
    let webrtc = match config.webrtc.enabled {
        true => Some(Webrtc::start(&config.webrtc, config.listen, cluster).await?),
        false => None,
    };
    // Jobs are optional too: without their directory (or Redis) live video still runs.
    let jobs = match crate::jobs::Jobs::start(config).await {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(error = %e, "jobs disabled");
            None
        }
    };
    let state = AppState {
        jobs,
        streams,
        pipelines,
        detect: detection.as_ref().map(|d| d.service().clone()),
        events,
        archive,
        recorders,
        hls: Arc::default(),
        webrtc,
        store,
        feeds: config.feeds.clone(),
        replica_id,
        auth: Arc::new(Auth::new(&config.auth, config.listen)),
        limits: Arc::new(config.limits.clone()),
        control_rate: ControlRate::new(&config.limits),
        shutdown,
    };
    Ok(Assembled { state, detection, mqtt, webhooks })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
