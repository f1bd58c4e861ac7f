//! Durable acknowledgement with group commit.
//!
//! Requests put their batch on a bounded queue and wait. One batcher task takes everything queued
//! (up to `max_events`), gathers while more keeps arriving, optionally lingers for more, commits
//! it in one store transaction, and only then answers every waiting request with its own
//! verdicts. While a commit is in flight the next group gathers, so throughput grows with load
//! without a fixed delay. A full queue is refused at once (the HTTP layer answers 503 with
//! Retry-After) rather than buffered unbounded.
//!
//! Gathering: before committing, the batcher lets every other task that is ready to run go
//! first, and takes what they queued; it stops once `gather` such turns in a row brought nothing
//! (or at `max_events`, or after `max_gather`). Requests that are already being handled (their
//! body read, their event parsed) then join this commit instead of waiting for the next one, and
//! an idle server commits a lone request after a few task switches, with no timer. In the ingest
//! benchmark (SQLite, 64 connections, 2 cores) it took the events per commit from about 13 to 23
//! and the durable collector from 0.28 to 0.32-0.37 of bare axum (three alternating runs each).

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
    /// How many turns in a row, each letting every ready task run first, may bring no new
    /// request before the batcher commits what it holds. Zero commits what is queued at once.
    pub gather: u32,
    /// The longest the batcher gathers before committing (measured on the monotonic clock).
    pub max_gather: Duration,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_events: 1000,
            queue_capacity: 4096,
            linger: Duration::ZERO,
            sleeper: None,
            gather: 2,
            max_gather: Duration::from_millis(2),
        }
    }
}

impl std::fmt::Debug for BatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatcherConfig")
            .field("max_events", &self.max_events)
            .field("queue_capacity", &self.queue_capacity)
            .field("linger", &self.linger)
            .field("gather", &self.gather)
            .field("max_gather", &self.max_gather)
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

    /// Takes what arrives while the other ready tasks run, until `gather` turns in a row bring
    /// nothing, the group is full, or `max_gather` has passed.
    async fn gather(&mut self, jobs: &mut Vec<Job>, size: &mut usize) {
        let started = std::time::Instant::now();
        let mut quiet = 0;
        while quiet < self.config.gather
            && *size < self.config.max_events
            && started.elapsed() < self.config.max_gather
        {
            let before = jobs.len();
            yield_once().await;
            self.take_ready(jobs, size);
            quiet = if jobs.len() == before { quiet + 1 } else { 0 };
        }
    }

    /// Commits groups until the queue is closed and empty.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut size = Self::size(&first);
            let mut jobs = vec![first];
            self.take_ready(&mut jobs, &mut size);
            self.gather(&mut jobs, &mut size).await;
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

/// Lets every other ready task run once: a wake-up from inside the poll puts this task at the
/// back of the executor's queue (tokio's `yield_now` may instead hold it until the worker has
/// nothing else to do). Runtime-agnostic, like the rest of core; also used by stores whose
/// commit ran on the batcher's own thread, so the requests that came in meanwhile are heard
/// before the next group is taken.
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use time::OffsetDateTime;

    use super::*;
    use crate::clock::ManualClock;
    use crate::ingest::{Event, EventId, RejectReason};
    use crate::store::DropCount;
    use crate::tenancy::{Action, Gate, Principal, Region, Scope, WorkspaceId};

    /// Records how many requests each group it is handed holds.
    #[derive(Default)]
    struct Groups(Mutex<Vec<usize>>);

    #[async_trait]
    impl EventSink for Groups {
        fn region(&self) -> Region {
            Region::Eu
        }
        async fn append_events(&self, batch: &EventBatch) -> Result<Vec<Verdict>> {
            // Each request counts one drop; a group merges the counts of a day and reason.
            let requests = batch.drops().iter().map(|(_, _, _, n)| *n as usize).sum();
            self.0.lock().unwrap().push(requests);
            Ok(Vec::new())
        }
        async fn events(
            &self,
            _: &Scope,
            _: OffsetDateTime,
            _: OffsetDateTime,
            _: u32,
        ) -> Result<Vec<Event>> {
            Ok(Vec::new())
        }
        async fn has_event(&self, _: &Scope, _: EventId) -> Result<bool> {
            Ok(false)
        }
        async fn drop_counts(&self, _: &Scope) -> Result<Vec<DropCount>> {
            Ok(Vec::new())
        }
        async fn delete_events_before(
            &self,
            _: &Scope,
            _: OffsetDateTime,
            _: u32,
            _: OffsetDateTime,
        ) -> Result<(u64, Option<crate::audit::AuditRecord>)> {
            Ok((0, None))
        }
    }

    /// Ten requests, half submitted at once and half one task switch later (as handlers still
    /// reading their body would), through a batcher with `gather` turns; the group sizes.
    async fn groups_of_ten_requests(gather: u32) -> Vec<usize> {
        let sink = Arc::new(Groups::default());
        let config = BatcherConfig {
            gather,
            ..BatcherConfig::default()
        };
        let (queue, batcher) = channel(sink.clone(), config);
        let batcher = tokio::spawn(batcher.run());
        let workspace = WorkspaceId::new();
        let gate = Gate::new(Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH)));
        let requests: Vec<_> = (0..10)
            .map(|i| {
                let queue = queue.clone();
                let scope = gate
                    .authorize(
                        &Principal::Collector { workspace },
                        workspace,
                        Action::EventIngest,
                    )
                    .unwrap();
                tokio::spawn(async move {
                    if i % 2 == 1 {
                        yield_once().await;
                    }
                    let mut batch = EventBatch::new(Region::Eu);
                    let day = OffsetDateTime::UNIX_EPOCH.date();
                    batch
                        .push_drop(Region::Eu, scope, day, RejectReason::Bot, 1)
                        .unwrap();
                    queue.submit(batch).unwrap().committed().await.unwrap();
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        drop(queue);
        batcher.await.unwrap();
        let groups = sink.0.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<usize>(), 10);
        groups
    }

    #[tokio::test]
    async fn gathering_commits_requests_about_to_arrive_with_the_first() {
        assert_eq!(groups_of_ten_requests(2).await, [10]);
        let at_once = groups_of_ten_requests(0).await;
        assert!(
            at_once.len() > 1,
            "without gathering the late half waits for a commit of its own: {at_once:?}"
        );
    }
}
