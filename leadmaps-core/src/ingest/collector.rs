//! The collector service: from parsed events and the client's address to stored, pseudonymous
//! events and a verdict for each. The HTTP layer only extracts inputs and maps the result.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};

use super::batcher::{self, BatchQueue, Batcher, BatcherConfig, QueueFull};
use super::bot::BotFilter;
use super::event::{Event, EventId, Incoming, RejectReason};
use super::privacy::{Salts, visitor_id};
use super::{EventBatch, Verdict};
use crate::clock::Clock;
use crate::crypto::Vault;
use crate::store::{SiteRoute, SiteStore, Store};
use crate::tenancy::{Action, Gate, Principal, Region};

/// Collector settings.
#[derive(Debug, Clone, Copy)]
pub struct CollectorConfig {
    /// The one region this collector serves.
    pub region: Region,
    /// How long a domain's routing is cached in process.
    pub route_cache_ttl: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            region: Region::Eu,
            route_cache_ttl: Duration::seconds(30),
        }
    }
}

/// The client of one request. Used for the visitor hash and the filter, then dropped; never
/// stored, logged or put in an error.
#[derive(Clone, Copy)]
pub struct ClientInfo<'a> {
    /// The client address (from a trusted proxy's header, or the peer).
    pub ip: IpAddr,
    /// The User-Agent header.
    pub user_agent: &'a str,
}

impl std::fmt::Debug for ClientInfo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientInfo([REDACTED])")
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, durably.
    Accepted(EventId),
    /// Already stored earlier; nothing new.
    Duplicate(EventId),
    /// Not stored, for this reason.
    Rejected(RejectReason),
}

/// Why a whole request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// The queue is full: retry later (503).
    #[error("ingest queue full")]
    QueueFull,
    /// The store is down or the commit failed; nothing of this request was stored (503).
    #[error("store unavailable")]
    Unavailable,
    /// Every event belongs to a workspace in another region (421).
    #[error("workspace is served in another region")]
    WrongRegion,
}

/// Ingest counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: Mutex<BTreeMap<RejectReason, u64>>,
}

impl IngestStats {
    fn reject(&self, reason: RejectReason) {
        *self
            .rejected
            .lock()
            .expect("stats")
            .entry(reason)
            .or_default() += 1;
    }

    /// Accepted events so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition of these counters and the batcher's.
    pub fn render_prometheus(&self, queue: &BatchQueue) -> String {
        let b = queue.stats();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "leadmaps_events_total",
            "counter",
            "Events by outcome.",
            &[
                (
                    "{outcome=\"accepted\"}".into(),
                    self.accepted.load(Ordering::Relaxed),
                ),
                (
                    "{outcome=\"duplicate\"}".into(),
                    self.duplicate.load(Ordering::Relaxed),
                ),
            ],
        );
        let rejected: Vec<_> = self
            .rejected
            .lock()
            .expect("stats")
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{}\"}}", reason.code()), *n))
            .collect();
        metric(
            "leadmaps_events_rejected_total",
            "counter",
            "Events not stored, by reason.",
            &rejected,
        );
        metric(
            "leadmaps_batches_total",
            "counter",
            "Committed transactions.",
            &[(String::new(), b.commits.load(Ordering::Relaxed))],
        );
        metric(
            "leadmaps_batch_items_total",
            "counter",
            "Events and drop counts in committed transactions.",
            &[(String::new(), b.committed_items.load(Ordering::Relaxed))],
        );
        metric(
            "leadmaps_batch_failures_total",
            "counter",
            "Transactions that failed.",
            &[(String::new(), b.failures.load(Ordering::Relaxed))],
        );
        metric(
            "leadmaps_batch_max_items",
            "gauge",
            "Largest group committed.",
            &[(String::new(), b.max_group.load(Ordering::Relaxed) as u64)],
        );
        metric(
            "leadmaps_queue_depth",
            "gauge",
            "Requests waiting for a commit.",
            &[(String::new(), b.queue_depth.load(Ordering::Relaxed) as u64)],
        );
        out
    }
}

type RouteCache = HashMap<String, (OffsetDateTime, Option<SiteRoute>)>;

/// The collector.
pub struct Collector {
    config: CollectorConfig,
    sites: Arc<dyn SiteStore>,
    salts: Arc<Salts>,
    gate: Gate,
    filter: BotFilter,
    queue: BatchQueue,
    clock: Arc<dyn Clock>,
    routes: Mutex<RouteCache>,
    stats: Arc<IngestStats>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector for `config.region`.
    pub fn new(
        config: CollectorConfig,
        sites: Arc<dyn SiteStore>,
        salts: Arc<Salts>,
        gate: Gate,
        filter: BotFilter,
        queue: BatchQueue,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            sites,
            salts,
            gate,
            filter,
            queue,
            clock,
            routes: Mutex::new(HashMap::new()),
            stats: Arc::new(IngestStats::default()),
        }
    }

    /// The usual wiring over one store: salts sealed by `vault` and kept in `store`, the default
    /// bot filter, and a batcher with default settings writing to `store`. Run the returned
    /// [`Batcher`] on a task; it stops once the collector (and every clone of its queue) is gone.
    pub fn over_store(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        gate: Gate,
        clock: Arc<dyn Clock>,
        config: CollectorConfig,
    ) -> (Self, Batcher) {
        let salts = Arc::new(Salts::new(vault, store.clone(), clock.clone()));
        let (queue, batcher) = batcher::channel(store.clone(), BatcherConfig::default());
        let collector = Self::new(config, store, salts, gate, BotFilter::new(), queue, clock);
        (collector, batcher)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The queue (for metrics).
    pub fn queue(&self) -> &BatchQueue {
        &self.queue
    }

    async fn route(&self, domain: &str) -> Result<Option<SiteRoute>, CollectError> {
        let now = self.clock.now();
        if let Some((at, route)) = self.routes.lock().expect("routes").get(domain)
            && now - *at < self.config.route_cache_ttl
        {
            return Ok(route.clone());
        }
        let route = self
            .sites
            .site_route(domain)
            .await
            .map_err(|_| CollectError::Unavailable)?;
        let mut routes = self.routes.lock().expect("routes");
        if routes.len() > 100_000 {
            routes.clear();
        }
        routes.insert(domain.to_owned(), (now, route.clone()));
        Ok(route)
    }

    /// Processes parsed events from one client. Returns once every event it accepts is durably
    /// stored, with one outcome per event in order.
    ///
    /// # Errors
    /// [`CollectError`] when nothing could be stored; no event of the request was then stored.
    pub async fn collect(
        &self,
        events: Vec<Result<Incoming, RejectReason>>,
        client: ClientInfo<'_>,
    ) -> Result<Vec<Outcome>, CollectError> {
        let now = self.clock.now();
        let mut batch = EventBatch::new(self.config.region);
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(events.len());
        let mut wrong_region = 0;
        let total = events.len();
        for parsed in events {
            let incoming = match parsed {
                Ok(incoming) => incoming,
                Err(reason) => {
                    outcomes.push(Some(Outcome::Rejected(reason)));
                    continue;
                }
            };
            let Some(route) = self.route(&incoming.domain).await? else {
                outcomes.push(Some(Outcome::Rejected(RejectReason::DomainUnknown)));
                continue;
            };
            if route.region != self.config.region {
                wrong_region += 1;
                outcomes.push(Some(Outcome::Rejected(RejectReason::WrongRegion)));
                continue;
            }
            let scope = self
                .gate
                .authorize(
                    &Principal::Collector {
                        workspace: route.workspace,
                    },
                    route.workspace,
                    Action::EventIngest,
                )
                .expect("a collector may ingest into the workspace it routes to");
            if let Some(reason) = self.filter.check(
                client.user_agent,
                incoming.referrer.as_deref(),
                client.ip,
                &route.blocked_ips,
            ) {
                batch
                    .push_drop(route.region, scope, now.date(), reason, 1)
                    .expect("region and scope checked above");
                outcomes.push(Some(Outcome::Rejected(reason)));
                continue;
            }
            let salts = self
                .salts
                .current(&scope)
                .await
                .map_err(|_| CollectError::Unavailable)?;
            let visitor = visitor_id(&salts.today, route.workspace, client.ip, client.user_agent);
            let event = Event::from_incoming(incoming, route.workspace, visitor, now);
            batch
                .push(route.region, scope, event)
                .expect("region and scope checked above");
            outcomes.push(None);
        }
        if total > 0 && wrong_region == total {
            self.stats.reject(RejectReason::WrongRegion);
            return Err(CollectError::WrongRegion);
        }
        let ids: Vec<EventId> = batch.events().iter().map(|(_, e)| e.id).collect();
        let verdicts = if batch.is_empty() {
            Vec::new()
        } else {
            let pending = self
                .queue
                .submit(batch)
                .map_err(|QueueFull| CollectError::QueueFull)?;
            pending
                .committed()
                .await
                .map_err(|_| CollectError::Unavailable)?
        };
        let mut stored = ids.into_iter().zip(verdicts);
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|slot| match slot {
                Some(outcome) => outcome,
                None => match stored.next().expect("one verdict per queued event") {
                    (id, Verdict::Accepted) => Outcome::Accepted(id),
                    (id, Verdict::Duplicate) => Outcome::Duplicate(id),
                },
            })
            .collect();
        for outcome in &outcomes {
            match outcome {
                Outcome::Accepted(_) => self.stats.accepted.fetch_add(1, Ordering::Relaxed),
                Outcome::Duplicate(_) => self.stats.duplicate.fetch_add(1, Ordering::Relaxed),
                Outcome::Rejected(reason) => {
                    self.stats.reject(*reason);
                    0
                }
            };
        }
        Ok(outcomes)
    }
}
