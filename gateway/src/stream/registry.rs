//! All streams of this gateway, and how their state follows the store.
//!
//! State flows one way: API → [`StateStore`] → store events → [`StreamRuntime::apply`] →
//! `watch` channels that feeds and the pull supervisors follow. Every replica does the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use super::pull;
use super::runtime::StreamRuntime;
use super::viewers::ViewerBudget;
use crate::config::{Config, LineConfig, MAX_GEOMETRY_PER_STREAM, ZoneConfig};
use crate::core::clock::now_ms;
use crate::core::shutdown::Shutdown;
use crate::core::task::restart_on_panic;
use crate::core::{Error, StreamId};
use crate::source::CameraSource;
use crate::state::{Geometry, StartParams, StateStore, StreamRecord};

/// All streams of this gateway. See the module docs.
#[derive(Debug)]
pub(crate) struct Streams {
    map: BTreeMap<StreamId, Arc<StreamRuntime>>,
    store: Arc<dyn StateStore>,
    replica_id: String,
    /// The per-stream pull supervisors; they end when the gateway shuts down.
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl Streams {
    /// Registers every configured stream in the store (keeping existing records), then starts
    /// the pull supervisors (pulling from `source`) and the task that applies store events.
    ///
    /// Errors: the store's, when it cannot be reached.
    pub(crate) async fn start(
        config: &Config,
        store: Arc<dyn StateStore>,
        replica_id: String,
        source: Arc<dyn CameraSource>,
        shutdown: Shutdown,
    ) -> Result<Arc<Streams>, Error> {
        let budget = ViewerBudget::new(&config.limits);
        let mut map = BTreeMap::new();
        for s in &config.streams {
            let initial = StreamRecord {
                id: s.id.clone(),
                active: s.active,
                fps: s.fps,
                quality: s.quality,
                started_at_ms: s.active.then(now_ms),
                updated_at_ms: now_ms(),
                updated_by: replica_id.clone(),
                generation: 1,
            };
            let record = store.ensure(initial).await?;
            let rt = StreamRuntime::new(s.clone(), record, budget.clone(), shutdown.clone());
            if let Some(g) = store.geometry(&s.id).await? {
                info!(stream = %s.id, version = g.version, zones = g.zones.len(), lines = g.lines.len(), "zones and lines from the store (edited over the API) replace the config's");
                rt.apply_geometry(g);
            }
            map.insert(rt.id.clone(), rt);
        }
        let streams = Arc::new(Streams { map, store, replica_id, supervisors: Mutex::default() });
        let supervisors = streams
            .map
            .values()
            .map(|rt| {
                let span = tracing::info_span!("stream", id = %rt.id);
                let (rt, ingest, source) = (rt.clone(), config.ingest.clone(), source.clone());
                let supervise = async move {
                    let id = rt.config.id.clone();
                    let until = rt.shutdown();
                    restart_on_panic("stream_supervisor", &id, until, || pull::supervise(rt.clone(), ingest.clone(), source.clone())).await
                };
                tokio::spawn(supervise.instrument(span))
            })
            .collect();
        *streams.supervisors.lock() = supervisors;
        tokio::spawn(streams.clone().follow_store());
        tokio::spawn(streams.clone().follow_geometry());
        Ok(streams)
    }

    /// Waits for every stream to stop pulling after shutdown began.
    pub(crate) async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.supervisors.lock());
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Applies store events to the runtimes; after a lag, re-reads every record.
    async fn follow_store(self: Arc<Self>) {
        let mut events = self.store.subscribe();
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(rt) = self.map.get(event.record.id.as_str()) {
                        rt.apply(event.record);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for (id, rt) in &self.map {
                        match self.store.get(id).await {
                            Ok(r) => {
                                rt.apply(r);
                            }
                            Err(e) => warn!(stream = %id, error = %e, "cannot re-read stream state"),
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Applies stored zones and lines (this replica's writes and the others') to the
    /// runtimes; after a lag, re-reads them.
    async fn follow_geometry(self: Arc<Self>) {
        let mut writes = self.store.subscribe_geometry();
        loop {
            match writes.recv().await {
                Ok(g) => {
                    if let Some(rt) = self.map.get(g.stream.as_str()) {
                        rt.apply_geometry(g);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    for (id, rt) in &self.map {
                        match self.store.geometry(id).await {
                            Ok(Some(g)) => {
                                rt.apply_geometry(g);
                            }
                            Ok(None) => {}
                            Err(e) => warn!(stream = %id, error = %e, "cannot re-read zones and lines"),
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Changes `id`'s zones and lines with `edit` (which may refuse with an error), checks the
    /// result (ids, geometry, at most [`MAX_GEOMETRY_PER_STREAM`] each) and stores it
    /// compare-and-set, editing again when another write came first. Returns what `edit`
    /// returned and the stored geometry.
    ///
    /// Errors: unknown stream, `edit`'s error, invalid geometry (400), too many (413), the
    /// store's.
    pub(crate) async fn edit_geometry<T>(
        &self,
        id: &str,
        edit: impl Fn(&mut Vec<ZoneConfig>, &mut Vec<LineConfig>) -> Result<T, Error>,
    ) -> Result<(T, Arc<Geometry>), Error> {
        let rt = self.require(id)?;
        for _ in 0..8 {
            let held = match self.store.geometry(id).await? {
                Some(g) => g,
                None => (*rt.geometry()).clone(),
            };
            let (mut zones, mut lines) = (held.zones.clone(), held.lines.clone());
            let out = edit(&mut zones, &mut lines)?;
            if zones.len() > MAX_GEOMETRY_PER_STREAM || lines.len() > MAX_GEOMETRY_PER_STREAM {
                return Err(Error::GeometryLimit { stream: id.to_owned(), max: MAX_GEOMETRY_PER_STREAM });
            }
            let mut check = rt.config.clone();
            (check.zones, check.lines) = (zones.clone(), lines.clone());
            check.validate_geometry().map_err(Error::BadRequest)?;
            let next = Geometry {
                stream: id.to_owned(),
                zones,
                lines,
                version: held.version + 1,
                updated_at_ms: now_ms(),
                updated_by: self.replica_id.clone(),
            };
            if self.store.put_geometry(&next, held.version).await? {
                info!(stream = %id, version = next.version, zones = next.zones.len(), lines = next.lines.len(), "zones and lines changed");
                rt.apply_geometry(next);
                return Ok((out, rt.geometry()));
            }
        }
        Err(Error::StoreUnavailable { cause: format!("zones and lines of {id:?}: too many concurrent writes; retry") })
    }

    /// One stream.
    pub(crate) fn get(&self, id: &str) -> Option<&Arc<StreamRuntime>> {
        self.map.get(id)
    }

    /// One stream, or [`Error::UnknownStream`].
    pub(crate) fn require(&self, id: &str) -> Result<&Arc<StreamRuntime>, Error> {
        self.get(id).ok_or_else(|| Error::UnknownStream { stream: id.to_owned() })
    }

    /// All streams in id order.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<StreamRuntime>> {
        self.map.values()
    }

    /// Starts or stops a stream through the store and applies the result here at once.
    pub(crate) async fn set_active(&self, id: &str, active: bool, params: StartParams) -> Result<Arc<StreamRuntime>, Error> {
        let rt = self.require(id)?;
        let record = self.store.set_active(id, active, params, &self.replica_id).await?;
        info!(stream = %id, active, generation = record.generation, "stream state changed");
        rt.apply(record);
        Ok(rt.clone())
    }
}
