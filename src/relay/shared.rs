//! State both directions of one session read and write: the transaction
//! status, and the queue of answers the server owes.
//!
//! Both halves run inside the session's single task (polled together by
//! `select!`), so the mutex below is never contended; it exists only because
//! the session future must be `Send`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use bytes::BytesMut;

use super::notes::{Draft, Drafts};
use crate::audit::AuditDecision;
use crate::protocol::TxnStatus;

/// How far the answer to one forwarded message reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Query or FunctionCall: everything up to and including ReadyForQuery.
    UntilReady,
    /// Parse, Bind, Describe, Execute, Close: up to one completion message
    /// (ParseComplete, BindComplete, CloseComplete, CommandComplete,
    /// EmptyQueryResponse, PortalSuspended, RowDescription or NoData), or an
    /// error, after which the server skips everything up to Sync.
    Completion,
    /// Sync: the ReadyForQuery.
    Sync,
}

/// What pgward does with the answer to one forwarded message.
#[derive(Debug, Default)]
pub enum Handling {
    /// Relay it unchanged.
    #[default]
    Relay,
    /// The message was pgward's own (tenant injection): the client never sees
    /// its answer, except an error, which stands in for the one the client's
    /// next message would have received (the server now skips to Sync).
    Swallow,
    /// Relay a simple Query's answer, minus the CommandCompletes with these
    /// ordinals (0-based, counted within this Query's answer): the answers to
    /// statements pgward inserted into the text.
    SwallowCommandCompletes(Vec<u32>),
    /// The message was a "poison" standing in for a refused one (see
    /// `relay::frontend`): its error is replaced by this ErrorResponse.
    Refusal(BytesMut),
}

/// One answer the server owes, in the order the messages were sent.
#[derive(Debug)]
pub struct Expected {
    pub reach: Reach,
    pub handling: Handling,
    /// CommandCompletes seen so far in this answer.
    pub completes_seen: u32,
    /// Of those, the ones the client saw (answers to its own statements).
    pub client_completes: u32,
    /// Audit drafts of the statements this answer completes, in order.
    pub drafts: Drafts,
}

#[derive(Debug)]
pub struct SessionShared {
    txn: AtomicU8,
    expected: Mutex<VecDeque<Expected>>,
    /// Statements recorded, refused, and monitor-mode would-be refusals.
    recorded: AtomicU64,
    denied: AtomicU64,
    monitored: AtomicU64,
}

impl Default for SessionShared {
    fn default() -> Self {
        SessionShared {
            txn: AtomicU8::new(TxnStatus::Idle.as_byte()),
            expected: Mutex::new(VecDeque::new()),
            recorded: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            monitored: AtomicU64::new(0),
        }
    }
}

impl SessionShared {
    /// Transaction status from the latest ReadyForQuery.
    pub fn txn_status(&self) -> TxnStatus {
        TxnStatus::from_byte(self.txn.load(Ordering::Relaxed)).unwrap_or(TxnStatus::Idle)
    }

    pub fn set_txn_status(&self, status: TxnStatus) {
        self.txn.store(status.as_byte(), Ordering::Relaxed);
    }

    /// Records that a message was sent whose answer is `reach` long.
    pub fn expect(&self, reach: Reach, handling: Handling) {
        self.expect_with(reach, handling, Drafts::new());
    }

    /// Like [`expect`](Self::expect), with the audit drafts the answer completes.
    pub fn expect_with(&self, reach: Reach, handling: Handling, drafts: Drafts) {
        self.queue().push_back(Expected {
            reach,
            handling,
            completes_seen: 0,
            client_completes: 0,
            drafts,
        });
    }

    /// Whether the server still owes answers (something is in flight).
    pub fn busy(&self) -> bool {
        !self.queue().is_empty()
    }

    /// Counts one recorded statement.
    pub fn count(&self, decision: AuditDecision) {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        match decision {
            AuditDecision::Deny => self.denied.fetch_add(1, Ordering::Relaxed),
            AuditDecision::Monitor => self.monitored.fetch_add(1, Ordering::Relaxed),
            AuditDecision::Allow => 0,
        };
    }

    /// (recorded, denied, monitored) statements so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.recorded.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
            self.monitored.load(Ordering::Relaxed),
        )
    }

    /// Drafts of answers that will never come (the session ended).
    pub fn abandoned(&self) -> Vec<Draft> {
        self.queue().drain(..).flat_map(|e| e.drafts).collect()
    }

    /// Gives the backend half the queue to work through.
    pub fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Expected>> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }
}
