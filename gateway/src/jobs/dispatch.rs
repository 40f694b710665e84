//! Who processes a job's chunks: `infer-worker job` processes, local ([`Local`]: the gateway's
//! own children on stdin/stdout) or anywhere ([`RedisQueue`]: Redis Streams consumer groups,
//! see [`wire::job::keys`]). Both retry a chunk whose worker died on another worker and say
//! how many times it was handed over.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, Semaphore};
use tracing::{info, warn};
use wire::job::{ChunkResult, MAX_MESSAGE, keys};

use crate::config::Config;

/// A chunk is handed to at most this many local workers before its job fails.
const LOCAL_ATTEMPTS: u32 = 3;

/// Runs chunks on workers.
#[async_trait]
pub(crate) trait Dispatch: Send + Sync + std::fmt::Debug {
    /// Processes one task (bytes of a [`wire::job::Task`]): its result and how many times it
    /// was handed to another worker. Errors: no worker answered within the chunk timeout, or
    /// every attempt died.
    async fn run(&self, job: &str, chunk: u32, task: Vec<u8>) -> Result<(ChunkResult, u32), String>;

    /// Drops a cancelled job's queued chunks (workers skip them).
    async fn cancel(&self, job: &str);

    /// `local` or `redis`.
    fn kind(&self) -> &'static str;
}

/// How to start `infer-worker job`.
#[derive(Clone, Debug)]
pub(crate) struct WorkerCommand {
    bin: PathBuf,
    args: Vec<String>,
}

impl WorkerCommand {
    /// From the config: `detect.worker_bin` (else `infer-worker` beside this executable), the
    /// detection model for `detect` stages, `jobs.preset`.
    pub(crate) fn new(config: &Config) -> WorkerCommand {
        let d = &config.detect;
        let bin = d.worker_binary();
        let mut args = vec!["job".to_owned(), "--preset".to_owned(), config.jobs.preset.clone()];
        if d.model.exists() {
            args.extend(["--model".to_owned(), d.model.display().to_string(), "--confidence".to_owned(), d.confidence.to_string()]);
            if let Some(lib) = &d.onnxruntime {
                args.extend(["--onnxruntime".to_owned(), lib.display().to_string()]);
            }
        }
        WorkerCommand { bin, args }
    }

    fn command(&self, extra: &[String]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).args(extra).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }
}

/// Forwards a worker's stderr to the log.
fn log_stderr(child: &mut Child, name: String) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match crate::core::worker_line(&line) {
                    (note, true) => info!(worker = %name, "infer-worker job: {note}"),
                    (trouble, false) => warn!(worker = %name, "infer-worker job: {trouble}"),
                }
            }
        });
    }
}

/// One local worker process and its pipes.
#[derive(Debug)]
struct LocalWorker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl LocalWorker {
    async fn exchange(&mut self, task: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let talk = async {
            self.stdin.write_all(&(task.len() as u32).to_be_bytes()).await?;
            self.stdin.write_all(task).await?;
            self.stdin.flush().await?;
            let mut len = [0u8; 4];
            self.stdout.read_exact(&mut len).await?;
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_MESSAGE {
                return Err(std::io::Error::other(format!("a {n}-byte answer")));
            }
            let mut bytes = vec![0u8; n];
            self.stdout.read_exact(&mut bytes).await?;
            Ok::<_, std::io::Error>(bytes)
        };
        match tokio::time::timeout(timeout, talk).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(format!("worker {} failed: {e}", self.child.id().unwrap_or(0))),
            Err(_) => Err(format!("worker {} did not answer within {timeout:?}", self.child.id().unwrap_or(0))),
        }
    }
}

/// Local workers: up to `jobs.workers` children of the gateway, started on first use, each
/// doing one chunk at a time; one that dies (or stalls past the chunk timeout) is killed and
/// its chunk goes to a fresh one.
#[derive(Debug)]
pub(crate) struct Local {
    command: WorkerCommand,
    idle: Mutex<Vec<LocalWorker>>,
    slots: Semaphore,
    timeout: Duration,
}

impl Local {
    /// A pool of `workers` (at least 1).
    pub(crate) fn new(command: WorkerCommand, workers: usize, timeout: Duration) -> Local {
        Local { command, idle: Mutex::new(Vec::new()), slots: Semaphore::new(workers.max(1)), timeout }
    }

    fn spawn(&self) -> Result<LocalWorker, String> {
        let mut child = self
            .command
            .command(&["--stdio".to_owned()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.command.bin.display()))?;
        let pid = child.id().unwrap_or(0);
        log_stderr(&mut child, format!("local-{pid}"));
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else { return Err("worker without pipes".into()) };
        info!(pid, "job worker started");
        Ok(LocalWorker { child, stdin, stdout })
    }
}

#[async_trait]
impl Dispatch for Local {
    async fn run(&self, _job: &str, chunk: u32, task: Vec<u8>) -> Result<(ChunkResult, u32), String> {
        let _slot = self.slots.acquire().await.map_err(|_| "job workers stopped".to_owned())?;
        let mut last_error = String::new();
        for attempt in 0..LOCAL_ATTEMPTS {
            let worker = self.idle.lock().await.pop();
            let mut worker = match worker {
                Some(w) => w,
                None => self.spawn()?,
            };
            match worker.exchange(&task, self.timeout).await {
                Ok(bytes) => {
                    let result = ChunkResult::decode(&bytes).map_err(|e| format!("chunk {chunk}: worker answered garbage: {e}"))?;
                    self.idle.lock().await.push(worker);
                    return Ok((result, attempt));
                }
                Err(e) => {
                    warn!(chunk, attempt, "job chunk lost: {e}; retrying on a fresh worker");
                    metrics::counter!("sightline_job_chunk_retries_total").increment(1);
                    let _ = worker.child.start_kill();
                    last_error = e;
                }
            }
        }
        Err(format!("chunk {chunk}: {LOCAL_ATTEMPTS} workers failed it; the last: {last_error}"))
    }

    async fn cancel(&self, _job: &str) {}

    fn kind(&self) -> &'static str {
        "local"
    }
}

/// Redis Streams: tasks go to [`keys::TASKS`] for the consumer group of every `infer-worker
/// job --redis` (here or on other machines); results come back on per-chunk lists. Workers
/// take over each other's chunks ([`wire::job::keys`]); the gateway only waits, at most the
/// chunk timeout. `jobs.workers` local processes join the group.
#[derive(Debug)]
pub(crate) struct RedisQueue {
    client: redis::Client,
    timeout: Duration,
    _workers: Vec<tokio::task::JoinHandle<()>>,
}

fn redis_config(response: Option<Duration>) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new().set_response_timeout(response).set_connection_timeout(Some(Duration::from_secs(2)))
}

impl RedisQueue {
    /// Connects, creates the consumer group, and starts `workers` local Redis workers
    /// (restarted when they exit).
    pub(crate) async fn new(
        url: &str,
        command: WorkerCommand,
        workers: usize,
        config: &crate::config::JobsConfig,
    ) -> anyhow::Result<RedisQueue> {
        let client = redis::Client::open(url)?;
        let mut con = client.get_multiplexed_async_connection_with_config(&redis_config(Some(Duration::from_secs(5)))).await?;
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(keys::TASKS).arg(keys::GROUP).arg("0").arg("MKSTREAM").query_async(&mut con).await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        let extra = vec![
            "--redis".to_owned(),
            url.to_owned(),
            "--claim-idle-ms".to_owned(),
            config.claim_idle.as_millis().to_string(),
            "--exit-with-parent".to_owned(),
        ];
        let handles = (0..workers).map(|i| tokio::spawn(supervise(command.clone(), extra.clone(), i))).collect();
        Ok(RedisQueue { client, timeout: config.chunk_timeout, _workers: handles })
    }

    async fn connection(&self, response: Option<Duration>) -> Result<redis::aio::MultiplexedConnection, String> {
        self.client.get_multiplexed_async_connection_with_config(&redis_config(response)).await.map_err(|e| format!("Redis: {e}"))
    }
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        for h in &self._workers {
            h.abort();
        }
    }
}

/// Keeps one local Redis worker running.
async fn supervise(command: WorkerCommand, extra: Vec<String>, index: usize) {
    loop {
        match command.command(&extra).stdin(Stdio::null()).stdout(Stdio::null()).spawn() {
            Ok(mut child) => {
                log_stderr(&mut child, format!("redis-{index}"));
                let status = child.wait().await;
                warn!(worker = index, ?status, "job worker exited; restarting");
            }
            Err(e) => warn!(worker = index, "cannot run {}: {e}", command.bin.display()),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl Dispatch for RedisQueue {
    async fn run(&self, job: &str, chunk: u32, task: Vec<u8>) -> Result<(ChunkResult, u32), String> {
        let key = keys::result(job, chunk);
        let mut con = self.connection(Some(Duration::from_secs(30))).await?;
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut con).await.map_err(|e| format!("Redis: {e}"))?;
        let _: String = redis::cmd("XADD")
            .arg(keys::TASKS)
            .arg("*")
            .arg("job")
            .arg(job)
            .arg("chunk")
            .arg(chunk)
            .arg("task")
            .arg(task)
            .query_async(&mut con)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        // A connection of its own: BLPOP blocks it.
        let mut wait = self.connection(None).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "chunk {chunk}: no worker answered within {:?} (is an `infer-worker job --redis` running?)",
                    self.timeout
                ));
            }
            let popped: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
                .arg(&key)
                .arg(left.as_secs_f64().clamp(0.1, 5.0))
                .query_async(&mut wait)
                .await
                .map_err(|e| format!("Redis: {e}"))?;
            if let Some((_, bytes)) = popped {
                let result = ChunkResult::decode(&bytes).map_err(|e| format!("chunk {chunk}: a worker answered garbage: {e}"))?;
                let retries = u32::from(result.header.retried);
                if retries > 0 {
                    metrics::counter!("sightline_job_chunk_retries_total").increment(1);
                }
                return Ok((result, retries));
            }
        }
    }

    async fn cancel(&self, job: &str) {
        if let Ok(mut con) = self.connection(Some(Duration::from_secs(5))).await {
            let _: redis::RedisResult<()> =
                redis::cmd("SET").arg(keys::cancelled(job)).arg(1).arg("EX").arg(86_400).query_async(&mut con).await;
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The dispatcher the config asks for: Redis Streams with `state.redis_url`, else local
/// workers.
pub(crate) async fn from_config(config: &Config) -> anyhow::Result<Arc<dyn Dispatch>> {
    let command = WorkerCommand::new(config);
    let jobs = &config.jobs;
    Ok(match &config.state.redis_url {
        Some(url) => Arc::new(RedisQueue::new(url, command, jobs.workers, jobs).await?),
        None => Arc::new(Local::new(command, jobs.workers, jobs.chunk_timeout)),
    })
}
