//! Per-stream start/stop state behind the [`StateStore`] trait.
//!
//! The store holds what must be the same on every replica: whether a stream is active, its
//! default fps/quality, and a `generation` bumped by every write so replicas can order events.
//! [`MemoryStore`] is the single-process default; a Redis store implements the same trait.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

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

/// Store failures. The in-memory store only fails for unknown streams.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No record for that stream id.
    #[error("no stream {0:?} in the state store")]
    UnknownStream(String),
    /// The backing service is unreachable; callers answer 503.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Shared start/stop state. Implementations must deliver every successful write to
/// [`StateStore::subscribe`]rs, in generation order per stream.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Creates `initial` if no record with its id exists; returns the record now stored.
    async fn ensure(&self, initial: StreamRecord) -> Result<StreamRecord, StoreError>;
    /// The record of one stream.
    async fn get(&self, id: &str) -> Result<StreamRecord, StoreError>;
    /// Starts (`active = true`) or stops a stream, applying `params`; bumps the generation
    /// and publishes a [`StateEvent`]. Idempotent: starting an active stream is an `Update`.
    async fn set_active(&self, id: &str, active: bool, params: StartParams, by: &str) -> Result<StreamRecord, StoreError>;
    /// Receives every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<StateEvent>;

    /// Whether the store is reachable (for `/readyz`). The in-memory store always is.
    fn is_ready(&self) -> bool {
        true
    }

    /// Records that this replica owns a WHEP session (with a TTL: call again to refresh).
    async fn claim_whep_session(&self, _session: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Forgets a WHEP session's owner.
    async fn release_whep_session(&self, _session: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// The base URL of the replica that owns a WHEP session, when another replica does.
    async fn whep_session_owner(&self, _session: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Takes or renews the detection lease of `stream` (`sightline:lease:detect:{id}`) for
    /// `ttl`; `true` when this replica holds it (and should run detection). A single-process
    /// store always grants it.
    async fn acquire_detect_lease(&self, _stream: &str, _ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives the lease back if this replica holds it.
    async fn release_detect_lease(&self, _stream: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Sends a detection message (JSON) to the other replicas (`sightline:detections:{id}`).
    async fn publish_detections(&self, _stream: &str, _json: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Detection messages other replicas published, as `(stream, json)`; `None` for a
    /// single-process store.
    fn subscribe_detections(&self) -> Option<broadcast::Receiver<(String, std::sync::Arc<str>)>> {
        None
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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

/// Events buffered per subscriber before it lags (and must re-read the store).
const EVENT_BUFFER: usize = 1024;

/// The single-process store: a map behind a lock, changes on a broadcast channel.
#[derive(Debug)]
pub struct MemoryStore {
    records: RwLock<HashMap<String, StreamRecord>>,
    events: broadcast::Sender<StateEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { records: RwLock::default(), events: broadcast::channel(EVENT_BUFFER).0 }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ensure(&self, initial: StreamRecord) -> Result<StreamRecord, StoreError> {
        let mut records = self.records.write().expect("state lock poisoned");
        Ok(records.entry(initial.id.clone()).or_insert(initial).clone())
    }

    async fn get(&self, id: &str) -> Result<StreamRecord, StoreError> {
        let records = self.records.read().expect("state lock poisoned");
        records.get(id).cloned().ok_or_else(|| StoreError::UnknownStream(id.to_owned()))
    }

    async fn set_active(&self, id: &str, active: bool, params: StartParams, by: &str) -> Result<StreamRecord, StoreError> {
        let mut records = self.records.write().expect("state lock poisoned");
        let record = records.get_mut(id).ok_or_else(|| StoreError::UnknownStream(id.to_owned()))?;
        let action = apply(record, active, params, by);
        // Sent under the lock so subscribers see writes in generation order.
        let _ = self.events.send(StateEvent { action, record: record.clone() });
        Ok(record.clone())
    }

    fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> StreamRecord {
        StreamRecord {
            id: id.into(),
            active: false,
            fps: 10,
            quality: 75,
            started_at_ms: None,
            updated_at_ms: 0,
            updated_by: "r1".into(),
            generation: 0,
        }
    }

    #[tokio::test]
    async fn start_stop_bumps_generation_and_publishes() {
        let store = MemoryStore::default();
        let mut events = store.subscribe();
        assert_eq!(store.ensure(record("a")).await.unwrap().generation, 0);
        let mut again = record("a");
        again.active = true;
        assert!(!store.ensure(again).await.unwrap().active, "ensure keeps an existing record");

        let r = store.set_active("a", true, StartParams { fps: Some(15), quality: None }, "r2").await.unwrap();
        assert!(r.active && r.fps == 15 && r.quality == 75 && r.generation == 1 && r.updated_by == "r2");
        assert!(r.started_at_ms.is_some());
        let e = events.recv().await.unwrap();
        assert_eq!((e.action, e.record.generation), (Action::Start, 1));

        let r = store.set_active("a", true, StartParams::default(), "r2").await.unwrap();
        assert_eq!((r.generation, events.recv().await.unwrap().action), (2, Action::Update));
        let r = store.set_active("a", false, StartParams::default(), "r3").await.unwrap();
        assert_eq!((r.active, events.recv().await.unwrap().action), (false, Action::Stop));
        assert_eq!(store.get("a").await.unwrap(), r);
    }

    #[tokio::test]
    async fn unknown_stream_is_an_error() {
        let store = MemoryStore::default();
        assert!(matches!(store.get("nope").await, Err(StoreError::UnknownStream(_))));
        assert!(matches!(store.set_active("nope", true, StartParams::default(), "r").await, Err(StoreError::UnknownStream(_))));
    }
}
