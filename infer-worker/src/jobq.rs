//! Where job chunks come from (issue #15): a local gateway on stdin/stdout ([`stdio`]), or
//! Redis Streams consumer groups on any machine ([`redis()`]); both hand each [`Task`] to the
//! [`Processor`] and send back its [`ChunkResult`].

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamReadReply};
use wire::job::{ChunkResult, MAX_MESSAGE, Task, keys};

use crate::job::Processor;

/// Serves a local gateway: each message is a `u32` big-endian length and a [`Task`]; the
/// answer is the same framing around a [`ChunkResult`]. Ends at end of input (the gateway
/// closed the pipe). A task that cannot be read is answered with an error result for chunk
/// `u32::MAX`: the gateway fails that job, the worker carries on.
pub fn stdio(mut processor: Processor) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_MESSAGE {
            anyhow::bail!("a {n}-byte message on stdin (at most {MAX_MESSAGE}): not a gateway");
        }
        let mut bytes = vec![0u8; n];
        input.read_exact(&mut bytes)?;
        let result = match Task::decode(&bytes) {
            Ok(task) => processor.process(&task, false),
            Err(e) => error_result(&processor, &e.to_string()),
        };
        let out = result.encode();
        let mut w = stdout.lock();
        w.write_all(&(out.len() as u32).to_be_bytes())?;
        w.write_all(&out)?;
        w.flush()?;
    }
}

fn error_result(processor: &Processor, why: &str) -> ChunkResult {
    ChunkResult {
        header: wire::job::ResultHeader {
            job: String::new(),
            chunk: u32::MAX,
            worker: processor.worker.clone(),
            retried: false,
            error: Some(why.to_owned()),
            units: Vec::new(),
            width: 0,
            height: 0,
            frames: Vec::new(),
            started_ms: 0,
            decode_ms: 0.0,
            filter_ms: 0.0,
            encode_ms: 0.0,
            total_ms: 0.0,
            preview_len: 0,
            detections: Vec::new(),
        },
        payload: Vec::new(),
    }
}

/// How a Redis worker claims work.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// The Redis URL.
    pub url: String,
    /// A task nobody refreshed for this long is taken over (its worker died).
    pub claim_idle: Duration,
    /// Model and provider, for the heartbeat.
    pub model: String,
    /// Exit when the parent process goes (a worker the gateway started dies with it).
    pub exit_with_parent: bool,
}

/// Serves Redis Streams: reads tasks as consumer `processor.worker` of group [`keys::GROUP`]
/// on [`keys::TASKS`], first taking over any task idle longer than `claim_idle` (`XAUTOCLAIM`,
/// counted as a retry), and refreshes its own claim every second while it works (`XCLAIM
/// JUSTID`), so that only a worker that stopped loses its task. Each result goes to its
/// [`keys::result`] list (TTL [`keys::RESULT_TTL_S`]), then the task is acknowledged and
/// deleted. Runs until the process is killed; a lost Redis connection is retried every
/// second.
pub fn redis(processor: Processor, options: &RedisOptions) -> anyhow::Result<()> {
    let client = ::redis::Client::open(options.url.as_str())?;
    let current: Arc<Mutex<Option<String>>> = Arc::default();
    heartbeat(client.clone(), processor.worker.clone(), options.model.clone(), current.clone(), options.exit_with_parent);
    let mut processor = processor;
    loop {
        match serve_redis(&client, &mut processor, options, &current) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("infer-worker job: redis: {e}; reconnecting");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn serve_redis(
    client: &::redis::Client,
    processor: &mut Processor,
    options: &RedisOptions,
    current: &Mutex<Option<String>>,
) -> anyhow::Result<()> {
    let mut con = client.get_connection()?;
    ensure_group(&mut con)?;
    let me = processor.worker.clone();
    let mut pruned_at: Option<Instant> = None;
    loop {
        if pruned_at.is_none_or(|t| t.elapsed() >= options.claim_idle) {
            pruned_at = Some(Instant::now());
            for gone in prune_consumers(&mut con, &me, options.claim_idle)? {
                eprintln!("infer-worker job: removed the consumer of worker {gone} from the group (no heartbeat, nothing pending)");
            }
        }
        let claimed: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
            .arg(keys::TASKS)
            .arg(keys::GROUP)
            .arg(&me)
            .arg(options.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)?;
        let (entry, retried) = match claimed.claimed.into_iter().next() {
            Some(entry) => (entry, true),
            None => {
                let read: Option<StreamReadReply> = ::redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::GROUP)
                    .arg(&me)
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(keys::TASKS)
                    .arg(">")
                    .query(&mut con)?;
                match read.and_then(|r| r.keys.into_iter().next()).and_then(|k| k.ids.into_iter().next()) {
                    Some(entry) => (entry, false),
                    None => continue,
                }
            }
        };
        handle(&mut con, processor, entry, retried, current)?;
    }
}

fn handle(
    con: &mut ::redis::Connection,
    processor: &mut Processor,
    entry: StreamId,
    retried: bool,
    current: &Mutex<Option<String>>,
) -> anyhow::Result<()> {
    let bytes: Option<Vec<u8>> = entry.get("task");
    let task = match bytes.as_deref().map(Task::decode) {
        Some(Ok(task)) => task,
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => "no `task` field".into(),
            };
            eprintln!("infer-worker job: dropping entry {} of {}: {why}", entry.id, keys::TASKS);
            return done(con, &entry.id);
        }
    };
    let cancelled: bool = ::redis::cmd("EXISTS").arg(keys::cancelled(&task.header.job)).query(con)?;
    if cancelled {
        return done(con, &entry.id);
    }
    *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.id.clone());
    let result = processor.process(&task, retried);
    *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
    // The result and the acknowledgement in one transaction: a worker stopped in between
    // would leave a chunk both answered and pending (processed twice, answered twice).
    let key = keys::result(&task.header.job, task.header.chunk);
    ::redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(&key)
        .ignore()
        .cmd("RPUSH")
        .arg(&key)
        .arg(result.encode())
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(keys::RESULT_TTL_S)
        .ignore()
        .cmd("XACK")
        .arg(keys::TASKS)
        .arg(keys::GROUP)
        .arg(&entry.id)
        .ignore()
        .cmd("XDEL")
        .arg(keys::TASKS)
        .arg(&entry.id)
        .ignore()
        .query::<()>(con)?;
    Ok(())
}

/// Acknowledges and deletes a task entry.
fn done(con: &mut ::redis::Connection, id: &str) -> anyhow::Result<()> {
    ::redis::pipe()
        .cmd("XACK")
        .arg(keys::TASKS)
        .arg(keys::GROUP)
        .arg(id)
        .ignore()
        .cmd("XDEL")
        .arg(keys::TASKS)
        .arg(id)
        .ignore()
        .query::<()>(con)?;
    Ok(())
}

/// Removes from the group the consumers of workers that are gone, so `XINFO CONSUMERS` (and
/// anything counting consumers) shows the workers that exist: a consumer other than `me` whose
/// worker's heartbeat key expired, with no pending task (a dead worker's task is first taken
/// over by `XAUTOCLAIM`, which moves it to the taker) and idle longer than `idle`. Deleting a
/// consumer with pending tasks would drop them from the group (`XGROUP DELCONSUMER`), so
/// those are left. Returns the names removed.
pub fn prune_consumers(con: &mut ::redis::Connection, me: &str, idle: Duration) -> anyhow::Result<Vec<String>> {
    let info: StreamInfoConsumersReply = ::redis::cmd("XINFO").arg("CONSUMERS").arg(keys::TASKS).arg(keys::GROUP).query(con)?;
    let mut removed = Vec::new();
    for c in info.consumers {
        if c.name == me || c.pending > 0 || (c.idle as u128) < idle.as_millis() {
            continue;
        }
        let alive: bool = ::redis::cmd("EXISTS").arg(keys::worker(&c.name)).query(con)?;
        if alive {
            continue;
        }
        let _dropped: i64 = ::redis::cmd("XGROUP").arg("DELCONSUMER").arg(keys::TASKS).arg(keys::GROUP).arg(&c.name).query(con)?;
        removed.push(c.name);
    }
    Ok(removed)
}

/// Creates the consumer group (and the stream) unless it exists.
pub fn ensure_group(con: &mut ::redis::Connection) -> anyhow::Result<()> {
    let created: ::redis::RedisResult<()> =
        ::redis::cmd("XGROUP").arg("CREATE").arg(keys::TASKS).arg(keys::GROUP).arg("0").arg("MKSTREAM").query(con);
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// Every second: the worker's heartbeat key (TTL 5 s) and, while it works on a task, a
/// refresh of its claim (`XCLAIM … 0 id JUSTID` resets the entry's idle time).
fn heartbeat(client: ::redis::Client, name: String, model: String, current: Arc<Mutex<Option<String>>>, exit_with_parent: bool) {
    let info = serde_json::json!({ "name": name, "pid": std::process::id(), "model": model }).to_string();
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        let mut con = None;
        loop {
            if exit_with_parent && std::os::unix::process::parent_id() != parent {
                // Orphaned (the gateway was killed): its chunk goes back to the group.
                eprintln!("infer-worker job: the parent process is gone; exiting");
                std::process::exit(0);
            }
            if con.is_none() {
                con = client.get_connection().ok();
            }
            if let Some(c) = con.as_mut() {
                let id = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut pipe = ::redis::pipe();
                pipe.cmd("SET").arg(keys::worker(&name)).arg(&info).arg("EX").arg(5).ignore();
                if let Some(id) = id {
                    pipe.cmd("XCLAIM").arg(keys::TASKS).arg(keys::GROUP).arg(&name).arg(0).arg(&id).arg("JUSTID").ignore();
                }
                if pipe.query::<()>(c).is_err() {
                    con = None;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}
