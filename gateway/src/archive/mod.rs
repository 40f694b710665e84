//! Analytics event storage (issue #13): every event detection's trackers make is stored, with
//! a snapshot JPEG of its frame (the object's box drawn), in SQLite (`{data_dir}/events.db`,
//! the default) or PostgreSQL (`events.database_url`, shared by replicas), and deleted by age
//! and count per stream.
//!
//! Events reach the archive through a bounded queue ([`EventFanout::attach_archive`]); one
//! writer task encodes snapshots (on the blocking pool), stores a batch per transaction and
//! retries while the database is down (events wait in the queue; a full queue is counted and
//! logged). Ids are the events' stable ids: storing the same event twice keeps one row. Live
//! subscribers and MQTT do not wait for the database.
//!
//! - [`db`]: the SQL, one text for both backends, and the migrations.

pub(crate) mod db;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, mpsc};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use self::db::NewRow;
pub(crate) use self::db::{Db, EventQuery, EventRecord, LineCount, Segment, ZoneCount};
use crate::config::redact::redact_url;
use crate::config::{Config, EventsConfig};
use crate::core::Error;
use crate::core::clock::now_ms;
use crate::core::events::{EventFanout, Recorded};
use crate::core::shutdown::Shutdown;
use crate::pipeline::snapshot::snapshot_jpeg;

/// Events waiting for the database, at most (~7 minutes of 25 events/s).
const QUEUE: usize = 10_000;
/// Events stored per transaction, at most.
const BATCH: usize = 256;
/// How often old events are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// On shutdown, how long queued events may take to reach the database.
const DRAIN: Duration = Duration::from_secs(3);

/// The event archive. See the module docs.
#[derive(Debug)]
pub(crate) struct Archive {
    /// Set once the database is open and migrated.
    db: Arc<OnceCell<Db>>,
    /// The writer; ends after shutdown, once the queue is drained.
    writer: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Archive {
    /// Opens the configured database in the background (retrying until it answers), attaches
    /// the archive to `fanout` and stores what it publishes until `shutdown`.
    pub(crate) fn start(config: &Config, replica: &str, fanout: &EventFanout, shutdown: Shutdown) -> Arc<Archive> {
        let (tx, rx) = mpsc::channel(QUEUE);
        fanout.attach_archive(tx, config.events.snapshot_quality > 0);
        let db = Arc::new(OnceCell::new());
        let writer = Writer { db: db.clone(), config: config.events.clone(), replica: replica.to_owned(), rx };
        let handle = tokio::spawn(writer.run(config.data_dir.clone(), shutdown));
        Arc::new(Archive { db, writer: parking_lot::Mutex::new(Some(handle)) })
    }

    /// The open database, or 503.
    fn db(&self) -> Result<&Db, Error> {
        self.db.get().ok_or_else(|| Error::EventsUnavailable { cause: "the event database is not open yet".into() })
    }

    /// Events matching `q`, newest first.
    pub(crate) async fn list(&self, q: &EventQuery) -> Result<Vec<EventRecord>, Error> {
        self.db()?.list(q).await.map_err(unavailable)
    }

    /// The event `id`.
    pub(crate) async fn get(&self, id: &str) -> Result<EventRecord, Error> {
        self.db()?.get(id).await.map_err(unavailable)?.ok_or_else(|| Error::unknown_event("event", id))
    }

    /// The snapshot JPEG of event `id`.
    pub(crate) async fn snapshot(&self, id: &str) -> Result<Vec<u8>, Error> {
        self.db()?.snapshot(id).await.map_err(unavailable)?.ok_or_else(|| Error::unknown_event("snapshot of event", id))
    }

    /// `stream`'s line crossings and zone events in `[from_ms, to_ms)` per `bucket_ms`.
    pub(crate) async fn counts(
        &self,
        stream: &str,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<(Vec<LineCount>, Vec<ZoneCount>), Error> {
        self.db()?.counts(stream, from_ms, to_ms, bucket_ms).await.map_err(unavailable)
    }

    /// The database once it is open (recordings keep their index in it); `None` if the
    /// archive stopped (shutdown) before it opened.
    pub(crate) async fn database(&self, mut shutdown: Shutdown) -> Option<Db> {
        loop {
            if let Some(db) = self.db.get() {
                return Some(db.clone());
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = shutdown.wait() => return None,
            }
        }
    }

    /// The open database, or 503 (for requests).
    pub(crate) fn open_database(&self) -> Result<&Db, Error> {
        self.db()
    }

    /// Resolves when the writer has stored what was queued at shutdown (or given up).
    pub(crate) async fn stopped(&self) {
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::EventsUnavailable { cause: e.to_string() }
}

/// The task that owns the queue's receiving end.
struct Writer {
    db: Arc<OnceCell<Db>>,
    config: EventsConfig,
    replica: String,
    rx: mpsc::Receiver<Recorded>,
}

impl Writer {
    async fn run(mut self, data_dir: std::path::PathBuf, mut shutdown: Shutdown) {
        let db = tokio::select! {
            db = self.open(&data_dir) => db,
            () = shutdown.wait() => return,
        };
        let _ = self.db.set(db.clone());
        let prune = tokio::spawn(prune(db.clone(), self.config.clone(), shutdown.clone()));
        loop {
            let first = tokio::select! {
                r = self.rx.recv() => r,
                () = shutdown.wait() => break,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < BATCH
                && let Ok(r) = self.rx.try_recv()
            {
                batch.push(r);
            }
            self.store(&db, batch, None).await;
        }
        // Shutdown: what is queued now goes in, for a few seconds at most.
        let deadline = Instant::now() + DRAIN;
        loop {
            let mut batch = Vec::new();
            while batch.len() < BATCH
                && let Ok(r) = self.rx.try_recv()
            {
                batch.push(r);
            }
            if batch.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.store(&db, batch, Some(deadline)).await;
        }
        debug!("event archive drained");
        prune.abort();
    }

    /// Opens the database, retrying with backoff until it answers.
    async fn open(&self, data_dir: &std::path::Path) -> Db {
        let mut delay = Duration::from_millis(500);
        let mut logged = false;
        loop {
            let opened = match &self.config.database_url {
                Some(url) => Db::postgres(url).await,
                None => Db::sqlite(data_dir).await,
            };
            let place = match &self.config.database_url {
                Some(url) => redact_url(url),
                None => data_dir.join("events.db").display().to_string(),
            };
            match opened {
                Ok(db) => {
                    info!(backend = db.backend(), database = %place, "event archive open");
                    return db;
                }
                Err(e) => {
                    if !logged {
                        error!(database = %place, error = %e, "event archive cannot open its database; events are live only until it can (retrying)");
                        logged = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Encodes the batch's snapshots and stores it, retrying while the database fails (until
    /// `deadline`, if any).
    async fn store(&self, db: &Db, batch: Vec<Recorded>, deadline: Option<Instant>) {
        let quality = self.config.snapshot_quality;
        let Ok(jpegs) = tokio::task::spawn_blocking(move || {
            let jpegs = snapshots(&batch, quality);
            (batch, jpegs)
        })
        .await
        else {
            return;
        };
        let (batch, jpegs) = jpegs;
        let rows: Vec<NewRow<'_>> =
            batch.iter().zip(&jpegs).map(|(r, jpeg)| NewRow { event: &r.event, jpeg: jpeg.as_ref().map(|j| &j[..]) }).collect();
        let mut delay = Duration::from_millis(200);
        let mut logged = false;
        loop {
            let started = Instant::now();
            match db.insert(&rows, &self.replica, now_ms()).await {
                Ok(new) => {
                    metrics::histogram!("sightline_events_db_write_seconds", "backend" => db.backend())
                        .record(started.elapsed().as_secs_f64());
                    for r in &batch {
                        metrics::counter!("sightline_events_stored_total", "stream" => r.event.event.stream.clone()).increment(1);
                    }
                    if new < rows.len() as u64 {
                        debug!(already = rows.len() as u64 - new, "events already stored (made again after a failover) kept once");
                    }
                    if logged {
                        info!(backend = db.backend(), "event archive writes again");
                    }
                    return;
                }
                Err(e) => {
                    metrics::counter!("sightline_events_db_errors_total", "backend" => db.backend()).increment(1);
                    if !logged {
                        let stream = batch.first().map(|r| r.event.event.stream.clone()).unwrap_or_default();
                        warn!(backend = db.backend(), stream = %stream, events = rows.len(), error = %e, "cannot store events; retrying (they wait in the queue)");
                        logged = true;
                    }
                    if deadline.is_some_and(|d| Instant::now() + delay > d) {
                        error!(events = rows.len(), "shutting down with events the database did not take");
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// One JPEG per event that has a picture, encoded once per frame and object (events of the
/// same object on the same frame share it).
fn snapshots(batch: &[Recorded], quality: u8) -> Vec<Option<Arc<Vec<u8>>>> {
    // Per (stream, frame seq, track id).
    type Shared = Option<Arc<Vec<u8>>>;
    let mut made: HashMap<(String, u64, u64), Shared> = HashMap::new();
    batch
        .iter()
        .map(|r| {
            let picture = r.picture.as_ref().filter(|_| quality > 0)?;
            let e = &r.event.event;
            let key = (e.stream.clone(), e.seq, e.track_id);
            made.entry(key)
                .or_insert_with(|| {
                    let started = Instant::now();
                    match snapshot_jpeg(picture, e.bbox, quality) {
                        Ok(jpeg) => {
                            metrics::histogram!("sightline_event_snapshot_seconds").record(started.elapsed().as_secs_f64());
                            Some(Arc::new(jpeg))
                        }
                        Err(err) => {
                            warn!(stream = %e.stream, id = %r.event.id, error = %err, "event snapshot not made");
                            None
                        }
                    }
                })
                .clone()
        })
        .collect()
}

/// Deletes old events every [`PRUNE_EVERY`] (and once at start).
async fn prune(db: Db, config: EventsConfig, mut shutdown: Shutdown) {
    loop {
        let before = now_ms().saturating_sub(config.max_age.as_millis() as u64);
        match db.prune(before, config.max_per_stream).await {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, "old events deleted (events.max_age, events.max_per_stream)"),
            Err(e) => warn!(error = %e, "cannot delete old events; retrying later"),
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests;
