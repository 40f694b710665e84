//! The event database on both backends: SQLite in a temporary directory, and a PostgreSQL
//! server started here with `initdb`/`pg_ctl` on a free port (Debian's `postgresql`, installed
//! by `scripts/deps.sh test`).

use std::path::Path;
use std::time::Instant;

// The integration tests' helper, one file for both.
#[path = "../../tests/common/postgres.rs"]
#[allow(unreachable_pub, reason = "pub for the integration tests that share the file")]
mod postgres;
use postgres::Postgres;

use super::db::{Db, EventQuery, NewRow};
use crate::core::events::{AnalyticsEvent, EventBox, EventKind, NewEvent};

fn event(stream: &str, kind: EventKind, ts_ms: u64, track_id: u64, label: &str, place: &str) -> AnalyticsEvent {
    let line = (kind == EventKind::LineCrossed).then(|| place.to_owned());
    let zone = matches!(kind, EventKind::ZoneEnter | EventKind::ZoneExit | EventKind::Loitering).then(|| place.to_owned());
    AnalyticsEvent::new(NewEvent {
        kind,
        stream: stream.into(),
        label: label.into(),
        track_id,
        direction: line.as_ref().map(|_| if track_id.is_multiple_of(2) { "in" } else { "out" }),
        line,
        zone,
        inside_ms: (kind == EventKind::Loitering).then_some(12_000),
        ts_ms,
        seq: ts_ms / 40,
        rtp_timestamp: (ts_ms * 90) as u32,
        bbox: Some(EventBox { x: 0.25, y: 0.5, w: 0.125, h: 0.25 }),
    })
}

fn query() -> EventQuery {
    EventQuery { limit: 100, ..EventQuery::default() }
}

async fn ids(db: &Db, q: EventQuery) -> Vec<u64> {
    db.list(&q).await.unwrap().into_iter().map(|e| e.ts_ms).collect()
}

/// What both backends must do alike.
async fn behaves(db: &Db) {
    let evil = "'; DROP TABLE events; --";
    let events = [
        event("door", EventKind::LineCrossed, 1_000, 2, "person", "entry"),
        event("door", EventKind::LineCrossed, 2_000, 3, "person", "entry"),
        event("door", EventKind::ZoneEnter, 3_000, 2, "person", "porch"),
        event("door", EventKind::Loitering, 4_000, 2, "person", "porch"),
        event("door", EventKind::ZoneExit, 5_000, 2, "person", "porch"),
        event("yard", EventKind::LineCrossed, 6_000, 4, "car", "gate"),
        event("yard", EventKind::ObjectAppeared, 7_000, 5, evil, ""),
    ];
    let jpeg = [0xff, 0xd8, 0xff, 0xd9];
    let rows: Vec<NewRow<'_>> = events.iter().map(|e| NewRow { event: e, jpeg: (e.event.ts_ms == 1_000).then_some(&jpeg[..]) }).collect();
    assert_eq!(db.insert(&rows, "replica-1", 10).await.unwrap(), 7);
    assert_eq!(
        db.insert(&rows[..2], "replica-2", 11).await.unwrap(),
        0,
        "the same ids again (another replica after a failover): kept once"
    );

    // Newest first; every filter.
    assert_eq!(ids(db, query()).await, vec![7_000, 6_000, 5_000, 4_000, 3_000, 2_000, 1_000]);
    assert_eq!(ids(db, EventQuery { stream: Some("yard".into()), ..query() }).await, vec![7_000, 6_000]);
    assert_eq!(ids(db, EventQuery { kind: Some("line_crossed".into()), ..query() }).await, vec![6_000, 2_000, 1_000]);
    assert_eq!(ids(db, EventQuery { label: Some("car".into()), ..query() }).await, vec![6_000]);
    assert_eq!(ids(db, EventQuery { zone: Some("porch".into()), ..query() }).await, vec![5_000, 4_000, 3_000]);
    assert_eq!(ids(db, EventQuery { line: Some("entry".into()), ..query() }).await, vec![2_000, 1_000]);
    assert_eq!(ids(db, EventQuery { from_ms: Some(2_000), to_ms: Some(4_000), ..query() }).await, vec![3_000, 2_000]);
    assert_eq!(ids(db, EventQuery { label: Some(evil.into()), ..query() }).await, vec![7_000], "an SQL-looking label is data");
    assert_eq!(ids(db, EventQuery { scope: Some(vec!["door".into()]), ..query() }).await.len(), 5);
    assert!(ids(db, EventQuery { scope: Some(vec![]), ..query() }).await.is_empty());
    // Pages: each starts after the previous one's last (ts, id), none lost or repeated.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = db.list(&EventQuery { limit: 3, before: before.clone(), ..query() }).await.unwrap();
        seen.extend(page.iter().map(|e| e.ts_ms));
        match page.last() {
            Some(last) if page.len() == 3 => before = Some((last.ts_ms, last.id.clone())),
            _ => break,
        }
    }
    assert_eq!(seen, vec![7_000, 6_000, 5_000, 4_000, 3_000, 2_000, 1_000]);

    // One event, its fields as made; the snapshot.
    let first = &events[0];
    let got = db.get(&first.id).await.unwrap().unwrap();
    assert_eq!(
        (got.kind.as_str(), got.line.as_deref(), got.direction.as_deref(), got.track_id),
        ("line_crossed", Some("entry"), Some("in"), 2)
    );
    assert_eq!((got.seq, got.rtp_timestamp, got.bbox), (25, 90_000, Some(EventBox { x: 0.25, y: 0.5, w: 0.125, h: 0.25 })));
    assert_eq!(got.snapshot, Some(format!("/api/events/{}/snapshot.jpg", first.id)));
    assert_eq!(db.snapshot(&first.id).await.unwrap().as_deref(), Some(&jpeg[..]));
    let loiter = db.get(&events[3].id).await.unwrap().unwrap();
    assert_eq!((loiter.zone.as_deref(), loiter.inside_ms, loiter.snapshot), (Some("porch"), Some(12_000), None));
    assert!(db.get("0123456789abcdef").await.unwrap().is_none());
    assert!(db.snapshot(&events[1].id).await.unwrap().is_none());

    // Counts: 2 s buckets from 0.
    let (lines, zones) = db.counts("door", 0, 10_000, 2_000).await.unwrap();
    let lines: Vec<_> = lines.iter().map(|l| (l.line.as_str(), l.direction.as_str(), l.start_ms, l.count)).collect();
    assert_eq!(lines, vec![("entry", "in", 0, 1), ("entry", "out", 2_000, 1)]);
    let zones: Vec<_> = zones.iter().map(|z| (z.zone.as_str(), z.start_ms, z.entered, z.exited, z.loitering)).collect();
    assert_eq!(zones, vec![("porch", 2_000, 1, 0, 0), ("porch", 4_000, 0, 1, 1)]);

    // Retention: by age, then per stream; the snapshot goes with its event.
    assert_eq!(db.prune(1_500, 100).await.unwrap(), 1);
    assert!(db.snapshot(&first.id).await.unwrap().is_none(), "deleted with its event");
    assert_eq!(db.prune(0, 2).await.unwrap(), 2, "door keeps its newest 2 of 4, yard its 2");
    assert_eq!(ids(db, query()).await, vec![7_000, 6_000, 5_000, 4_000]);
}

#[tokio::test]
async fn sqlite_stores_finds_pages_counts_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::sqlite(&dir.path().join("new")).await.unwrap();
    behaves(&db).await;
    // Opening again finds the migrated file as it was.
    drop(db);
    let db = Db::sqlite(&dir.path().join("new")).await.unwrap();
    assert_eq!(db.list(&query()).await.unwrap().len(), 4);
}

#[tokio::test]
async fn postgres_stores_finds_pages_counts_and_prunes() {
    let pg = Postgres::start();
    let db = Db::postgres(&pg.url()).await.unwrap();
    behaves(&db).await;
    let again = Db::postgres(&pg.url()).await.unwrap();
    assert_eq!(again.list(&query()).await.unwrap().len(), 4, "a second replica's migration finds the schema done");
}

#[tokio::test]
async fn an_unwritable_directory_or_a_closed_port_is_an_error() {
    assert!(Db::sqlite(Path::new("/proc/sightline-cannot-be-here")).await.is_err());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = Db::postgres(&format!("postgres://u:secret@127.0.0.1:{port}/x")).await.unwrap_err();
    assert!(!e.contains("secret"), "{e}");
}

/// Insert rate, events per second, in batches of 64 (the writer's batches under load) and of
/// 1, each event with a 60 KB snapshot (a 720p JPEG):
/// `cargo test --release -p sightline-gateway archive::tests::insert_rate -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn insert_rate() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let jpeg = vec![0x5a; 60_000];
    for db in [Db::sqlite(dir.path()).await.unwrap(), Db::postgres(&pg.url()).await.unwrap()] {
        for batch in [64, 1] {
            let n = 4_096;
            let events: Vec<_> = (0..n).map(|i| event("cam", EventKind::LineCrossed, 1_000_000 * batch + i, i, "person", "l")).collect();
            let started = Instant::now();
            for chunk in events.chunks(batch as usize) {
                let rows: Vec<NewRow<'_>> = chunk.iter().map(|e| NewRow { event: e, jpeg: Some(&jpeg[..]) }).collect();
                db.insert(&rows, "r", 0).await.unwrap();
            }
            let rate = n as f64 / started.elapsed().as_secs_f64();
            println!("{}: {rate:.0} events/s in batches of {batch} (60 KB snapshot each)", db.backend());
        }
    }
}
