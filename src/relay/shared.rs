//! State both directions of one session read and write.
//!
//! Both halves run inside the session's single task (polled together by
//! `select!`), so the mutex below is never contended; it exists only because
//! the session future must be `Send`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::BytesMut;

use crate::protocol::TxnStatus;

/// A refusal waiting for its place in the server's response stream.
///
/// A refused message is replaced by a "poison" message that fails on the
/// server with an error naming `marker` (see `relay::frontend`), so that the
/// server's transaction state and its skip-to-Sync logic behave exactly as if
/// the server itself had refused. When that error comes back, pgward swaps in
/// the refusal the client should see.
#[derive(Debug)]
pub struct PendingRefusal {
    /// Unique text the poison's error message contains.
    pub marker: String,
    /// The ErrorResponse frame the client gets instead.
    pub error: BytesMut,
    /// Number of the ReadyForQuery that ends the poison's segment; once it has
    /// passed, the refusal can no longer match (an earlier error in the same
    /// segment made the server skip the poison, and the client saw that one).
    pub ready_seq: u64,
}

#[derive(Debug)]
pub struct SessionShared {
    txn: AtomicU8,
    /// ReadyForQuery-producing messages (Query, Sync, FunctionCall) sent upstream.
    ready_sent: AtomicU64,
    /// ReadyForQuery messages received from upstream.
    ready_received: AtomicU64,
    refusals: Mutex<VecDeque<PendingRefusal>>,
}

impl Default for SessionShared {
    fn default() -> Self {
        SessionShared {
            txn: AtomicU8::new(TxnStatus::Idle.as_byte()),
            ready_sent: AtomicU64::new(0),
            ready_received: AtomicU64::new(0),
            refusals: Mutex::new(VecDeque::new()),
        }
    }
}

impl SessionShared {
    /// Transaction status from the latest ReadyForQuery.
    pub fn txn_status(&self) -> TxnStatus {
        TxnStatus::from_byte(self.txn.load(Ordering::Relaxed)).unwrap_or(TxnStatus::Idle)
    }

    /// Counts a message that will be answered by one ReadyForQuery; returns its number.
    pub fn expect_ready(&self) -> u64 {
        self.ready_sent.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Number the next ReadyForQuery-producing message will get.
    pub fn next_ready_seq(&self) -> u64 {
        self.ready_sent.load(Ordering::Relaxed) + 1
    }

    /// Records a ReadyForQuery from the server and forgets refusals it closed.
    pub fn ready_received(&self, status: TxnStatus) {
        self.txn.store(status.as_byte(), Ordering::Relaxed);
        let seq = self.ready_received.fetch_add(1, Ordering::Relaxed) + 1;
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        while refusals.front().is_some_and(|r| r.ready_seq <= seq) {
            refusals.pop_front();
        }
    }

    /// Whether the server still owes answers (a query is in flight).
    pub fn busy(&self) -> bool {
        self.ready_sent.load(Ordering::Relaxed) > self.ready_received.load(Ordering::Relaxed)
    }

    pub fn push_refusal(&self, refusal: PendingRefusal) {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(refusal);
    }

    /// If the server error `message` is one of pgward's poisons, the refusal to
    /// show instead.
    pub fn take_refusal(&self, message: &[u8]) -> Option<BytesMut> {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let pos = refusals
            .iter()
            .position(|r| contains(message, r.marker.as_bytes()))?;
        refusals.remove(pos).map(|r| r.error)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
