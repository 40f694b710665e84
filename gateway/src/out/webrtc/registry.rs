//! The WHEP sessions this replica owns: which stream and event loop each belongs to, and its
//! ICE ETag. Shared by the HTTP side (create, PATCH, DELETE) and the loops (which remove
//! sessions that end). Ownership is published in the cluster store so other replicas can
//! redirect PATCH/DELETE here (`sightline:whep:{session}`, refreshed before its TTL lapses).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use signaling::whep::{ETag, SessionId};

use crate::core::StreamId;
use crate::state::ClusterStore;

/// How often this replica re-announces the WHEP sessions it owns.
const OWNERSHIP_REFRESH: Duration = Duration::from_secs(10);

/// One session's place.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The stream it watches.
    pub(crate) stream: StreamId,
    /// The event loop serving it.
    pub(crate) loop_index: usize,
    /// Its current ICE ETag (changes on every ICE restart).
    pub(crate) etag: ETag,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<SessionId, Entry>>,
    /// Where session ownership is published for other replicas.
    cluster: Arc<dyn ClusterStore>,
}

impl Registry {
    /// An empty registry publishing ownership in `cluster`.
    pub(crate) fn new(cluster: Arc<dyn ClusterStore>) -> Arc<Registry> {
        Arc::new(Registry { sessions: Mutex::default(), cluster })
    }

    /// The cluster store.
    pub(crate) fn cluster(&self) -> &Arc<dyn ClusterStore> {
        &self.cluster
    }

    /// Registers a session (ownership is claimed by the caller once the loop has it).
    pub(crate) fn insert(&self, id: SessionId, entry: Entry) {
        self.sessions.lock().insert(id, entry);
        metrics::gauge!("sightline_webrtc_sessions").set(self.len() as f64);
    }

    /// Registers a session whose creation is still under way: it is forgotten again when the
    /// returned guard drops (the creating request was cancelled) unless [`Pending::keep`]
    /// was called (an event loop owns the session, and removes it when it ends).
    pub(crate) fn insert_pending(&self, id: SessionId, entry: Entry) -> Pending<'_> {
        self.insert(id, entry);
        Pending { registry: self, id, kept: false }
    }

    /// Forgets a session and releases its ownership key.
    pub(crate) fn remove(&self, id: &SessionId) {
        let removed = self.sessions.lock().remove(id).is_some();
        metrics::gauge!("sightline_webrtc_sessions").set(self.len() as f64);
        if removed {
            let cluster = self.cluster.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                let _ = cluster.release_whep_session(&id).await;
            });
        }
    }

    /// Gives a session a new ETag (after an ICE restart).
    pub(crate) fn set_etag(&self, id: &SessionId, etag: ETag) {
        if let Some(e) = self.sessions.lock().get_mut(id) {
            e.etag = etag;
        }
    }

    /// Re-announces every session this replica owns, every [`OWNERSHIP_REFRESH`] (their
    /// ownership keys have a TTL). Runs until the task is dropped.
    pub(crate) async fn refresh_ownership(self: Arc<Self>) {
        loop {
            tokio::time::sleep(OWNERSHIP_REFRESH).await;
            let ids: Vec<SessionId> = self.sessions.lock().keys().copied().collect();
            for id in ids {
                if let Err(e) = self.cluster.claim_whep_session(&id.to_string()).await {
                    tracing::debug!(session = %id, error = %e, "cannot refresh WHEP session ownership");
                }
            }
        }
    }

    /// Number of sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// One session's place.
    pub(crate) fn get(&self, id: &SessionId) -> Option<Entry> {
        self.sessions.lock().get(id).cloned()
    }
}

/// See [`Registry::insert_pending`].
#[derive(Debug)]
pub(crate) struct Pending<'a> {
    registry: &'a Registry,
    id: SessionId,
    kept: bool,
}

impl Pending<'_> {
    /// The session stays registered.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.registry.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn sessions_are_counted_and_forgotten() {
        let r = Registry::new(Arc::new(MemoryStore::default()));
        let entry = |stream: &str| Entry { stream: stream.into(), loop_index: 0, etag: ETag::from_random(1) };
        let (a, b) = (SessionId::from_random(1), SessionId::from_random(2));
        r.insert(a, entry("cam"));
        r.insert(b, entry("door"));
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(&b).unwrap().stream, "door");
        r.set_etag(&a, ETag::from_random(9));
        assert_eq!(r.get(&a).unwrap().etag, ETag::from_random(9));
        r.remove(&a);
        r.remove(&a);
        assert!(r.get(&a).is_none());
        assert_eq!(r.len(), 1);
        let c = SessionId::from_random(3);
        drop(r.insert_pending(c, entry("cam")));
        assert!(r.get(&c).is_none(), "a cancelled creation leaves nothing behind");
        r.insert_pending(c, entry("cam")).keep();
        assert!(r.get(&c).is_some());
    }
}
