//! The single-process [`StateStore`]: a map behind a lock, changes on a broadcast channel.
//! As a [`ClusterStore`] it is the only replica: it owns every WHEP session and lease.
//! Zones and lines edited over the API survive a restart when it keeps them in a file
//! ([`MemoryStore::with_geometry_file`], `{data_dir}/geometry.json`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use parking_lot::RwLock;
use tokio::sync::broadcast;

use super::store::{ClusterStore, Geometry, StartParams, StateEvent, StateStore, StreamRecord, apply};
use crate::core::Error;

/// Events buffered per subscriber before it lags (and must re-read the store).
const EVENT_BUFFER: usize = 1024;

/// The single-process store: a map behind a lock, changes on a broadcast channel.
#[derive(Debug)]
pub struct MemoryStore {
    records: RwLock<HashMap<String, StreamRecord>>,
    events: broadcast::Sender<StateEvent>,
    geometry: RwLock<HashMap<String, Geometry>>,
    geometry_events: broadcast::Sender<Geometry>,
    /// Where geometry is kept across restarts, if anywhere.
    geometry_file: Option<PathBuf>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            records: RwLock::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            geometry: RwLock::default(),
            geometry_events: broadcast::channel(EVENT_BUFFER).0,
            geometry_file: None,
        }
    }
}

impl MemoryStore {
    /// A store that keeps zones and lines in `path` (JSON, replaced atomically on each write)
    /// and starts with what it holds. A missing file is an empty one; an unreadable one is
    /// logged and left alone (it is not overwritten until the next edit).
    pub fn with_geometry_file(path: &Path) -> MemoryStore {
        let store = MemoryStore { geometry_file: Some(path.to_owned()), ..MemoryStore::default() };
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<HashMap<String, Geometry>>(&bytes) {
                Ok(held) => *store.geometry.write() = held,
                Err(e) => tracing::error!(file = %path.display(), error = %e, "zones and lines file unreadable; the config's apply"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot read the zones and lines file; the config's apply"),
        }
        store
    }

    /// Writes all geometry to the file (a temporary file renamed over it).
    fn save(&self, all: &HashMap<String, Geometry>) -> Result<(), Error> {
        let Some(path) = &self.geometry_file else { return Ok(()) };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(all).map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| Error::StoreUnavailable { cause: format!("cannot write {}: {e}", path.display()) })
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ensure(&self, initial: StreamRecord) -> Result<StreamRecord, Error> {
        let mut records = self.records.write();
        Ok(records.entry(initial.id.clone()).or_insert(initial).clone())
    }

    async fn get(&self, id: &str) -> Result<StreamRecord, Error> {
        let records = self.records.read();
        records.get(id).cloned().ok_or_else(|| Error::UnknownStream { stream: id.to_owned() })
    }

    async fn set_active(&self, id: &str, active: bool, params: StartParams, by: &str) -> Result<StreamRecord, Error> {
        let mut records = self.records.write();
        let record = records.get_mut(id).ok_or_else(|| Error::UnknownStream { stream: id.to_owned() })?;
        let action = apply(record, active, params, by);
        // Sent under the lock so subscribers see writes in generation order.
        let _ = self.events.send(StateEvent { action, record: record.clone() });
        Ok(record.clone())
    }

    fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    async fn geometry(&self, stream: &str) -> Result<Option<Geometry>, Error> {
        Ok(self.geometry.read().get(stream).cloned())
    }

    async fn put_geometry(&self, geometry: &Geometry, expected: u64) -> Result<bool, Error> {
        let mut stored = self.geometry.write();
        if stored.get(&geometry.stream).map_or(0, |g| g.version) != expected {
            return Ok(false);
        }
        let old = stored.insert(geometry.stream.clone(), geometry.clone());
        if let Err(e) = self.save(&stored) {
            // Not kept: undo, so memory and file agree, and answer 503.
            match old {
                Some(old) => stored.insert(geometry.stream.clone(), old),
                None => stored.remove(&geometry.stream),
            };
            return Err(e);
        }
        let _ = self.geometry_events.send(geometry.clone());
        Ok(true)
    }

    fn subscribe_geometry(&self) -> broadcast::Receiver<Geometry> {
        self.geometry_events.subscribe()
    }
}

impl ClusterStore for MemoryStore {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Action;

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
        assert!(matches!(store.get("nope").await, Err(Error::UnknownStream { .. })));
        assert!(matches!(store.set_active("nope", true, StartParams::default(), "r").await, Err(Error::UnknownStream { .. })));
    }
}
