//! WebRTC live view (DESIGN.md step 3): WHEP sessions (draft-ietf-wish-whep-02) served by
//! event loops that each own one UDP socket and many `str0m` peers.
//!
//! # Layout
//! - this file: [`Webrtc`], the session registry and the WHEP operations the HTTP layer
//!   calls (create, trickle/ICE restart, delete).
//! - [`event_loop`]: one task per loop: datagrams in, timeouts, access units out to every
//!   session of a stream (packetized once per unit, see [`crate::hub::AccessUnit::rtp_payloads`]).
//! - [`timeline`]: the per-viewer RTP timestamp plan (fast-start bursts, camera restarts).

pub mod event_loop;
pub mod timeline;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signaling::peer::{PeerConfig, ViewerPeer};
use signaling::whep::{self, ETag, IceServer, Precondition, SessionId, WhepError};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::config::WebrtcConfig;
use crate::state::StateStore;
use crate::streams::{StreamRuntime, ViewerKind};

/// Profile assumed when the camera's SPS is not known in time: Constrained Baseline 3.1,
/// which every browser decodes.
const FALLBACK_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Commands queued per event loop before senders wait.
const COMMAND_QUEUE: usize = 256;

/// Why a WHEP operation failed; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A WHEP protocol error (400/412/413/415/422/428).
    #[error(transparent)]
    Whep(#[from] WhepError),
    /// No such session on this stream (404).
    #[error("no WHEP session {0} on this stream")]
    UnknownSession(String),
    /// Too many sessions (503 with Retry-After).
    #[error("at capacity: {0} WebRTC sessions")]
    AtCapacity(usize),
    /// A viewer limit (`limits.max_viewers*`) is reached (503 with Retry-After).
    #[error(transparent)]
    Viewers(#[from] crate::limits::ViewerLimit),
    /// The event loop is gone (shutting down) (503).
    #[error("WebRTC is shutting down")]
    ShuttingDown,
}

/// A created session, for the 201 response.
#[derive(Debug)]
pub struct Created {
    /// The session id (last segment of the resource URL).
    pub id: SessionId,
    /// The ICE ETag.
    pub etag: ETag,
    /// The SDP answer.
    pub answer: String,
}

/// The outcome of a PATCH.
#[derive(Debug)]
pub enum Patched {
    /// Trickled candidates taken (204).
    Trickle,
    /// ICE restarted (200): the new ETag and the answer fragment.
    IceRestart {
        /// The new ETag.
        etag: ETag,
        /// `application/trickle-ice-sdpfrag` body with the new credentials and candidates.
        fragment: String,
    },
}

/// A command for an event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take over a new session.
    Add(Box<event_loop::NewSession>),
    /// End a session; replies whether it existed.
    Remove(SessionId, oneshot::Sender<bool>),
    /// Trickled remote candidates.
    Candidates(SessionId, Vec<String>),
    /// ICE restart with the client's new credentials; replies with ours.
    IceRestart(SessionId, String, String, oneshot::Sender<Result<(String, String), WhepError>>),
}

#[derive(Debug)]
struct LoopHandle {
    commands: mpsc::Sender<Command>,
    /// The address announced as host candidate.
    announced: SocketAddr,
    sessions: Arc<AtomicUsize>,
}

#[derive(Debug, Clone)]
struct Entry {
    stream: String,
    loop_index: usize,
    etag: ETag,
}

/// Registry shared by the HTTP side and the loops (which remove sessions that end).
#[derive(Debug)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    /// Where session ownership is published for other replicas.
    store: Arc<dyn StateStore>,
}

/// How often this replica re-announces the WHEP sessions it owns.
const OWNERSHIP_REFRESH: Duration = Duration::from_secs(10);

impl Registry {
    pub(crate) fn remove(&self, id: &SessionId) {
        let removed = self.sessions.lock().expect("registry lock poisoned").remove(id).is_some();
        metrics::gauge!("sightline_webrtc_sessions").set(self.len() as f64);
        if removed {
            let store = self.store.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _ = store.release_whep_session(&id).await;
            });
        }
    }

    /// Re-announces every session this replica owns (their ownership keys have a TTL).
    async fn refresh_ownership(self: Arc<Self>) {
        loop {
            tokio::time::sleep(OWNERSHIP_REFRESH).await;
            let ids: Vec<SessionId> = self.sessions.lock().expect("registry lock poisoned").keys().copied().collect();
            for id in ids {
                if let Err(e) = self.store.claim_whep_session(&id.to_string()).await {
                    tracing::debug!(session = %id, error = %e, "cannot refresh WHEP session ownership");
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.sessions.lock().expect("registry lock poisoned").len()
    }

    fn get(&self, id: &SessionId) -> Option<Entry> {
        self.sessions.lock().expect("registry lock poisoned").get(id).cloned()
    }
}

/// The WebRTC side of the gateway. See the module docs.
#[derive(Debug)]
pub struct Webrtc {
    config: WebrtcConfig,
    loops: Vec<LoopHandle>,
    registry: Arc<Registry>,
    links: Vec<String>,
}

/// The IP the sockets bind: `webrtc.ip` (0.0.0.0 needs `public_ips` to announce), else the
/// HTTP listen IP, else loopback.
fn bind_ip(config: &WebrtcConfig, http_listen: SocketAddr) -> IpAddr {
    config.ip.unwrap_or_else(|| {
        let ip = http_listen.ip();
        if ip.is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { ip }
    })
}

impl Webrtc {
    /// Binds one UDP socket per event loop and starts the loops. Session ownership is
    /// published in `store` (for WHEP redirects between replicas).
    pub async fn start(config: &WebrtcConfig, http_listen: SocketAddr, store: Arc<dyn StateStore>) -> anyhow::Result<Arc<Webrtc>> {
        let ip = bind_ip(config, http_listen);
        let loops = if config.loops == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.loops };
        let registry = Arc::new(Registry { sessions: Mutex::default(), store });
        tokio::spawn(registry.clone().refresh_ownership());
        let mut handles = Vec::with_capacity(loops);
        for i in 0..loops {
            let port = if config.udp_port == 0 { 0 } else { config.udp_port + i as u16 };
            let socket =
                tokio::net::UdpSocket::bind((ip, port)).await.map_err(|e| anyhow::anyhow!("WebRTC cannot bind UDP {ip}:{port}: {e}"))?;
            let local = socket.local_addr()?;
            let announced = SocketAddr::new(config.public_ips.first().copied().unwrap_or(ip), local.port());
            if announced.ip().is_unspecified() {
                anyhow::bail!("webrtc.ip {ip} is unspecified: set webrtc.public_ips to the address browsers reach");
            }
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let sessions = Arc::new(AtomicUsize::new(0));
            let el = event_loop::EventLoop::new(i, socket, announced, rx, registry.clone(), sessions.clone(), config.connect_timeout)
                .map_err(|e| anyhow::anyhow!("WebRTC UDP socket {local}: {e}"))?;
            tokio::spawn(el.run());
            info!(loop_index = i, %local, %announced, "WebRTC event loop listening");
            handles.push(LoopHandle { commands: tx, announced, sessions });
        }
        let servers: Vec<IceServer> = config
            .ice_servers
            .iter()
            .map(|s| IceServer { url: s.url.clone(), username: s.username.clone(), credential: s.credential.clone() })
            .collect();
        metrics::gauge!("sightline_webrtc_sessions").set(0.0);
        Ok(Arc::new(Webrtc { config: config.clone(), loops: handles, registry, links: whep::ice_server_links(&servers) }))
    }

    /// `Link` header values for the configured ICE servers.
    pub fn links(&self) -> &[String] {
        &self.links
    }

    /// Number of WHEP sessions.
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// Number of WHEP sessions of one stream.
    pub fn stream_session_count(&self, stream: &str) -> usize {
        self.registry.sessions.lock().expect("registry lock poisoned").values().filter(|e| e.stream == stream).count()
    }

    /// The UDP addresses announced as host candidates, one per event loop.
    pub fn announced_addrs(&self) -> Vec<SocketAddr> {
        self.loops.iter().map(|l| l.announced).collect()
    }

    /// Answers a WHEP offer for an active stream (the caller checked stream and state).
    /// Waits up to `first_frame_timeout` for the camera's SPS to pick the H.264 profile.
    /// A session opened with a viewer token ends at `expires` (data channel
    /// `{"type":"stopped","reason":"token_expired"}`).
    pub async fn create(&self, stream: &Arc<StreamRuntime>, offer: &str, expires: Option<Instant>) -> Result<Created, SessionError> {
        if self.session_count() >= self.config.max_sessions {
            return Err(SessionError::AtCapacity(self.config.max_sessions));
        }
        let created_at = Instant::now();
        // Counts as a viewer from now on: an on-demand stream starts pulling.
        let guard = stream.try_consumer(ViewerKind::Webrtc)?;
        let profile_level_id = self.camera_profile(stream).await;
        let (loop_index, handle) =
            self.loops.iter().enumerate().min_by_key(|(_, l)| l.sessions.load(Ordering::Relaxed)).expect("at least one event loop");
        let config = PeerConfig { candidates: vec![handle.announced], profile_level_id };
        let (peer, answer) = ViewerPeer::accept(offer, &config, Instant::now())?;
        let id = SessionId::from_random(rand::random());
        let etag = ETag::from_random(rand::random());
        self.registry
            .sessions
            .lock()
            .expect("registry lock poisoned")
            .insert(id, Entry { stream: stream.config.id.clone(), loop_index, etag });
        metrics::gauge!("sightline_webrtc_sessions").set(self.session_count() as f64);
        let new = event_loop::NewSession { id, stream: stream.clone(), peer, created_at, guard, expires };
        if handle.commands.send(Command::Add(Box::new(new))).await.is_err() {
            self.registry.remove(&id);
            return Err(SessionError::ShuttingDown);
        }
        if let Err(e) = self.registry.store.claim_whep_session(&id.to_string()).await {
            tracing::warn!(session = %id, error = %e, "WHEP session ownership not published; other replicas cannot redirect to it");
        }
        info!(stream = %stream.config.id, session = %id, loop_index, "WHEP session created");
        Ok(Created { id, etag, answer })
    }

    async fn camera_profile(&self, stream: &StreamRuntime) -> u32 {
        let mut sps = stream.hub.watch_sps();
        let wait = sps.wait_for(Option::is_some);
        match tokio::time::timeout(self.config.first_frame_timeout, wait).await {
            Ok(Ok(info)) => {
                info.as_ref().and_then(|i| u32::from_str_radix(&i.profile_level_id(), 16).ok()).unwrap_or(FALLBACK_PROFILE_LEVEL_ID)
            }
            _ => FALLBACK_PROFILE_LEVEL_ID,
        }
    }

    /// Whether this replica holds the session.
    pub fn has_session(&self, id: &str) -> bool {
        SessionId::parse(id).is_some_and(|sid| self.registry.get(&sid).is_some())
    }

    /// The base URL of another replica that owns the session, if the store knows one.
    pub async fn session_owner(&self, id: &str) -> Option<String> {
        SessionId::parse(id)?;
        self.registry.store.whep_session_owner(id).await.ok().flatten()
    }

    fn entry(&self, stream: &str, id: &str) -> Result<(SessionId, Entry), SessionError> {
        let unknown = || SessionError::UnknownSession(id.chars().take(40).collect());
        let sid = SessionId::parse(id).ok_or_else(unknown)?;
        let entry = self.registry.get(&sid).filter(|e| e.stream == stream).ok_or_else(unknown)?;
        Ok((sid, entry))
    }

    /// PATCH (draft-ietf-wish-whep §4.3): trickle candidates, or an ICE restart with
    /// `If-Match: *`.
    pub async fn patch(&self, stream: &str, id: &str, if_match: Option<&str>, body: &str) -> Result<Patched, SessionError> {
        let (sid, entry) = self.entry(stream, id)?;
        let precondition = whep::check_if_match(if_match, entry.etag)?;
        let fragment = whep::parse_sdpfrag(body)?;
        let commands = &self.loops[entry.loop_index].commands;
        match precondition {
            Precondition::Matches => {
                if fragment.ice_ufrag.is_some() {
                    return Err(WhepError::Unsupported("new ICE credentials need If-Match: * (an ICE restart)".into()).into());
                }
                commands.send(Command::Candidates(sid, fragment.candidates)).await.map_err(|_| SessionError::ShuttingDown)?;
                Ok(Patched::Trickle)
            }
            Precondition::IceRestart => {
                let (Some(ufrag), Some(pwd)) = (fragment.ice_ufrag, fragment.ice_pwd) else {
                    return Err(WhepError::BadFragment("an ICE restart needs a=ice-ufrag and a=ice-pwd".into()).into());
                };
                let (tx, rx) = oneshot::channel();
                commands.send(Command::IceRestart(sid, ufrag, pwd, tx)).await.map_err(|_| SessionError::ShuttingDown)?;
                let (ufrag, pwd) = rx.await.map_err(|_| SessionError::UnknownSession(id.into()))??;
                let etag = ETag::from_random(rand::random());
                if let Some(e) = self.registry.sessions.lock().expect("registry lock poisoned").get_mut(&sid) {
                    e.etag = etag;
                }
                let addr = self.loops[entry.loop_index].announced;
                let fragment = format!(
                    "a=ice-lite\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
                    addr.ip(),
                    addr.port()
                );
                Ok(Patched::IceRestart { etag, fragment })
            }
        }
    }

    /// DELETE: ends the session.
    pub async fn delete(&self, stream: &str, id: &str) -> Result<(), SessionError> {
        let (sid, entry) = self.entry(stream, id)?;
        let (tx, rx) = oneshot::channel();
        self.loops[entry.loop_index].commands.send(Command::Remove(sid, tx)).await.map_err(|_| SessionError::ShuttingDown)?;
        let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        self.registry.remove(&sid);
        info!(stream, session = %sid, "WHEP session deleted");
        Ok(())
    }
}
