//! One camera connection per cluster (issue #16 §3): for a stream with
//! `pull = "one_per_cluster"`, each camera session first asks the state store who pulls the
//! stream (the pull lease, `sightline:lease:pull:{id}`). The holder connects to the camera and
//! renews the lease while its session plays; every other replica plays the holder's RTSP
//! restream instead (`{holder's restream}/{id}`, with the cluster's control token as the
//! `Basic` password of the user `sightline-relay` when authentication is on: the holder
//! then gives it no viewer place, as it serves viewers elsewhere): the same access units,
//! with capture times from the holder's sender reports, so detection and events line up
//! across replicas.
//!
//! Failover: a holder that dies stops renewing; its relays' sessions fail at once (the
//! connection drops) and they ask again every [`RETRY`] until the lease lapses
//! ([`LEASE_TTL`]), then one of them takes it and connects to the camera, the others relay
//! from it: about 2 s without pictures, and viewers keep their sessions (only the ingest
//! session changed). If the store cannot be reached, a replica pulls the camera itself
//! (a second connection beats none).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{debug, info};

use crate::config::{PullMode, StreamConfig, Transport};
use crate::core::Error;
use crate::source::{CameraSource, SessionSink};
use crate::state::ClusterStore;

/// Lifetime of the pull lease; its holder renews it every [`LEASE_RENEW`].
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the holder renews the lease.
const LEASE_RENEW: Duration = Duration::from_millis(500);
/// How often a replica whose relay failed asks for the lease again, until it lapses.
const RETRY: Duration = Duration::from_millis(250);

/// A [`CameraSource`] that pulls `one_per_cluster` streams once per cluster. See the module
/// docs.
#[derive(Debug)]
pub(crate) struct ClusterPull {
    inner: Arc<dyn CameraSource>,
    cluster: Arc<dyn ClusterStore>,
    /// This replica as the lease names it: `{replica id} {restream URL}`.
    me: String,
    /// The password relays present to the holder's restream (a control token), if any.
    token: Option<String>,
}

impl ClusterPull {
    /// Wraps `inner`; `restream` is how other replicas reach this one's RTSP restream
    /// (`rtsp://host:port`), `token` what this replica presents to another's.
    pub(crate) fn new(
        inner: Arc<dyn CameraSource>,
        cluster: Arc<dyn ClusterStore>,
        replica_id: &str,
        restream: &str,
        token: Option<String>,
    ) -> ClusterPull {
        ClusterPull { inner, cluster, me: format!("{replica_id} {}", restream.trim_end_matches('/')), token }
    }

    /// The stream's config with its URL pointing at `holder`'s restream.
    fn relay_config(&self, stream: &StreamConfig, holder: &str) -> Result<StreamConfig, Error> {
        let base = holder.rsplit_once(' ').map_or(holder, |(_, url)| url);
        let bad = |why: String| Error::CameraUrl { stream: stream.id.clone(), detail: format!("the pull lease names {base:?}: {why}") };
        // Only an RTSP restream: the lease must not point this replica at a file or elsewhere.
        if !base.starts_with("rtsp://") {
            return Err(bad("not rtsp://".into()));
        }
        let mut url = url::Url::parse(&format!("{base}/{}", stream.id)).map_err(|e| bad(e.to_string()))?;
        if let Some(token) = &self.token {
            let _ = url.set_username(crate::core::RELAY_USER);
            let _ = url.set_password(Some(token));
        }
        let mut relay = stream.clone();
        relay.url = url.to_string();
        relay.transport = Transport::Tcp;
        Ok(relay)
    }

    /// Plays the camera while holding the lease; the session ends (for the next one to
    /// relay) if another replica holds it after all.
    async fn hold(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        let release = ReleaseOnDrop { cluster: self.cluster.clone(), stream: stream.id.clone(), me: self.me.clone() };
        let renew = async {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                match self.cluster.acquire_pull_lease(&stream.id, &self.me, LEASE_TTL).await {
                    Ok(holder) if holder != self.me => {
                        info!(stream = %stream.id, "pull lease taken by another replica; relaying from it");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => debug!(stream = %stream.id, error = %e, "pull lease not renewed; pulling on"),
                }
            }
        };
        let result = tokio::select! {
            r = self.inner.session(stream, stall, sink) => r,
            () = renew => Ok(()),
        };
        drop(release);
        result
    }
}

/// Gives the pull lease back when the holder's session ends (or is dropped: the stream no
/// longer pulled here), so a relay takes over without waiting for it to lapse.
struct ReleaseOnDrop {
    cluster: Arc<dyn ClusterStore>,
    stream: String,
    me: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let (cluster, stream, me) = (self.cluster.clone(), std::mem::take(&mut self.stream), std::mem::take(&mut self.me));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = cluster.release_pull_lease(&stream, &me).await {
                    debug!(stream = %stream, error = %e, "cannot release the pull lease; it lapses");
                }
            });
        }
    }
}

/// A sink that counts the access units passing through (did a relay session play?).
struct Counting<'a> {
    sink: &'a mut dyn SessionSink,
    units: u64,
}

impl SessionSink for Counting<'_> {
    fn parameters(&mut self, width: u32, height: u32) {
        self.sink.parameters(width, height);
    }
    fn unit(&mut self, unit: crate::core::frame::NewAccessUnit) {
        self.units += 1;
        self.sink.unit(unit);
    }
    fn audio_setup(&mut self, health: Option<crate::core::audio::AudioHealth>, info: Option<crate::core::audio::AudioInfo>) {
        self.sink.audio_setup(health, info);
    }
    fn audio(&mut self, frame: crate::core::audio::AudioFrame) {
        self.sink.audio(frame);
    }
    fn lost(&mut self, packets: u64) {
        self.sink.lost(packets);
    }
    fn skipped(&mut self, units: u64) {
        self.sink.skipped(units);
    }
}

#[async_trait]
impl CameraSource for ClusterPull {
    async fn session(&self, stream: &StreamConfig, stall: Duration, sink: &mut dyn SessionSink) -> Result<(), Error> {
        if stream.pull != PullMode::OnePerCluster {
            return self.inner.session(stream, stall, sink).await;
        }
        let mut give_up = Instant::now() + LEASE_TTL + Duration::from_secs(1);
        loop {
            let holder = match self.cluster.acquire_pull_lease(&stream.id, &self.me, LEASE_TTL).await {
                Ok(holder) => holder,
                Err(e) => {
                    debug!(stream = %stream.id, error = %e, "pull lease unknown; pulling the camera here");
                    self.me.clone()
                }
            };
            if holder == self.me {
                info!(stream = %stream.id, "pull lease held: pulling the camera");
                return self.hold(stream, stall, sink).await;
            }
            let relay = self.relay_config(stream, &holder)?;
            info!(stream = %stream.id, from = %crate::config::redact::redact_url(&relay.url), "relaying from the replica that pulls the camera");
            let mut counting = Counting { sink, units: 0 };
            let result = self.inner.session(&relay, stall, &mut counting).await;
            if counting.units > 0 {
                // It played: the holder just went away. Its lease lapses within LEASE_TTL.
                give_up = Instant::now() + LEASE_TTL + Duration::from_secs(1);
            }
            match result {
                Ok(()) => return Ok(()),
                // The holder is gone or refuses: ask again until its lease lapses.
                Err(e) if Instant::now() < give_up => {
                    debug!(stream = %stream.id, error = %e, "relay failed; asking for the pull lease again");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
