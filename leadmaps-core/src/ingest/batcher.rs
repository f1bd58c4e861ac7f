//! Durable acknowledgement with group commit.
//!
//! Requests put their batch on a bounded queue and wait. One batcher task takes everything queued
//! (up to `max_events`), optionally lingers for more, commits it in one store transaction, and
//! only then answers every waiting request with its own verdicts. While a commit is in flight the
//! next group gathers, so throughput grows with load without a fixed delay. A full queue is
//! refused at once (the HTTP layer answers 503 with Retry-After) rather than buffered unbounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{EventBatch, Verdict};
use crate::error::{Error, Result};
use crate::store::EventSink;

/// Sleeps for a duration on the caller's runtime; core has none of its own.
pub type Sleeper = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Batcher settings.
#[derive(Clone)]
pub struct BatcherConfig {
    /// Most events per transaction (a single larger request is still committed whole).
    pub max_events: usize,
    /// How many requests may wait in the queue.
    pub queue_capacity: usize,
    /// How long to wait for more events after the first, when fewer than `max_events` are queued.
    /// Zero commits at once (the default: group commit batches under load by itself).
    pub linger: Duration,
    /// Needed when `linger` is not zero.
    pub sleeper: Option<Sleeper>,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_events: 1000,
            queue_capacity: 4096,
            linger: Duration::ZERO,
            sleeper: None,
        }
    }
}

impl std::fmt::Debug for BatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatcherConfig")
            .field("max_events", &self.max_events)
            .field("queue_capacity", &self.queue_capacity)
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

/// The queue refused the batch: it is full, or the batcher has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ingest queue full")]
pub struct QueueFull;

/// Counters of the batcher, for metrics.
#[derive(Debug, Default)]
pub struct BatcherStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Events (and drop counts) in committed transactions.
    pub committed_items: AtomicU64,
    /// Transactions that failed.
    pub failures: AtomicU64,
    /// Requests waiting in the queue now.
    pub queue_depth: AtomicUsize,
    /// The largest group committed so far.
    pub max_group: AtomicUsize,
    /// Time spent in the sink's `append_events`, summed, in microseconds (a monotonic clock for
    /// metrics only; it never reaches stored data).
    pub commit_micros: AtomicU64,
}

struct Job {
    batch: EventBatch,
    reply: oneshot::Sender<Result<Vec<Verdict>>>,
}

/// The sending side: cheap to clone, one per request handler.
#[derive(Clone)]
pub struct BatchQueue {
    tx: mpsc::Sender<Job>,
    stats: Arc<BatcherStats>,
}

impl std::fmt::Debug for BatchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchQueue").finish_non_exhaustive()
    }
}

/// A submitted batch; await [`Pending::committed`] for its verdicts.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Vec<Verdict>>>);

impl Pending {
    /// Resolves once the batch's transaction committed (or failed).
    ///
    /// # Errors
    /// The sink's error; [`Error::Unavailable`] if the batcher stopped first.
    pub async fn committed(self) -> Result<Vec<Verdict>> {
        self.0.await.map_err(|_| Error::unavailable(QueueFull))?
    }
}

impl BatchQueue {
    /// Queues a batch without waiting.
    ///
    /// # Errors
    /// [`QueueFull`] when the queue is at capacity or the batcher has stopped.
    pub fn submit(&self, batch: EventBatch) -> Result<Pending, QueueFull> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { batch, reply })
            .map_err(|_| QueueFull)?;
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        Ok(Pending(rx))
    }

    /// The batcher's counters.
    pub fn stats(&self) -> &Arc<BatcherStats> {
        &self.stats
    }
}

/// The receiving side: run it on a task; it ends when every [`BatchQueue`] is dropped and the
/// queue is drained, so a graceful shutdown loses nothing that was queued.
pub struct Batcher {
    rx: mpsc::Receiver<Job>,
    sink: Arc<dyn EventSink>,
    config: BatcherConfig,
    stats: Arc<BatcherStats>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A queue and its batcher writing to `sink`.
pub fn channel(sink: Arc<dyn EventSink>, config: BatcherConfig) -> (BatchQueue, Batcher) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let stats = Arc::new(BatcherStats::default());
    (
        BatchQueue {
            tx,
            stats: stats.clone(),
        },
        Batcher {
            rx,
            sink,
            config,
            stats,
        },
    )
}

impl Batcher {
    fn size(job: &Job) -> usize {
        job.batch.events().len() + job.batch.drops().len()
    }

    fn take_ready(&mut self, jobs: &mut Vec<Job>, size: &mut usize) {
        while *size < self.config.max_events {
            match self.rx.try_recv() {
                Ok(job) => {
                    *size += Self::size(&job);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
    }

    /// Commits groups until the queue is closed and empty.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut size = Self::size(&first);
            let mut jobs = vec![first];
            self.take_ready(&mut jobs, &mut size);
            if let Some(sleep) = &self.config.sleeper
                && size < self.config.max_events
                && !self.config.linger.is_zero()
            {
                sleep(self.config.linger).await;
                self.take_ready(&mut jobs, &mut size);
            }
            self.stats
                .queue_depth
                .fetch_sub(jobs.len(), Ordering::Relaxed);
            self.commit(jobs).await;
        }
    }

    async fn commit(&self, jobs: Vec<Job>) {
        let mut group = EventBatch::new(self.sink.region());
        let mut counts = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            counts.push(job.batch.events().len());
            group.append(job.batch);
            replies.push(job.reply);
        }
        let items = (group.events().len() + group.drops().len()) as u64;
        let started = std::time::Instant::now();
        let outcome = self.sink.append_events(&group).await;
        self.stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Ok(verdicts) if verdicts.len() == group.events().len() => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .committed_items
                    .fetch_add(items, Ordering::Relaxed);
                self.stats
                    .max_group
                    .fetch_max(items as usize, Ordering::Relaxed);
                let mut rest = verdicts.as_slice();
                for (reply, count) in replies.into_iter().zip(counts) {
                    let (mine, tail) = rest.split_at(count);
                    rest = tail;
                    let _ = reply.send(Ok(mine.to_vec()));
                }
            }
            outcome => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let kind = match outcome {
                    Err(e) if e.kind() == crate::ErrorKind::Unavailable => "unavailable",
                    Err(_) => "failed",
                    Ok(_) => "wrong verdict count",
                };
                for reply in replies {
                    let _ = reply.send(Err(Error::unavailable(CommitFailed(kind))));
                }
            }
        }
    }
}

/// The group's transaction did not commit; nothing of it was stored.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("event batch not committed: {0}")]
struct CommitFailed(&'static str);
