//! The records and the two store traits (see the `state` module docs).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::{LineConfig, ZoneConfig};
use crate::core::Error;
use crate::core::clock::now_ms;

/// The stored state of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Stream id.
    pub id: String,
    /// Whether the stream is started (feeds served, camera pulled on demand).
    pub active: bool,
    /// Default frames per second for feeds that don't ask (1..=30).
    pub fps: u32,
    /// Default JPEG quality for feeds that don't ask (1..=100).
    pub quality: u8,
    /// When the stream was last started, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// When the record last changed, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Replica id that made the last change.
    pub updated_by: String,
    /// Incremented by every write; events with a generation not newer than the one a replica
    /// holds are stale.
    pub generation: u64,
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The stream was started.
    Start,
    /// The stream was stopped.
    Stop,
    /// Parameters changed without a start/stop transition.
    Update,
}

/// A change to one stream, as delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEvent {
    /// What happened.
    pub action: Action,
    /// The record after the change.
    pub record: StreamRecord,
}

/// Requested changes for a start; `None` keeps the current value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    /// New default fps.
    pub fps: Option<u32>,
    /// New default JPEG quality.
    pub quality: Option<u8>,
}

/// A stream's zones and lines as edited over the REST API (issue #13); once stored they
/// replace the config's for every replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Stream id.
    pub stream: String,
    /// Zones (polygons).
    pub zones: Vec<ZoneConfig>,
    /// Lines (tripwires).
    pub lines: Vec<LineConfig>,
    /// Incremented by every write; 0 is the config's, never stored.
    pub version: u64,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// Replica id that wrote it.
    pub updated_by: String,
}

/// Shared start/stop state. Implementations must deliver every successful write to
/// [`StateStore::subscribe`]rs, in generation order per stream.
///
/// Errors: [`Error::UnknownStream`] for an id the store has no record of,
/// [`Error::StoreUnavailable`] when the backing service cannot be reached (callers answer 503).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Creates `initial` if no record with its id exists; returns the record now stored.
    async fn ensure(&self, initial: StreamRecord) -> Result<StreamRecord, Error>;
    /// The record of one stream.
    async fn get(&self, id: &str) -> Result<StreamRecord, Error>;
    /// Starts (`active = true`) or stops a stream, applying `params`; bumps the generation
    /// and publishes a [`StateEvent`]. Idempotent: starting an active stream is an `Update`.
    async fn set_active(&self, id: &str, active: bool, params: StartParams, by: &str) -> Result<StreamRecord, Error>;
    /// Receives every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<StateEvent>;
    /// `stream`'s stored zones and lines; `None` when never written (the config's apply).
    async fn geometry(&self, stream: &str) -> Result<Option<Geometry>, Error>;
    /// Stores `geometry` if the stored version is still `expected` (0: none stored yet) and
    /// delivers it to [`StateStore::subscribe_geometry`]; `false` when another write came
    /// first (read again and retry).
    async fn put_geometry(&self, geometry: &Geometry, expected: u64) -> Result<bool, Error>;
    /// Receives every stored geometry from now on (also other replicas' writes).
    fn subscribe_geometry(&self) -> broadcast::Receiver<Geometry>;

    /// Whether the store is reachable (for `/readyz`). The in-memory store always is.
    fn is_ready(&self) -> bool {
        true
    }
}

/// What replicas coordinate through. The defaults are those of a single process: it owns
/// every session and lease, and there is nobody to relay to.
#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Records that this replica owns a WHEP session (`sightline:whep:{session}`, with a TTL:
    /// call again to refresh).
    async fn claim_whep_session(&self, _session: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Forgets a WHEP session's owner.
    async fn release_whep_session(&self, _session: &str) -> Result<(), Error> {
        Ok(())
    }

    /// The base URL of the replica that owns a WHEP session, when another replica does.
    async fn whep_session_owner(&self, _session: &str) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// Takes or renews the detection lease of `stream` (`sightline:lease:detect:{id}`) for
    /// `ttl`; `true` when this replica holds it (and should run detection).
    async fn acquire_detect_lease(&self, _stream: &str, _ttl: std::time::Duration) -> Result<bool, Error> {
        Ok(true)
    }

    /// Gives the lease back if this replica holds it.
    async fn release_detect_lease(&self, _stream: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Takes or renews the pull lease of `stream` (`sightline:lease:pull:{id}`) for `ttl`,
    /// naming this replica as `holder` (its id and how other replicas reach its RTSP
    /// restream); answers the holder afterwards: `holder` itself when this replica pulls the
    /// camera, another's when it should relay from that replica.
    async fn acquire_pull_lease(&self, _stream: &str, holder: &str, _ttl: std::time::Duration) -> Result<String, Error> {
        Ok(holder.to_owned())
    }

    /// Gives the pull lease back if `holder` holds it.
    async fn release_pull_lease(&self, _stream: &str, _holder: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Sends a detection message (JSON) to the other replicas (`sightline:detections:{id}`).
    async fn publish_detections(&self, _stream: &str, _json: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Detection messages other replicas published, as `(stream, json)`; `None` when there
    /// are no other replicas.
    fn subscribe_detections(&self) -> Option<broadcast::Receiver<(String, Arc<str>)>> {
        None
    }
}

impl std::fmt::Debug for dyn StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateStore")
    }
}

impl std::fmt::Debug for dyn ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterStore")
    }
}

/// Applies a start/stop to a record; returns the action it amounts to.
pub fn apply(record: &mut StreamRecord, active: bool, params: StartParams, by: &str) -> Action {
    let action = match (record.active, active) {
        (false, true) => Action::Start,
        (true, false) => Action::Stop,
        _ => Action::Update,
    };
    let now = now_ms();
    if action == Action::Start {
        record.started_at_ms = Some(now);
    }
    record.active = active;
    record.fps = params.fps.unwrap_or(record.fps);
    record.quality = params.quality.unwrap_or(record.quality);
    record.updated_at_ms = now;
    record.updated_by = by.to_owned();
    record.generation += 1;
    action
}
