//! The `StateStore` behaviour suite, run against both implementations: the in-memory store
//! and the Redis store on a real `redis-server`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, eventually};
use sightline::config::ZoneConfig;
use sightline::core::Error;
use sightline::state::{Action, ClusterStore, Geometry, MemoryStore, RedisStore, StartParams, StateStore, StreamRecord};

fn record(id: &str, active: bool) -> StreamRecord {
    StreamRecord {
        id: id.into(),
        active,
        fps: 10,
        quality: 75,
        started_at_ms: None,
        updated_at_ms: 1,
        updated_by: "r0".into(),
        generation: 1,
    }
}

/// What every store must do. `other` sees the same state (a second replica's connection,
/// or the same store for the in-memory one).
async fn behaviour(store: Arc<dyn StateStore>, other: Arc<dyn StateStore>) {
    assert!(store.is_ready());
    let mut events = other.subscribe();

    let r = store.ensure(record("a", false)).await.unwrap();
    assert_eq!((r.active, r.generation), (false, 1));
    let again = other.ensure(record("a", true)).await.unwrap();
    assert!(!again.active, "ensure keeps the existing record");

    let started = store.set_active("a", true, StartParams { fps: Some(15), quality: None }, "r1").await.unwrap();
    assert!(started.active && started.fps == 15 && started.quality == 75);
    assert_eq!((started.generation, started.updated_by.as_str()), (2, "r1"));
    assert!(started.started_at_ms.is_some());
    let e = tokio::time::timeout(Duration::from_secs(2), events.recv()).await.expect("event in time").unwrap();
    assert_eq!((e.action, e.record.generation, e.record.fps), (Action::Start, 2, 15));

    let updated = other.set_active("a", true, StartParams { fps: None, quality: Some(40) }, "r2").await.unwrap();
    assert_eq!((updated.generation, updated.fps, updated.quality), (3, 15, 40));
    let stopped = store.set_active("a", false, StartParams::default(), "r1").await.unwrap();
    assert_eq!((stopped.active, stopped.generation), (false, 4));
    let e = events.recv().await.unwrap();
    assert_eq!((e.action, e.record.generation), (Action::Update, 3));
    let e = events.recv().await.unwrap();
    assert_eq!((e.action, e.record.generation, e.record.updated_by.as_str()), (Action::Stop, 4, "r1"));

    assert_eq!(other.get("a").await.unwrap(), stopped);
    assert!(matches!(store.get("nope").await, Err(Error::UnknownStream { .. })));
    assert!(matches!(store.set_active("nope", true, StartParams::default(), "r1").await, Err(Error::UnknownStream { .. })));

    // Zones and lines: compare-and-set on the version; every write reaches the other replica.
    let mut writes = other.subscribe_geometry();
    assert_eq!(store.geometry("a").await.unwrap(), None, "never written: the config's apply");
    let zone = ZoneConfig {
        id: "porch".into(),
        points: vec![[0.1, 0.1], [0.5, 0.1], [0.3, 0.6]],
        labels: vec!["person".into()],
        dwell: Some(Duration::from_secs(5)),
    };
    let g = |version: u64, by: &str| Geometry {
        stream: "a".into(),
        zones: vec![zone.clone()],
        lines: vec![],
        version,
        updated_at_ms: 9,
        updated_by: by.into(),
    };
    assert!(store.put_geometry(&g(1, "r1"), 0).await.unwrap());
    assert!(!other.put_geometry(&g(1, "r2"), 0).await.unwrap(), "a write based on the old version loses");
    assert!(other.put_geometry(&g(2, "r2"), 1).await.unwrap());
    let got = tokio::time::timeout(Duration::from_secs(2), writes.recv()).await.expect("geometry in time").unwrap();
    assert_eq!(got, g(1, "r1"), "dwell and points survive the round trip");
    assert_eq!(tokio::time::timeout(Duration::from_secs(2), writes.recv()).await.unwrap().unwrap().version, 2);
    assert_eq!(store.geometry("a").await.unwrap(), Some(g(2, "r2")));
}

#[tokio::test]
async fn memory_store_behaviour() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    behaviour(store.clone(), store).await;
    // With a file, zones and lines survive a restart; an unwritable file refuses the edit.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data/geometry.json");
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::with_geometry_file(&file));
    behaviour(store.clone(), store).await;
    let again = MemoryStore::with_geometry_file(&file);
    assert_eq!(again.geometry("a").await.unwrap().map(|g| (g.version, g.zones.len())), Some((2, 1)));
    let blocked = MemoryStore::with_geometry_file(std::path::Path::new("/proc/sightline/geometry.json"));
    let g = again.geometry("a").await.unwrap().unwrap();
    assert!(matches!(blocked.put_geometry(&g, 0).await, Err(Error::StoreUnavailable { .. })));
    assert_eq!(blocked.geometry("a").await.unwrap(), None, "not kept in memory either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_behaviour() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), "r1", "http://127.0.0.1:1").await.unwrap();
    let b = RedisStore::connect(&redis.url(), "r2", "http://127.0.0.1:2").await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { a.is_ready() && b.is_ready() }).await, "both subscribed");
    behaviour(a.clone(), b.clone()).await;
    // The hash holds DESIGN.md's fields.
    let fields = redis.cli(&["HGETALL", "sightline:stream:a"]);
    for f in ["active", "fps", "quality", "started_at", "updated_at", "updated_by", "generation"] {
        assert!(fields.lines().any(|l| l == f), "{f} missing from {fields}");
    }
    // Heartbeats with a TTL.
    let ttl: i64 = redis.cli(&["TTL", "sightline:replica:r1"]).trim().parse().unwrap();
    assert!((1..=9).contains(&ttl), "heartbeat TTL {ttl}");
    // WHEP ownership: b learns a's address.
    a.claim_whep_session("s1").await.unwrap();
    assert_eq!(b.whep_session_owner("s1").await.unwrap().as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(a.whep_session_owner("s1").await.unwrap(), None, "own sessions are not redirected");
    a.release_whep_session("s1").await.unwrap();
    assert_eq!(b.whep_session_owner("s1").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_then_back_empty_keeps_the_newest_state() {
    let mut redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), "r1", "http://127.0.0.1:1").await.unwrap();
    a.ensure(record("cam", false)).await.unwrap();
    let started = a.set_active("cam", true, StartParams::default(), "r1").await.unwrap();

    redis.kill();
    let err = a.set_active("cam", false, StartParams::default(), "r1").await.unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");
    assert!(!a.is_ready());

    redis.restart(); // empty
    assert!(eventually(Duration::from_secs(10), || async { a.is_ready() }).await, "store did not become ready again");
    let restored = a.get("cam").await.unwrap();
    assert_eq!((restored.active, restored.generation), (true, started.generation), "written back after the restart");
    let stopped = a.set_active("cam", false, StartParams::default(), "r1").await.unwrap();
    assert_eq!(stopped.generation, started.generation + 1, "generations continue");
}
