//! The audit stream: every statement and connection event, recorded as JSON
//! Lines in a SHA-256 hash chain, written off the hot path.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), pgward::audit::AuditError> {
//! use pgward::audit::{AuditConfig, Auditor, StatementRecord};
//! let (auditor, task) = Auditor::start(&AuditConfig::default())?;
//! // `task` resolves when the writer stops; spawn it to log a failure, or drop it.
//! tokio::spawn(async move {
//!     if let Err(e) = task.await {
//!         tracing::error!("{e}");
//!     }
//! });
//! auditor
//!     .record(StatementRecord {
//!         statement_text: "SELECT 1".into(),
//!         ..Default::default()
//!     })
//!     .await?;
//! auditor.shutdown().await?; // on SIGTERM: drain, write, fsync
//! # Ok(())
//! # }
//! ```
//!
//! [`Auditor::start`] opens the sinks on the calling thread (creating the file
//! 0600 and its directory 0700, reading the file's last record to continue the
//! chain) and starts the writer on a dedicated OS thread, `pgward-audit`, with
//! its own single-threaded tokio runtime: file I/O and fsync never occupy the
//! proxy's runtime workers, and it works whatever runtime the caller uses (or
//! none). [`Auditor`] is a cheap clone (one `Arc`). `record` only timestamps
//! the event and puts it on a bounded queue; normalization, serialization,
//! hashing and I/O happen in the writer. The writer stops after
//! [`Auditor::shutdown`], or when every `Auditor` clone is dropped (it then
//! still writes and syncs what was queued). A process that exits without
//! either loses what was queued but not yet written.
//!
//! # Records
//!
//! One JSON object per line. Every record starts with the same four members,
//! in this order, and ends with `hash`:
//!
//! | key | value |
//! | --- | --- |
//! | `seq` | 1, 2, 3... across restarts and rotated files |
//! | `ts` | when the event was recorded (`record` was called), RFC 3339 UTC with 6 fractional digits: `2025-03-04T05:06:07.123456Z`. `seq` is write order; `ts` of records from concurrent sessions may differ from it by the queueing delay |
//! | `prev` | `hash` of the record before it; 64 zeros for the first record of a chain |
//! | `type` | see below |
//! | ... | the type's members, always all of them, in the order listed (absent values are `null`) |
//! | `hash` | SHA-256 of the record's canonical bytes, lowercase hex |
//!
//! Types and their members:
//! - `statement`: `session_id`, `peer`, `identity`, `identity_class`,
//!   `upstream_user`, `database`, `tenant`, `protocol` (`simple` / `extended` /
//!   `function_call`), `kind`, `text_form` (`normalized`: literals replaced by
//!   `$n` with `pg_query::normalize`; `full`: as sent, when `full_text: true`;
//!   `withheld`: not normalizable, `text` is a marker, never the raw text),
//!   `text`, `fingerprint` (first 16 hex digits of SHA-256 of the normalized
//!   text; `null` when not normalizable), `objects` (`[{"action":"read"|"write"|"ddl",
//!   "schema":...,"name":...}]`), `decision` (`allow` / `deny` / `monitor` =
//!   would have been denied, ran in monitor mode), `rule`, `reason`, `outcome`
//!   (`{"tag":"UPDATE 3"}` or `{"sqlstate":"42501"}` or `null`), `rows`,
//!   `duration_us`. See [`StatementRecord`].
//! - `connect`, `auth`, `disconnect`, `startup_refused`, `policy_reload`: the
//!   fields of [`ConnectRecord`], [`AuthRecord`], [`DisconnectRecord`],
//!   [`StartupRefusedRecord`], [`PolicyReloadRecord`], in declaration order.
//! - `gap`: `dropped`: that many events were dropped because the queue was
//!   full (`on_full: drop` only), just before this point.
//! - `torn_tail`: `file`, `bytes`, `sha256`: at startup the file ended with an
//!   incomplete line (a crash mid-write); those bytes (hash given) were cut
//!   before appending.
//!
//! # Canonical form and verification
//!
//! A record's canonical bytes are its line, without the trailing `\n`, with
//! the final member `,"hash":"<64 hex>"` removed: i.e. the line's last 75 bytes
//! (`,"hash":"` + 64 hex + `"}`) replaced by `}`. The writer produces exactly
//! these bytes (compact JSON, UTF-8, serde_json escaping, members in the fixed
//! order above), hashes them, and appends the `hash` member; verification
//! never re-serializes, it hashes the bytes on disk. Check a file with any
//! tool:
//!
//! ```text
//! import hashlib, json, sys
//! prev = "0" * 64                      # or the last hash of the previous file
//! for n, raw in enumerate(open(sys.argv[1], "rb"), 1):
//!     line = raw.rstrip(b"\n"); rec = json.loads(line)
//!     assert line[-75:] == b',"hash":"' + rec["hash"].encode() + b'"}', n
//!     assert hashlib.sha256(line[:-75] + b"}").hexdigest() == rec["hash"], n
//!     assert rec["prev"] == prev, n
//!     prev = rec["hash"]
//! ```
//!
//! `pgward audit verify FILE...` does this (plus `seq` continuity, to tell a
//! missing record from a reordered one) over files given oldest first. The
//! chain proves order and integrity against anyone who cannot rewrite the
//! whole tail of the stream; anchor it by copying the latest `hash` elsewhere
//! (e.g. to a log host) now and then.
//!
//! # Files
//!
//! The chain continues across restarts (the writer reads the file's last
//! record; an unfinished last line is cut and a `torn_tail` record says so)
//! and across rotation ([`sink::FileSink`]: `<path>` is renamed to
//! `<path>.<YYYYMMDDTHHMMSS.ffffffZ>`; when `<path>` is empty or missing at
//! startup the newest rotated file's last record is the tip). Verify rotated
//! files oldest first, the live file last:
//! `pgward audit verify $(ls audit/pgward-audit.jsonl.* | sort) audit/pgward-audit.jsonl`.
//! The stdout sink keeps no state: with stdout only, every start begins a new
//! chain.
//!
//! # Nothing lost
//!
//! `on_full: block` (default): `record` waits for queue space, so no event is
//! ever dropped (a stuck disk stalls sessions rather than losing records: a
//! failing sink is retried with backoff and the writer takes nothing from the
//! queue meanwhile). `on_full: drop`: `record` never waits; drops are counted
//! and the writer writes a chained `gap` record. `fsync: N` (milliseconds,
//! default 200): at most N ms after a write; `fsync: per_record`: after every
//! write. `record` returns once the event is queued, not once it is durable:
//! a crash loses what was queued or written since the last fsync (a torn last
//! line at worst, never a broken chain). [`Auditor::flush`] and
//! [`Auditor::shutdown`] write and fsync everything queued before them.

pub mod chain;
mod config;
mod record;
pub mod sink;
pub mod tail;
pub mod time;
pub mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

pub use chain::ChainTip;
pub use config::{
    AuditConfig, DEFAULT_FILE, DEFAULT_FSYNC_INTERVAL_MS, DEFAULT_QUEUE_CAPACITY, FileSinkConfig,
    Fsync, OnFull, SinksConfig,
};
pub use record::{
    AuditDecision, AuditObject, AuthRecord, ConnectRecord, DisconnectRecord, Encoder, Event,
    Outcome, PolicyReloadRecord, Protocol, StartupRefusedRecord, StatementRecord, fingerprint_of,
};
pub use sink::{Batch, FileSink, Sink, StdoutSink};

use writer::{Msg, Shared, Writer};

/// Why auditing could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit: {0}")]
    Config(String),
    /// The existing file's last record is not valid: continuing would break
    /// the chain silently. Move the file aside (and verify it).
    #[error("audit: cannot continue the chain of {}: {reason}", path.display())]
    Resume { path: PathBuf, reason: String },
    #[error("audit: writing failed: {0}")]
    Write(String),
    /// The writer has stopped (after shutdown, or it failed): nothing more can
    /// be recorded.
    #[error("audit: the audit writer has stopped")]
    Closed,
}

/// [`Auditor::try_record`] could not queue the event.
#[derive(Debug)]
pub enum TryRecordError {
    /// `on_full: block` and the queue is full: the event is handed back.
    Full(Box<Event>),
    /// `on_full: drop` and the queue is full: dropped and counted (a gap record follows).
    Dropped,
    /// The writer has stopped.
    Closed(Box<Event>),
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Messages waiting in the queue now.
    pub queued: u64,
    /// Events written to every sink (gap and torn-tail records not counted).
    pub written: u64,
    /// Events dropped because the queue was full (`on_full: drop`).
    pub dropped: u64,
}

/// Records audit events. Clone it freely: all clones feed one writer.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Msg>,
    on_full: OnFull,
    shared: Arc<Shared>,
    /// [`Auditor::discarding`]: every event is dropped on the floor.
    discard: bool,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("on_full", &self.inner.on_full)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The running writer: resolves when it stops, with `Err` if it stopped
/// because a sink kept failing while stopping (or the writer thread died).
/// Dropping it does not stop the writer.
#[derive(Debug)]
pub struct AuditTask {
    done: oneshot::Receiver<Result<(), AuditError>>,
}

impl Future for AuditTask {
    type Output = Result<(), AuditError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.done).poll(cx).map(|r| {
            r.unwrap_or_else(|_| Err(AuditError::Write("the audit writer thread died".into())))
        })
    }
}

impl Auditor {
    /// Opens the sinks and starts the writer thread (see the module docs).
    pub fn start(cfg: &AuditConfig) -> Result<(Auditor, AuditTask), AuditError> {
        Self::start_with(cfg, Vec::new())
    }

    /// [`Auditor::start`] with additional sinks (written after the configured ones).
    pub fn start_with(
        cfg: &AuditConfig,
        extra: Vec<Box<dyn Sink>>,
    ) -> Result<(Auditor, AuditTask), AuditError> {
        if cfg.queue_capacity == 0 {
            return Err(AuditError::Config(
                "queue_capacity must be at least 1".into(),
            ));
        }
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        let mut tip = None;
        let mut torn = None;
        if let Some(file) = &cfg.sinks.file {
            let opened = FileSink::open(file)?;
            tip = opened.tip;
            torn = opened.torn;
            sinks.push(Box::new(opened.sink));
        }
        if cfg.sinks.stdout {
            sinks.push(Box::new(StdoutSink));
        }
        sinks.extend(extra);
        if sinks.is_empty() {
            return Err(AuditError::Config(
                "no audit sink configured (sinks: file and/or stdout)".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            rx,
            encoder: Encoder::new(tip, cfg.full_text),
            sinks,
            fsync: cfg.fsync,
            shared: shared.clone(),
            torn,
            batch: Batch::default(),
            batch_events: 0,
            sync_due: None,
        };
        let (done_tx, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| AuditError::Write(format!("cannot start the writer runtime: {e}")))?;
        std::thread::Builder::new()
            .name("pgward-audit".into())
            // The writer normalizes statements with PostgreSQL's parser,
            // which recurses as deep as the statement nests.
            .stack_size(crate::inspect::STACK_BYTES)
            .spawn(move || {
                let result = runtime.block_on(writer.run());
                if let Err(e) = &result {
                    tracing::error!("audit writer stopped: {e}");
                }
                let _ = done_tx.send(result);
            })
            .map_err(|e| AuditError::Write(format!("cannot start the writer thread: {e}")))?;
        let auditor = Auditor {
            inner: Arc::new(Inner {
                tx,
                on_full: cfg.on_full,
                shared,
                discard: false,
            }),
        };
        Ok((auditor, AuditTask { done }))
    }

    /// Benchmark builds only (feature `unaudited-benchmark`): an auditor that
    /// records nothing, so that a benchmark can measure what auditing costs.
    /// Events are dropped at [`Auditor::record`]: sessions still build them,
    /// so the measured difference slightly understates the audit's cost.
    #[cfg(feature = "unaudited-benchmark")]
    pub fn discarding() -> (Auditor, AuditTask) {
        let (tx, _rx) = mpsc::channel(1);
        let (done_tx, done) = oneshot::channel();
        let _ = done_tx.send(Ok(()));
        let auditor = Auditor {
            inner: Arc::new(Inner {
                tx,
                on_full: OnFull::Drop,
                shared: Arc::default(),
                discard: true,
            }),
        };
        (auditor, AuditTask { done })
    }

    /// Always false unless built for benchmarks: the check then compiles away.
    fn discards(&self) -> bool {
        cfg!(feature = "unaudited-benchmark") && self.inner.discard
    }

    /// Queues an event. `on_full: block`: waits while the queue is full;
    /// `on_full: drop`: never waits (a full queue drops and counts it).
    /// Fails only when the writer has stopped ([`AuditError::Closed`]).
    pub async fn record(&self, event: impl Into<Event>) -> Result<(), AuditError> {
        if self.discards() {
            return Ok(());
        }
        let msg = Msg::Event(SystemTime::now(), event.into());
        match self.inner.on_full {
            OnFull::Block => self
                .inner
                .tx
                .send(msg)
                .await
                .map_err(|_| AuditError::Closed),
            OnFull::Drop => match self.inner.tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.count_drop();
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
            },
        }
    }

    /// Queues an event without waiting, for synchronous callers.
    pub fn try_record(&self, event: impl Into<Event>) -> Result<(), TryRecordError> {
        if self.discards() {
            return Ok(());
        }
        let msg = Msg::Event(SystemTime::now(), event.into());
        let back = |m: Msg| match m {
            Msg::Event(_, e) => Box::new(e),
            _ => unreachable!("only events are sent here"),
        };
        match self.inner.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(m)) => match self.inner.on_full {
                OnFull::Block => Err(TryRecordError::Full(back(m))),
                OnFull::Drop => {
                    self.count_drop();
                    Err(TryRecordError::Dropped)
                }
            },
            Err(mpsc::error::TrySendError::Closed(m)) => Err(TryRecordError::Closed(back(m))),
        }
    }

    fn count_drop(&self) {
        self.inner
            .shared
            .dropped_pending
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .shared
            .dropped_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Writes and fsyncs everything queued before this call (waits for queue
    /// space even with `on_full: drop`).
    pub async fn flush(&self) -> Result<(), AuditError> {
        if self.discards() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Stops the writer: closes the queue (later `record` calls, from any
    /// clone, fail with [`AuditError::Closed`]), writes everything queued,
    /// fsyncs. Call it on SIGTERM. If a sink keeps failing it gives up after a
    /// few retries (about 3 s) and returns the error.
    pub async fn shutdown(self) -> Result<(), AuditError> {
        if self.discards() {
            return Ok(());
        }
        self.inner.shared.stopping.store(true, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Shutdown(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.unwrap_or_else(|_| {
            Err(AuditError::Write(
                "the audit writer stopped before flushing (see the log)".into(),
            ))
        })
    }

    pub fn stats(&self) -> AuditStats {
        let tx = &self.inner.tx;
        let s = &self.inner.shared;
        AuditStats {
            queued: (tx.max_capacity() - tx.capacity()) as u64,
            written: s.written.load(Ordering::Relaxed),
            dropped: s.dropped_total.load(Ordering::Relaxed),
        }
    }
}
