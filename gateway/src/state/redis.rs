//! The Redis [`StateStore`]: shared start/stop state for any number of replicas.
//!
//! Keys and channels (DESIGN.md "State and replicas"):
//! - `sightline:stream:{id}`: hash `active` (`true`/`false`), `fps`, `quality`, `started_at`,
//!   `updated_at` (ms since the Unix epoch), `updated_by` (replica id), `generation`.
//! - `sightline:events`: pub/sub; every write publishes `{stream, action, generation, by,
//!   record}` from inside the same Lua script, so events follow writes in generation order.
//! - `sightline:replica:{rid}`: heartbeat string with a TTL: `{http, started_at_ms, now_ms}`
//!   (`now_ms`: the replica's clock when it wrote it; `gateway doctor` compares clocks).
//! - `sightline:whep:{session}`: the replica that owns a WHEP session, with a TTL.
//! - `sightline:lease:detect:{id}`: the replica that runs detection for the stream (PX lease,
//!   renewed by its holder, taken with SET NX by another when it lapses).
//! - `sightline:lease:pull:{id}`: for streams with `pull = "one_per_cluster"`, the replica
//!   that pulls the camera, as `{replica id} {restream URL}` (PX lease renewed by its holder);
//!   the others relay from that URL.
//! - `sightline:detections:{id}`: pub/sub; the lease holder's detection messages, each sent
//!   as `{replica id}\n{json}` so the sender skips its own.
//! - `sightline:geometry:{id}`: the stream's zones and lines as JSON (`Geometry`), written
//!   compare-and-set on its `version` by a Lua script that also publishes it on
//!   `sightline:geometry`.
//!
//! Failure handling: while Redis is unreachable, writes fail with
//! [`Error::StoreUnavailable`] (the API answers 503, never a silent local-only change) and
//! [`StateStore::is_ready`] is false; replicas keep serving from the last records they hold.
//! On reconnect the subscriber re-reads every record, and writes back any record Redis lacks
//! or holds at a lower generation (Redis restarted empty: the newest state survives).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{info, warn};

use parking_lot::{Mutex, RwLock};

use super::store::{Action, ClusterStore, Geometry, StartParams, StateEvent, StateStore, StreamRecord};
use crate::config::redact::redact_url;
use crate::core::Error;
use crate::core::clock::now_ms;

/// Pub/sub channel of state events.
const EVENTS_CHANNEL: &str = "sightline:events";
/// Pub/sub channel of geometry writes.
const GEOMETRY_CHANNEL: &str = "sightline:geometry";

fn geometry_key(id: &str) -> String {
    format!("sightline:geometry:{id}")
}

/// Geometry compare-and-set: ARGV = expected version, JSON, channel. Returns 1 when written.
const PUT_GEOMETRY: &str = r"
local held = 0
local cur = redis.call('GET', KEYS[1])
if cur then held = tonumber(cjson.decode(cur)['version']) or 0 end
if held ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1";
/// How long a command may take before the store counts Redis as down.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);
/// Heartbeat period; the key lives three periods.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Lifetime of a WHEP ownership key; owners refresh it every [`HEARTBEAT`].
const WHEP_OWNER_TTL: Duration = Duration::from_secs(30);
/// Events buffered per local subscriber.
const EVENT_BUFFER: usize = 1024;
/// A subscription that delivered nothing (not even this replica's own keepalive, published
/// every [`HEARTBEAT`]) for this long is dead: reconnect.
const SUBSCRIPTION_SILENCE: Duration = Duration::from_secs(10);

fn keepalive_channel(rid: &str) -> String {
    format!("sightline:keepalive:{rid}")
}

fn stream_key(id: &str) -> String {
    format!("sightline:stream:{id}")
}

/// Every replica's heartbeat key.
pub(crate) const REPLICA_PATTERN: &str = "sightline:replica:*";

/// A heartbeat key's lifetime: three missed heartbeats.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 3);

fn replica_key(rid: &str) -> String {
    format!("sightline:replica:{rid}")
}

fn lease_key(stream: &str) -> String {
    format!("sightline:lease:detect:{stream}")
}

fn pull_lease_key(stream: &str) -> String {
    format!("sightline:lease:pull:{stream}")
}

/// Pattern of the detection relay channels.
const DETECTIONS_PATTERN: &str = "sightline:detections:*";

fn whep_key(session: &str) -> String {
    format!("sightline:whep:{session}")
}

/// Takes or renews a lease: ARGV = replica id, ttl ms. Returns 1 when the caller holds it.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0";

/// Takes or renews a lease and answers its holder: ARGV = holder, ttl ms.
const HOLD: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return holder end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1] end
return holder";

/// Deletes a lease only if the caller holds it: ARGV = replica id.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Creates the hash from ARGV (field, value, …) unless it exists; returns it.
const ENSURE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGETALL', KEYS[1])";

/// Start/stop: ARGV = active, fps or '', quality or '', now_ms, by, stream id, channel.
const SET_ACTIVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSTREAM') end
local was = redis.call('HGET', KEYS[1], 'active') == 'true'
local active = ARGV[1] == 'true'
local action = 'update'
if active and not was then
  action = 'start'
  redis.call('HSET', KEYS[1], 'started_at', ARGV[4])
elseif was and not active then
  action = 'stop'
end
redis.call('HSET', KEYS[1], 'active', ARGV[1], 'updated_at', ARGV[4], 'updated_by', ARGV[5])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'fps', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'quality', ARGV[3]) end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
local h = redis.call('HGETALL', KEYS[1])
local record = {}
for i = 1, #h, 2 do record[h[i]] = h[i + 1] end
redis.call('PUBLISH', ARGV[7], cjson.encode({stream = ARGV[6], action = action, generation = generation, by = ARGV[5], record = record}))
return h";

/// Write-back after a Redis restart: ARGV = generation, stream id, channel, then field/value
/// pairs. Replaces the hash only if it is missing or older, and publishes the restored record
/// so replicas that started meanwhile (from config defaults) catch up.
const RESTORE: &str = r"
local held = tonumber(redis.call('HGET', KEYS[1], 'generation') or '-1')
if held < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  local h = redis.call('HGETALL', KEYS[1])
  local record = {}
  for i = 1, #h, 2 do record[h[i]] = h[i + 1] end
  redis.call('PUBLISH', ARGV[3], cjson.encode({stream = ARGV[2], action = 'update', generation = tonumber(ARGV[1]), by = record['updated_by'], record = record}))
  return 1
end
return 0";

/// The hash fields of a record, in DESIGN.md's names.
fn fields(r: &StreamRecord) -> Vec<(String, String)> {
    let mut f = vec![
        ("active".to_owned(), r.active.to_string()),
        ("fps".to_owned(), r.fps.to_string()),
        ("quality".to_owned(), r.quality.to_string()),
        ("updated_at".to_owned(), r.updated_at_ms.to_string()),
        ("updated_by".to_owned(), r.updated_by.clone()),
        ("generation".to_owned(), r.generation.to_string()),
    ];
    if let Some(s) = r.started_at_ms {
        f.push(("started_at".to_owned(), s.to_string()));
    }
    f
}

/// Parses a hash (from HGETALL, or an event's `record`) into a record.
fn parse_record(id: &str, h: &HashMap<String, String>) -> Result<StreamRecord, Error> {
    let bad = |field: &str| Error::StoreUnavailable { cause: format!("sightline:stream:{id} has a bad or missing {field}") };
    let num = |field: &str| h.get(field).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| bad(field));
    Ok(StreamRecord {
        id: id.to_owned(),
        active: h.get("active").map(|v| v == "true").ok_or_else(|| bad("active"))?,
        fps: u32::try_from(num("fps")?).map_err(|_| bad("fps"))?,
        quality: u8::try_from(num("quality")?).map_err(|_| bad("quality"))?,
        started_at_ms: h.get("started_at").and_then(|v| v.parse().ok()),
        updated_at_ms: num("updated_at")?,
        updated_by: h.get("updated_by").cloned().unwrap_or_default(),
        generation: num("generation")?,
    })
}

/// A published event as it travels on `sightline:events`.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    stream: String,
    action: Action,
    generation: u64,
    by: String,
    record: HashMap<String, String>,
}

/// What a replica announces in its heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Base URL other replicas redirect to (WHEP 307).
    pub http: String,
    /// Start time, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The replica's clock when it wrote this heartbeat, ms since the Unix epoch (0 from
    /// replicas before this field).
    #[serde(default)]
    pub now_ms: u64,
}

/// The Redis store. Build with [`RedisStore::connect`].
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    replica_id: String,
    replica: ReplicaInfo,
    events: broadcast::Sender<StateEvent>,
    /// The newest record seen per stream: served nowhere, written back after a Redis restart.
    records: RwLock<HashMap<String, StreamRecord>>,
    /// The last command reached Redis.
    ready: AtomicBool,
    /// The event subscription is up (and re-synced).
    subscribed: AtomicBool,
    ensure: redis::Script,
    set_active: redis::Script,
    restore: redis::Script,
    put_geometry: redis::Script,
    lease: redis::Script,
    hold: redis::Script,
    release: redis::Script,
    /// Other replicas' detection messages.
    detections: broadcast::Sender<(String, Arc<str>)>,
    /// Geometry writes (this replica's and the others').
    geometry_events: broadcast::Sender<Geometry>,
    /// The heartbeat task, stopped by [`RedisStore::leave`].
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("replica_id", &self.replica_id).finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable { cause: format!("Redis: {e}") }
}

impl RedisStore {
    /// Connects (failing if Redis is unreachable now), then starts the event subscriber and
    /// the heartbeat. `http` is this replica's base URL for redirects.
    pub async fn connect(url: &str, replica_id: &str, http: &str) -> anyhow::Result<Arc<RedisStore>> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("bad Redis URL {}: {e}", redact_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(COMMAND_TIMEOUT * 5, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| anyhow::anyhow!("Redis at {} did not answer", redact_url(url)))?
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {}: {e}", redact_url(url)))?;
        let store = Arc::new(RedisStore {
            client,
            conn,
            replica_id: replica_id.to_owned(),
            replica: ReplicaInfo { http: http.to_owned(), started_at_ms: now_ms(), now_ms: 0 },
            events: broadcast::channel(EVENT_BUFFER).0,
            records: RwLock::default(),
            ready: AtomicBool::new(true),
            subscribed: AtomicBool::new(false),
            ensure: redis::Script::new(ENSURE),
            set_active: redis::Script::new(SET_ACTIVE),
            restore: redis::Script::new(RESTORE),
            put_geometry: redis::Script::new(PUT_GEOMETRY),
            lease: redis::Script::new(LEASE),
            hold: redis::Script::new(HOLD),
            release: redis::Script::new(RELEASE),
            detections: broadcast::channel(EVENT_BUFFER).0,
            geometry_events: broadcast::channel(EVENT_BUFFER).0,
            heartbeat: Mutex::default(),
        });
        tokio::spawn(store.clone().follow_events());
        *store.heartbeat.lock() = Some(tokio::spawn(store.clone().heartbeat()));
        info!(url = %redact_url(url), replica = replica_id, "state in Redis");
        Ok(store)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs a command; a failure marks the store not ready.
    async fn run<T>(&self, fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Error> {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if e.to_string().contains("NOSTREAM") => Err(Error::UnknownStream { stream: String::new() }),
            Ok(Err(e)) => {
                self.ready.store(false, Ordering::Relaxed);
                Err(unavailable(e))
            }
            Err(_) => {
                self.ready.store(false, Ordering::Relaxed);
                Err(unavailable("timed out"))
            }
        }
    }

    /// Remembers the newest record per stream; returns whether `r` was newer.
    fn remember(&self, r: &StreamRecord) -> bool {
        let mut records = self.records.write();
        match records.get(&r.id) {
            Some(held) if held.generation >= r.generation => false,
            _ => {
                records.insert(r.id.clone(), r.clone());
                true
            }
        }
    }

    /// Subscribes to `sightline:events` forever, reconnecting with backoff; after each
    /// (re)subscription writes back and re-reads every known record.
    async fn follow_events(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let keepalive = keepalive_channel(&self.replica_id);
            let connect = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&[EVENTS_CHANNEL, GEOMETRY_CHANNEL, keepalive.as_str()]).await?;
                pubsub.psubscribe(DETECTIONS_PATTERN).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(COMMAND_TIMEOUT * 2, connect).await {
                Ok(Ok(mut pubsub)) => {
                    backoff = Duration::from_millis(100);
                    self.resync().await;
                    self.subscribed.store(true, Ordering::Relaxed);
                    let mut messages = pubsub.on_message();
                    // Silence longer than a few keepalives means a dead connection.
                    while let Ok(Some(msg)) = tokio::time::timeout(SUBSCRIPTION_SILENCE, messages.next()).await {
                        let channel = msg.get_channel_name();
                        if channel == EVENTS_CHANNEL {
                            self.on_message(msg.get_payload_bytes());
                        } else if channel == GEOMETRY_CHANNEL {
                            match serde_json::from_slice::<Geometry>(msg.get_payload_bytes()) {
                                Ok(g) => {
                                    let _ = self.geometry_events.send(g);
                                }
                                Err(e) => warn!(error = %e, "ignoring a malformed message on sightline:geometry"),
                            }
                        } else if let Some(stream) = channel.strip_prefix("sightline:detections:") {
                            self.on_detections(stream, msg.get_payload_bytes());
                        }
                    }
                    warn!("Redis event subscription lost; replicas keep the last state they had");
                    self.subscribed.store(false, Ordering::Relaxed);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot subscribe to Redis events"),
                Err(_) => tracing::debug!("Redis subscription timed out"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn on_message(&self, payload: &[u8]) {
        let event: WireEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "ignoring a malformed message on sightline:events");
                return;
            }
        };
        match parse_record(&event.stream, &event.record) {
            Ok(record) => {
                self.remember(&record);
                let _ = self.events.send(StateEvent { action: event.action, record });
            }
            Err(e) => warn!(stream = %event.stream, error = %e, "ignoring an event with a bad record"),
        }
    }

    /// A relayed detection message: `{replica id}\n{json}`; this replica's own are skipped.
    fn on_detections(&self, stream: &str, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else { return };
        let Some((from, json)) = text.split_once('\n') else {
            warn!(stream, "ignoring a malformed message on sightline:detections");
            return;
        };
        if from != self.replica_id {
            let _ = self.detections.send((stream.to_owned(), json.into()));
        }
    }

    /// After (re)connecting: write back records Redis lacks or holds older (it restarted
    /// empty, or lost writes), then re-read all and deliver what changed meanwhile.
    async fn resync(&self) {
        let known: Vec<StreamRecord> = self.records.read().values().cloned().collect();
        let mut ok = true;
        for r in &known {
            let mut call = self.restore.key(stream_key(&r.id));
            call.arg(r.generation).arg(&r.id).arg(EVENTS_CHANNEL);
            for (f, v) in fields(r) {
                call.arg(f).arg(v);
            }
            let mut conn = self.conn();
            match self.run(call.invoke_async::<i64>(&mut conn)).await {
                Ok(1) => info!(stream = %r.id, generation = r.generation, "wrote the stream's state back to Redis"),
                Ok(_) => {}
                Err(_) => ok = false,
            }
            match self.get(&r.id).await {
                Ok(fresh) => {
                    if fresh.generation > r.generation {
                        let _ = self.events.send(StateEvent { action: Action::Update, record: fresh });
                    }
                }
                Err(_) => ok = false,
            }
        }
        // Geometry written while this replica was not subscribed: delivered again
        // (subscribers keep the newest version).
        for r in &known {
            match self.geometry(&r.id).await {
                Ok(Some(g)) => {
                    let _ = self.geometry_events.send(g);
                }
                Ok(None) => {}
                Err(_) => ok = false,
            }
        }
        if ok {
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    /// Refreshes this replica's heartbeat key, and the WHEP ownership keys it holds.
    async fn heartbeat(self: Arc<Self>) {
        let key = replica_key(&self.replica_id);
        loop {
            let body = serde_json::to_string(&ReplicaInfo { now_ms: now_ms(), ..self.replica.clone() }).expect("serializable");
            let mut conn = self.conn();
            let ttl = HEARTBEAT_TTL.as_secs();
            match self.run(conn.set_ex::<_, _, ()>(&key, &body, ttl)).await {
                Ok(()) => {
                    let _ = self.run(conn.publish::<_, _, ()>(keepalive_channel(&self.replica_id), "1")).await;
                    if !self.ready.load(Ordering::Relaxed) {
                        self.resync().await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }

    /// Removes this replica's heartbeat (graceful shutdown).
    /// The heartbeat task is stopped first, so it cannot write the key back.
    pub async fn leave(&self) {
        let task = self.heartbeat.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let mut conn = self.conn();
        let _ = self.run(conn.del::<_, ()>(replica_key(&self.replica_id))).await;
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn ensure(&self, initial: StreamRecord) -> Result<StreamRecord, Error> {
        let mut call = self.ensure.key(stream_key(&initial.id));
        for (f, v) in fields(&initial) {
            call.arg(f).arg(v);
        }
        let mut conn = self.conn();
        let h: HashMap<String, String> = self.run(call.invoke_async(&mut conn)).await?;
        let record = parse_record(&initial.id, &h)?;
        self.remember(&record);
        Ok(record)
    }

    async fn get(&self, id: &str) -> Result<StreamRecord, Error> {
        let mut conn = self.conn();
        let h: HashMap<String, String> = self.run(conn.hgetall(stream_key(id))).await?;
        if h.is_empty() {
            return Err(Error::UnknownStream { stream: id.to_owned() });
        }
        let record = parse_record(id, &h)?;
        self.remember(&record);
        Ok(record)
    }

    async fn set_active(&self, id: &str, active: bool, params: StartParams, by: &str) -> Result<StreamRecord, Error> {
        let mut call = self.set_active.key(stream_key(id));
        call.arg(active.to_string())
            .arg(params.fps.map(|f| f.to_string()).unwrap_or_default())
            .arg(params.quality.map(|q| q.to_string()).unwrap_or_default())
            .arg(now_ms())
            .arg(by)
            .arg(id)
            .arg(EVENTS_CHANNEL);
        let mut conn = self.conn();
        let h: HashMap<String, String> = match self.run(call.invoke_async(&mut conn)).await {
            Ok(h) => h,
            // Known here but missing in Redis: it restarted empty and the write-back has not
            // run yet. Not a 404: run it and ask the client to retry.
            Err(Error::UnknownStream { .. }) if self.records.read().contains_key(id) => {
                self.resync().await;
                return Err(Error::StoreUnavailable {
                    cause: format!("state of {id:?} was missing in Redis and is being restored; retry"),
                });
            }
            Err(Error::UnknownStream { .. }) => return Err(Error::UnknownStream { stream: id.to_owned() }),
            Err(e) => return Err(e),
        };
        let record = parse_record(id, &h)?;
        self.remember(&record);
        Ok(record)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    async fn geometry(&self, stream: &str) -> Result<Option<Geometry>, Error> {
        let mut conn = self.conn();
        let json: Option<String> = self.run(conn.get(geometry_key(stream))).await?;
        match json {
            None => Ok(None),
            Some(j) => serde_json::from_str(&j)
                .map(Some)
                .map_err(|e| Error::StoreUnavailable { cause: format!("Redis holds bad geometry for {stream:?}: {e}") }),
        }
    }

    async fn put_geometry(&self, geometry: &Geometry, expected: u64) -> Result<bool, Error> {
        let json = serde_json::to_string(geometry).map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut call = self.put_geometry.key(geometry_key(&geometry.stream));
        call.arg(expected).arg(json).arg(GEOMETRY_CHANNEL);
        let mut conn = self.conn();
        Ok(self.run(call.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    fn subscribe_geometry(&self) -> broadcast::Receiver<Geometry> {
        self.geometry_events.subscribe()
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.subscribed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ClusterStore for RedisStore {
    async fn claim_whep_session(&self, session: &str) -> Result<(), Error> {
        let mut conn = self.conn();
        self.run(conn.set_ex::<_, _, ()>(whep_key(session), &self.replica_id, WHEP_OWNER_TTL.as_secs())).await
    }

    async fn release_whep_session(&self, session: &str) -> Result<(), Error> {
        let mut conn = self.conn();
        self.run(conn.del::<_, ()>(whep_key(session))).await
    }

    async fn whep_session_owner(&self, session: &str) -> Result<Option<String>, Error> {
        let mut conn = self.conn();
        let Some(rid): Option<String> = self.run(conn.get(whep_key(session))).await? else { return Ok(None) };
        if rid == self.replica_id {
            return Ok(None);
        }
        let info: Option<String> = self.run(conn.get(replica_key(&rid))).await?;
        Ok(info.and_then(|i| serde_json::from_str::<ReplicaInfo>(&i).ok()).map(|i| i.http))
    }

    async fn acquire_detect_lease(&self, stream: &str, ttl: Duration) -> Result<bool, Error> {
        Ok(self.lease_call(&self.lease, stream, Some(ttl)).await? == 1)
    }

    async fn release_detect_lease(&self, stream: &str) -> Result<(), Error> {
        self.lease_call(&self.release, stream, None).await.map(|_| ())
    }

    async fn acquire_pull_lease(&self, stream: &str, holder: &str, ttl: Duration) -> Result<String, Error> {
        let mut call = self.hold.key(pull_lease_key(stream));
        call.arg(holder).arg(ttl.as_millis() as u64);
        let mut conn = self.conn();
        self.run(call.invoke_async::<String>(&mut conn)).await
    }

    async fn release_pull_lease(&self, stream: &str, holder: &str) -> Result<(), Error> {
        let mut call = self.release.key(pull_lease_key(stream));
        call.arg(holder);
        let mut conn = self.conn();
        self.run(call.invoke_async::<i64>(&mut conn)).await.map(|_| ())
    }

    async fn publish_detections(&self, stream: &str, json: &str) -> Result<(), Error> {
        let mut conn = self.conn();
        let payload = format!("{}\n{json}", self.replica_id);
        self.run(conn.publish::<_, _, ()>(format!("sightline:detections:{stream}"), payload)).await
    }

    fn subscribe_detections(&self) -> Option<broadcast::Receiver<(String, Arc<str>)>> {
        Some(self.detections.subscribe())
    }
}

impl RedisStore {
    async fn lease_call(&self, script: &redis::Script, stream: &str, ttl: Option<Duration>) -> Result<i64, Error> {
        let mut call = script.key(lease_key(stream));
        call.arg(&self.replica_id);
        if let Some(ttl) = ttl {
            call.arg(ttl.as_millis() as u64);
        }
        let mut conn = self.conn();
        self.run(call.invoke_async::<i64>(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_hash_fields() {
        let r = StreamRecord {
            id: "cam".into(),
            active: true,
            fps: 15,
            quality: 60,
            started_at_ms: Some(5),
            updated_at_ms: 7,
            updated_by: "r1".into(),
            generation: 9,
        };
        let h: HashMap<String, String> = fields(&r).into_iter().collect();
        assert_eq!(h["active"], "true");
        assert_eq!(parse_record("cam", &h).unwrap(), r);
        let mut broken = h.clone();
        broken.insert("fps".into(), "many".into());
        assert!(parse_record("cam", &broken).is_err());
    }
}
