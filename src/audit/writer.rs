//! The writer: one task, on its own thread, between the queue and the sinks.
//! Everything that costs (normalizing, serializing, hashing, I/O, fsync)
//! happens here, never in a session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::AuditError;
use super::config::Fsync;
use super::record::{Encoder, Event, Gap, TornTail};
use super::sink::{Batch, Sink};

/// How many queued messages the writer takes at once (one write + at most
/// one fsync per batch).
const BATCH: usize = 512;
/// While stopping, how many times a failing sink is retried before giving up.
const STOP_ATTEMPTS: u32 = 5;
/// After a batch, the writer lets records accumulate this long before it
/// looks at the queue again. While it is not waiting on the queue, `record`
/// is a plain push: no wake-up of this thread (a futex syscall, about a
/// microsecond) per record. Only when the queue is large enough that this
/// cannot throttle sessions (`COALESCE_MIN_CAPACITY` records per pause).
const COALESCE: Duration = Duration::from_millis(1);
const COALESCE_MIN_CAPACITY: usize = 4 * BATCH;

pub(crate) type Ack = oneshot::Sender<Result<(), AuditError>>;

// Events travel by value: a few hundred bytes moved beats an allocation per record.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event(SystemTime, Event),
    /// Write and fsync everything queued before this message.
    Flush(Ack),
    /// Like Flush, then close the queue and stop.
    Shutdown(Ack),
}

/// Counters shared by the auditors and the writer.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Dropped since the last gap record (`on_full: drop`).
    pub dropped_pending: AtomicU64,
    pub dropped_total: AtomicU64,
    /// Events written to every sink.
    pub written: AtomicU64,
    /// Set by shutdown: a failing sink is then retried only a few times.
    pub stopping: AtomicBool,
}

pub(crate) struct Writer {
    pub rx: mpsc::Receiver<Msg>,
    pub encoder: Encoder,
    pub sinks: Vec<Box<dyn Sink>>,
    pub fsync: Fsync,
    pub shared: Arc<Shared>,
    pub torn: Option<TornTail>,
    pub batch: Batch,
    /// Events in `batch` (gap and torn-tail records are not events).
    pub batch_events: u64,
    /// When written records must be synced (`None`: nothing unsynced).
    pub sync_due: Option<Instant>,
}

impl Writer {
    pub async fn run(mut self) -> Result<(), AuditError> {
        if let Some(torn) = self.torn.take() {
            tracing::warn!(
                file = %torn.file,
                bytes = torn.bytes,
                "audit file ended with an incomplete record (crash?); cut it, continuing the chain"
            );
            self.encoder
                .seal(SystemTime::now(), "torn_tail", &torn, self.batch.buf_mut());
            self.batch.end_line();
            self.commit().await?;
            if let Err(e) = self.sync() {
                tracing::error!("audit fsync failed: {e}");
            }
        }
        let mut msgs = Vec::with_capacity(BATCH);
        loop {
            let due = self.sync_due;
            tokio::select! {
                biased;
                () = async {
                    match due {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = self.sync() {
                        tracing::error!("audit fsync failed: {e}");
                    }
                }
                n = self.rx.recv_many(&mut msgs, BATCH) => {
                    if n == 0 {
                        // Every Auditor is gone: write what is left and stop.
                        self.shared.stopping.store(true, Ordering::Relaxed);
                        self.note_gap();
                        self.commit().await?;
                        return self.sync();
                    }
                    let mut stop = None;
                    for msg in msgs.drain(..) {
                        match msg {
                            Msg::Event(at, event) => self.add(at, &event),
                            Msg::Flush(ack) => {
                                let r = self.flush().await;
                                let _ = ack.send(r);
                            }
                            Msg::Shutdown(ack) => {
                                stop = Some(ack);
                            }
                        }
                    }
                    if let Some(ack) = stop {
                        return self.stop(ack).await;
                    }
                    self.commit().await?;
                    if n < BATCH && self.rx.max_capacity() >= COALESCE_MIN_CAPACITY {
                        tokio::time::sleep(COALESCE).await;
                    }
                }
            }
        }
    }

    /// Shutdown: refuse new records, drain the queue, write, sync.
    async fn stop(mut self, ack: Ack) -> Result<(), AuditError> {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.rx.close();
        let mut others = Vec::new();
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Msg::Event(at, event) => self.add(at, &event),
                Msg::Flush(a) | Msg::Shutdown(a) => others.push(a),
            }
        }
        let result = self.flush().await;
        let report = |r: &Result<(), AuditError>| match r {
            Ok(()) => Ok(()),
            Err(e) => Err(AuditError::Write(e.to_string())),
        };
        for a in others {
            let _ = a.send(report(&result));
        }
        let _ = ack.send(report(&result));
        result
    }

    fn add(&mut self, at: SystemTime, event: &Event) {
        self.note_gap();
        self.encoder.encode_into(at, event, self.batch.buf_mut());
        self.batch.end_line();
        self.batch_events += 1;
    }

    /// Records dropped since the last look become one gap record, here.
    fn note_gap(&mut self) {
        let dropped = self.shared.dropped_pending.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.encoder.seal(
                SystemTime::now(),
                "gap",
                &Gap { dropped },
                self.batch.buf_mut(),
            );
            self.batch.end_line();
        }
    }

    async fn flush(&mut self) -> Result<(), AuditError> {
        self.note_gap();
        self.commit().await?;
        self.sync()
    }

    /// Writes the batch to every sink, retrying failing ones (with backoff)
    /// from where they stopped; takes nothing more from the queue meanwhile,
    /// so a full queue makes sessions wait (`block`) or drop (`drop`).
    /// Fails only when stopping and a sink still fails after a few retries.
    async fn commit(&mut self) -> Result<(), AuditError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut progress = vec![0usize; self.sinks.len()];
        let mut attempt = 0u32;
        loop {
            let mut failure = None;
            for (i, sink) in self.sinks.iter_mut().enumerate() {
                if progress[i] == self.batch.len() {
                    continue;
                }
                match sink.write(&self.batch, progress[i]) {
                    Ok(()) => progress[i] = self.batch.len(),
                    Err((done, e)) => {
                        progress[i] = done;
                        failure = Some(format!("{}: {e}", sink.describe()));
                    }
                }
            }
            let Some(failure) = failure else { break };
            attempt += 1;
            if self.shared.stopping.load(Ordering::Relaxed) && attempt >= STOP_ATTEMPTS {
                return Err(AuditError::Write(failure));
            }
            let backoff = Duration::from_millis(50u64 << attempt.min(7));
            tracing::error!(
                attempt,
                "audit write failed, retrying in {backoff:?} (records wait in the queue): {failure}"
            );
            tokio::time::sleep(backoff).await;
        }
        self.shared
            .written
            .fetch_add(self.batch_events, Ordering::Relaxed);
        self.batch.clear();
        self.batch_events = 0;
        match self.fsync {
            Fsync::PerRecord => {
                if let Err(e) = self.sync() {
                    tracing::error!("audit fsync failed: {e}");
                }
            }
            Fsync::Interval { interval_ms } => {
                if self.sync_due.is_none() {
                    self.sync_due = Some(Instant::now() + Duration::from_millis(interval_ms));
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        self.sync_due = None;
        let mut failure = None;
        for sink in &mut self.sinks {
            if let Err(e) = sink.sync() {
                failure = Some(format!("fsync {}: {e}", sink.describe()));
            }
        }
        match failure {
            Some(f) => Err(AuditError::Write(f)),
            None => Ok(()),
        }
    }
}
