//! The event database: one SQL text for SQLite and PostgreSQL where the dialects agree
//! (`$N` parameters, `ON CONFLICT DO NOTHING`, BIGINT milliseconds), a pool per backend, and
//! migrations embedded from `gateway/migrations/{sqlite,postgres}` (sqlx `migrate!`).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, QueryBuilder};

use crate::core::events::{AnalyticsEvent, EventBox};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The connection pool of the configured backend.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    /// `{data_dir}/events.db`, WAL journal: one writer, readers beside it.
    Sqlite(SqlitePool),
    /// `events.database_url`, shared by replicas.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool (the same code, typed per backend).
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

const INSERT_EVENT: &str = "INSERT INTO events (id, stream, kind, label, track_id, line, direction, zone, inside_ms, \
     ts_ms, seq, rtp_timestamp, box_x, box_y, box_w, box_h, snapshot_bytes, replica, stored_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (id) DO UPDATE SET snapshot_bytes = excluded.snapshot_bytes \
     WHERE events.snapshot_bytes = 0 AND excluded.snapshot_bytes > 0";
const INSERT_SNAPSHOT: &str = "INSERT INTO event_snapshots (id, jpeg) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
const COLUMNS: &str = "id, stream, kind, label, track_id, line, direction, zone, inside_ms, ts_ms, seq, rtp_timestamp, \
     box_x, box_y, box_w, box_h, snapshot_bytes";

/// An event to store, with its snapshot JPEG.
#[derive(Debug)]
pub(crate) struct NewRow<'a> {
    pub(crate) event: &'a AnalyticsEvent,
    pub(crate) jpeg: Option<&'a [u8]>,
}

/// A stored event as the API returns it: the live event's fields, `snapshot` the URL of its
/// JPEG (or `null`).
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct EventRecord {
    /// Stable id, 16 hex digits.
    pub(crate) id: String,
    /// `line_crossed`, `zone_enter`, `zone_exit`, `loitering`, `object_appeared`, `object_left`.
    pub(crate) kind: String,
    /// The stream.
    pub(crate) stream: String,
    /// The object's class label.
    pub(crate) label: String,
    /// The object's track id (numbered by the replica that made the event).
    pub(crate) track_id: u64,
    /// The line crossed (`line_crossed`).
    pub(crate) line: Option<String>,
    /// `in` or `out` (`line_crossed`).
    pub(crate) direction: Option<String>,
    /// The zone (`zone_*`, `loitering`).
    pub(crate) zone: Option<String>,
    /// Time inside the zone, ms (`loitering`).
    pub(crate) inside_ms: Option<u64>,
    /// Capture time of the frame, ms since the Unix epoch.
    pub(crate) ts_ms: u64,
    /// The frame's sequence number (the making replica's numbering).
    pub(crate) seq: u64,
    /// The frame's RTP timestamp (90 kHz).
    pub(crate) rtp_timestamp: u32,
    /// The object's box, 0..1 of the picture.
    #[serde(rename = "box")]
    pub(crate) bbox: Option<EventBox>,
    /// `/api/events/{id}/snapshot.jpg`, or `null` without a snapshot.
    pub(crate) snapshot: Option<String>,
}

#[derive(FromRow)]
struct EventRow {
    id: String,
    stream: String,
    kind: String,
    label: String,
    track_id: i64,
    line: Option<String>,
    direction: Option<String>,
    zone: Option<String>,
    inside_ms: Option<i64>,
    ts_ms: i64,
    seq: i64,
    rtp_timestamp: i64,
    box_x: Option<f64>,
    box_y: Option<f64>,
    box_w: Option<f64>,
    box_h: Option<f64>,
    snapshot_bytes: i64,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> EventRecord {
        let bbox = match (r.box_x, r.box_y, r.box_w, r.box_h) {
            (Some(x), Some(y), Some(w), Some(h)) => Some(EventBox { x: x as f32, y: y as f32, w: w as f32, h: h as f32 }),
            _ => None,
        };
        EventRecord {
            snapshot: (r.snapshot_bytes > 0).then(|| format!("/api/events/{}/snapshot.jpg", r.id)),
            id: r.id,
            kind: r.kind,
            stream: r.stream,
            label: r.label,
            track_id: r.track_id as u64,
            line: r.line,
            direction: r.direction,
            zone: r.zone,
            inside_ms: r.inside_ms.map(|v| v as u64),
            ts_ms: r.ts_ms as u64,
            seq: r.seq as u64,
            rtp_timestamp: r.rtp_timestamp as u32,
            bbox,
        }
    }
}

/// Which events to list, newest first. Every given filter must match.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventQuery {
    /// Only these streams (a viewer token's); `None`: any.
    pub(crate) scope: Option<Vec<String>>,
    pub(crate) stream: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) line: Option<String>,
    /// From this capture time, ms (inclusive).
    pub(crate) from_ms: Option<u64>,
    /// Before this capture time, ms (exclusive).
    pub(crate) to_ms: Option<u64>,
    /// Older than this `(ts_ms, id)`: the page after the one that ended there.
    pub(crate) before: Option<(u64, String)>,
    /// Most events to return.
    pub(crate) limit: u32,
}

/// Line crossings of one line, label and direction in one time bucket.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct LineCount {
    /// The line.
    pub(crate) line: String,
    /// The objects' class label.
    pub(crate) label: String,
    /// `in` or `out`.
    pub(crate) direction: String,
    /// Start of the bucket, ms since the Unix epoch.
    pub(crate) start_ms: u64,
    /// Crossings.
    pub(crate) count: u64,
}

/// What objects of one label did in one zone in one time bucket.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct ZoneCount {
    /// The zone.
    pub(crate) zone: String,
    /// The objects' class label.
    pub(crate) label: String,
    /// Start of the bucket, ms since the Unix epoch.
    pub(crate) start_ms: u64,
    /// Objects that entered.
    pub(crate) entered: u64,
    /// Objects that left.
    pub(crate) exited: u64,
    /// Objects that stayed longer than the zone's `dwell`.
    pub(crate) loitering: u64,
}

impl Db {
    /// Opens (creating `dir` and the file when missing) `{dir}/events.db` and migrates it.
    pub(crate) async fn sqlite(dir: &Path) -> Result<Db, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data_dir {}: {e}", dir.display()))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("events.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(|e| format!("SQLite: {e}"))?;
        SQLITE_MIGRATIONS.run(&pool).await.map_err(|e| format!("SQLite migrations: {e}"))?;
        Ok(Db::Sqlite(pool))
    }

    /// Connects to PostgreSQL at `url` and migrates (replicas starting together take turns:
    /// sqlx holds an advisory lock while migrating). Errors never show the URL.
    pub(crate) async fn postgres(url: &str) -> Result<Db, String> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        POSTGRES_MIGRATIONS.run(&pool).await.map_err(|e| format!("PostgreSQL migrations: {e}"))?;
        Ok(Db::Postgres(pool))
    }

    /// `gateway doctor`: reaches the database without changing it (no file created, no
    /// migration run) and counts the schema migrations applied against those this build
    /// knows. `url`: PostgreSQL, else SQLite at `{dir}/events.db`. Returns (backend,
    /// applied, known); applied is 0 for a database not created yet. Errors: unreachable,
    /// refused, not a database; messages never show the URL.
    pub(crate) async fn migration_status(dir: &Path, url: Option<&str>) -> Result<(&'static str, usize, usize), String> {
        const APPLIED: &str = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let missing_table = |e: &sqlx::Error| e.to_string().contains("_sqlx_migrations");
        match url {
            Some(url) => {
                let known = POSTGRES_MIGRATIONS.iter().count();
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?;
                let applied = match sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(&pool).await {
                    Ok(n) => n as usize,
                    Err(e) if missing_table(&e) => 0,
                    Err(e) => return Err(format!("PostgreSQL: {e}")),
                };
                pool.close().await;
                Ok(("postgres", applied, known))
            }
            None => {
                let known = SQLITE_MIGRATIONS.iter().count();
                let path = dir.join("events.db");
                if !path.exists() {
                    return Ok(("sqlite", 0, known));
                }
                let options = SqliteConnectOptions::new().filename(&path).read_only(true).busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(|e| format!("SQLite: {e}"))?;
                let applied = match sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(&pool).await {
                    Ok(n) => n as usize,
                    Err(e) if missing_table(&e) => 0,
                    Err(e) => return Err(format!("SQLite {}: {e}", path.display())),
                };
                pool.close().await;
                Ok(("sqlite", applied, known))
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Stores `rows` in one transaction; an id already stored is left as it is (the same
    /// event made again: by a replica following the lease holder, or after a failover),
    /// except that a row stored without a snapshot takes this one's. Returns how many rows
    /// were written.
    pub(crate) async fn insert(&self, rows: &[NewRow<'_>], replica: &str, now_ms: u64) -> Result<u64, sqlx::Error> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut new = 0;
            for row in rows {
                let (e, n) = (row.event, &row.event.event);
                let b = n.bbox;
                let done = sqlx::query(INSERT_EVENT)
                    .bind(&e.id)
                    .bind(&n.stream)
                    .bind(n.kind.as_str())
                    .bind(&n.label)
                    .bind(n.track_id as i64)
                    .bind(n.line.as_deref())
                    .bind(n.direction)
                    .bind(n.zone.as_deref())
                    .bind(n.inside_ms.map(|v| v as i64))
                    .bind(n.ts_ms as i64)
                    .bind(n.seq as i64)
                    .bind(i64::from(n.rtp_timestamp))
                    .bind(b.map(|b| f64::from(b.x)))
                    .bind(b.map(|b| f64::from(b.y)))
                    .bind(b.map(|b| f64::from(b.w)))
                    .bind(b.map(|b| f64::from(b.h)))
                    .bind(row.jpeg.map_or(0, |j| j.len() as i64))
                    .bind(replica)
                    .bind(now_ms as i64)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    continue;
                }
                new += 1;
                if let Some(jpeg) = row.jpeg {
                    sqlx::query(INSERT_SNAPSHOT).bind(&e.id).bind(jpeg).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Events matching `q`, newest first (`ts_ms`, then `id`, descending).
    pub(crate) async fn list(&self, q: &EventQuery) -> Result<Vec<EventRecord>, sqlx::Error> {
        if q.scope.as_ref().is_some_and(|s| s.is_empty()) {
            return Ok(Vec::new());
        }
        on_pool!(self, pool => {
            let mut b = QueryBuilder::new(format!("SELECT {COLUMNS} FROM events WHERE 1 = 1"));
            if let Some(scope) = &q.scope {
                b.push(" AND stream IN (");
                let mut list = b.separated(", ");
                for s in scope {
                    list.push_bind(s.clone());
                }
                b.push(")");
            }
            for (column, value) in [("stream", &q.stream), ("kind", &q.kind), ("label", &q.label), ("zone", &q.zone), ("line", &q.line)] {
                if let Some(v) = value {
                    b.push(format!(" AND {column} = ")).push_bind(v.clone());
                }
            }
            if let Some(from) = q.from_ms {
                b.push(" AND ts_ms >= ").push_bind(from as i64);
            }
            if let Some(to) = q.to_ms {
                b.push(" AND ts_ms < ").push_bind(to as i64);
            }
            if let Some((ts, id)) = &q.before {
                b.push(" AND (ts_ms < ").push_bind(*ts as i64);
                b.push(" OR (ts_ms = ").push_bind(*ts as i64).push(" AND id < ").push_bind(id.clone()).push("))");
            }
            b.push(" ORDER BY ts_ms DESC, id DESC LIMIT ").push_bind(i64::from(q.limit));
            let rows: Vec<EventRow> = b.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(EventRecord::from).collect())
        })
    }

    /// The event `id`, if stored.
    pub(crate) async fn get(&self, id: &str) -> Result<Option<EventRecord>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE id = $1");
        on_pool!(self, pool => {
            let row: Option<EventRow> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
            Ok(row.map(EventRecord::from))
        })
    }

    /// The snapshot JPEG of event `id`, if stored.
    pub(crate) async fn snapshot(&self, id: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        on_pool!(self, pool => {
            let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT jpeg FROM event_snapshots WHERE id = $1").bind(id).fetch_optional(pool).await?;
            Ok(row.map(|(jpeg,)| jpeg))
        })
    }

    /// `stream`'s line crossings and zone events in `[from_ms, to_ms)`, per `bucket_ms` from
    /// `from_ms`, in time order.
    pub(crate) async fn counts(
        &self,
        stream: &str,
        from_ms: u64,
        to_ms: u64,
        bucket_ms: u64,
    ) -> Result<(Vec<LineCount>, Vec<ZoneCount>), sqlx::Error> {
        const LINES: &str = "SELECT COALESCE(line, '') AS line, label, COALESCE(direction, '') AS direction, \
             (ts_ms - $2) / $3 AS bucket, COUNT(*) AS n FROM events \
             WHERE stream = $1 AND kind = 'line_crossed' AND ts_ms >= $2 AND ts_ms < $4 \
             GROUP BY line, label, direction, bucket ORDER BY bucket, line, label, direction";
        const ZONES: &str = "SELECT COALESCE(zone, '') AS zone, label, (ts_ms - $2) / $3 AS bucket, \
             SUM(CASE WHEN kind = 'zone_enter' THEN 1 ELSE 0 END) AS entered, \
             SUM(CASE WHEN kind = 'zone_exit' THEN 1 ELSE 0 END) AS exited, \
             SUM(CASE WHEN kind = 'loitering' THEN 1 ELSE 0 END) AS loitering FROM events \
             WHERE stream = $1 AND kind IN ('zone_enter', 'zone_exit', 'loitering') AND ts_ms >= $2 AND ts_ms < $4 \
             GROUP BY zone, label, bucket ORDER BY bucket, zone, label";
        let (from, to, bucket) = (from_ms as i64, to_ms as i64, bucket_ms.max(1) as i64);
        let start = |b: i64| (from + b * bucket) as u64;
        on_pool!(self, pool => {
            let lines: Vec<(String, String, String, i64, i64)> =
                sqlx::query_as(LINES).bind(stream).bind(from).bind(bucket).bind(to).fetch_all(pool).await?;
            let zones: Vec<(String, String, i64, i64, i64, i64)> =
                sqlx::query_as(ZONES).bind(stream).bind(from).bind(bucket).bind(to).fetch_all(pool).await?;
            Ok((
                lines
                    .into_iter()
                    .map(|(line, label, direction, b, n)| LineCount { line, label, direction, start_ms: start(b), count: n as u64 })
                    .collect(),
                zones
                    .into_iter()
                    .map(|(zone, label, b, entered, exited, loitering)| ZoneCount {
                        zone,
                        label,
                        start_ms: start(b),
                        entered: entered as u64,
                        exited: exited as u64,
                        loitering: loitering as u64,
                    })
                    .collect(),
            ))
        })
    }

    /// Deletes events captured before `before_ms` and, per stream, all but the newest
    /// `max_per_stream` (their snapshots go with them). Returns how many went.
    pub(crate) async fn prune(&self, before_ms: u64, max_per_stream: u64) -> Result<u64, sqlx::Error> {
        const PER_STREAM: &str = "DELETE FROM events WHERE stream = $1 AND ts_ms < \
             (SELECT ts_ms FROM events WHERE stream = $1 ORDER BY ts_ms DESC LIMIT 1 OFFSET $2)";
        on_pool!(self, pool => {
            let mut gone = sqlx::query("DELETE FROM events WHERE ts_ms < $1").bind(before_ms as i64).execute(pool).await?.rows_affected();
            let streams: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT stream FROM events").fetch_all(pool).await?;
            for (stream,) in streams {
                let offset = i64::try_from(max_per_stream - 1).unwrap_or(i64::MAX);
                gone += sqlx::query(PER_STREAM).bind(&stream).bind(offset).execute(pool).await?.rows_affected();
            }
            Ok(gone)
        })
    }

    /// Stores or updates the index row of a recording segment.
    pub(crate) async fn upsert_segment(&self, node: &str, seg: &Segment) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO recordings (node, path, stream, start_ms, end_ms, bytes, keyframes, codec) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (node, path) DO UPDATE SET \
             end_ms = excluded.end_ms, bytes = excluded.bytes, keyframes = excluded.keyframes";
        on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(node)
                .bind(&seg.path)
                .bind(&seg.stream)
                .bind(seg.start_ms as i64)
                .bind(seg.end_ms as i64)
                .bind(seg.bytes as i64)
                .bind(seg.keyframes as i64)
                .bind(&seg.codec)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// `stream`'s segments on `node` that overlap `[from_ms, to_ms)`, oldest first (all of
    /// them with `0..u64::MAX`).
    pub(crate) async fn segments(&self, node: &str, stream: &str, from_ms: u64, to_ms: u64) -> Result<Vec<Segment>, sqlx::Error> {
        const SQL: &str = "SELECT path, stream, start_ms, end_ms, bytes, keyframes, codec FROM recordings \
             WHERE node = $1 AND stream = $2 AND end_ms > $3 AND start_ms < $4 ORDER BY start_ms";
        let (from, to) = (i64::try_from(from_ms).unwrap_or(i64::MAX), i64::try_from(to_ms).unwrap_or(i64::MAX));
        on_pool!(self, pool => {
            let rows: Vec<SegmentRow> = sqlx::query_as(SQL).bind(node).bind(stream).bind(from).bind(to).fetch_all(pool).await?;
            Ok(rows.into_iter().map(Segment::from).collect())
        })
    }

    /// Removes the index row of segment `path`.
    pub(crate) async fn delete_segment(&self, node: &str, path: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM recordings WHERE node = $1 AND path = $2").bind(node).bind(path).execute(pool).await?;
            Ok(())
        })
    }
}

/// The index row of one recording segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// `{stream}/{start_ms}.mp4`, under `{data_dir}/recordings`.
    pub(crate) path: String,
    pub(crate) stream: String,
    /// Wall-clock time of its first access unit, ms since the Unix epoch.
    pub(crate) start_ms: u64,
    /// End of its last complete fragment, ms since the Unix epoch.
    pub(crate) end_ms: u64,
    /// File size, bytes.
    pub(crate) bytes: u64,
    /// Fragments starting with a keyframe.
    pub(crate) keyframes: u64,
    /// `h264` or `h265`.
    pub(crate) codec: String,
}

#[derive(FromRow)]
struct SegmentRow {
    path: String,
    stream: String,
    start_ms: i64,
    end_ms: i64,
    bytes: i64,
    keyframes: i64,
    codec: String,
}

impl From<SegmentRow> for Segment {
    fn from(r: SegmentRow) -> Segment {
        let u = |v: i64| v.max(0) as u64;
        Segment {
            path: r.path,
            stream: r.stream,
            start_ms: u(r.start_ms),
            end_ms: u(r.end_ms),
            bytes: u(r.bytes),
            keyframes: u(r.keyframes),
            codec: r.codec,
        }
    }
}
