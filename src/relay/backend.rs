//! Server → client: responses stream back unchanged, except that pgward
//! tracks which forwarded message each answer belongs to (so it can drop the
//! answers to its own injected messages and swap a poison's error for the
//! refusal the client should see), and records the transaction status.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::notes::{Draft, Drafts};
use super::shared::{Expected, Handling, Reach, SessionShared};
use crate::context::ProxyContext;
use crate::protocol::TxnStatus;
use crate::protocol::backend_tag;
use crate::protocol::fields::error_field;
use crate::protocol::frame::{FrameError, FrameReader, Piece, Want, body};

const FLUSH_THRESHOLD: usize = 64 * 1024;

/// The largest server message pgward holds in memory to read it (every one
/// but DataRow and CopyData, which stream). Errors, notices, row
/// descriptions and command tags are kilobytes; an error quoting a huge
/// input (`SELECT repeat('x', 300000000)::int`) would otherwise make any
/// client able to grow pgward's memory by hundreds of megabytes per session.
pub const MAX_WHOLE_SERVER_MESSAGE: usize = 16 * 1024 * 1024;

/// SQLSTATE in_failed_sql_transaction: the server's answer to any statement in
/// an aborted transaction block, which is what PostgreSQL would have said to
/// the refused statement too, so it is relayed as is.
const IN_FAILED_TRANSACTION: &[u8] = b"25P02";

/// SQLSTATE no_active_sql_transaction: the warning on `SET LOCAL` outside a
/// transaction block.
const NO_ACTIVE_TRANSACTION: &[u8] = b"25P01";

/// Recorded outcomes for answers without a CommandComplete.
const PORTAL_SUSPENDED_OUTCOME: &str = "PORTAL SUSPENDED";
const FUNCTION_CALL_OUTCOME: &str = "FUNCTION CALL";

/// How the server side of a session ended.
#[derive(Debug)]
pub enum ServerEnd {
    /// The server closed the connection after sending a FATAL error (already relayed).
    ClosedAfterFatal,
    /// The server vanished without a word (crash, network).
    Vanished,
    Io(std::io::Error),
    ClientIo(std::io::Error),
    /// The server sent a message pgward would have to hold whole, larger
    /// than [`MAX_WHOLE_SERVER_MESSAGE`].
    TooLarge {
        tag: char,
        len: usize,
    },
}

/// DataRow and CopyData can be huge and are never looked into: they stream.
/// Every other message is small and is seen whole, to follow the answers.
fn backend_want(tag: u8) -> Want {
    match tag {
        b'D' | b'd' => Want::PassThrough,
        _ => Want::Whole,
    }
}

/// Messages that complete the answer to one extended-protocol message.
fn completes_extended(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b'3' | b'C' | b'I' | b's' | b'n' | b'T')
}

/// Relays the server's answers until it closes. `finished` holds the drafts
/// of statements answered but not yet queued for the audit; the caller
/// records what is left there if this future is dropped.
pub async fn run<R, W>(
    shared: &SessionShared,
    reader: &mut FrameReader<R>,
    client: &mut W,
    ctx: &ProxyContext,
    finished: &mut Vec<Draft>,
) -> ServerEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut saw_fatal = false;
    loop {
        let piece = match reader.next(backend_want).await {
            Ok(Some(piece)) => piece,
            Ok(None) | Err(FrameError::UnexpectedEof) => {
                let _ = client.write_all(&out).await;
                return if saw_fatal {
                    ServerEnd::ClosedAfterFatal
                } else {
                    ServerEnd::Vanished
                };
            }
            Err(FrameError::Io(e)) => return ServerEnd::Io(e),
            Err(FrameError::TooLarge { tag, len, .. }) => {
                let _ = client.write_all(&out).await;
                return ServerEnd::TooLarge { tag, len };
            }
            Err(e) => {
                tracing::error!("protocol error from PostgreSQL: {e}");
                return ServerEnd::Vanished;
            }
        };
        match piece {
            Piece::PassThrough(bytes) if out.is_empty() => {
                if let Err(e) = client.write_all(&bytes).await {
                    return ServerEnd::ClientIo(e);
                }
            }
            Piece::PassThrough(bytes) => out.extend_from_slice(&bytes),
            Piece::Frame { tag, bytes } => {
                if tag == backend_tag::ERROR_RESPONSE && is_fatal(body(&bytes)) {
                    saw_fatal = true;
                }
                route(shared, tag, &bytes, &mut out, finished);
            }
        }
        // A statement's record is queued before its result reaches the client.
        // Taken off `finished` only once queued: if the session ends while
        // this waits for queue space, the session's end records the rest.
        while let Some(draft) = finished.first() {
            record(shared, ctx, draft).await;
            finished.remove(0);
        }
        if !reader.has_buffered() || out.len() >= FLUSH_THRESHOLD {
            if let Err(e) = client.write_all(&out).await {
                return ServerEnd::ClientIo(e);
            }
            out.clear();
        }
    }
}

fn is_fatal(fields: &[u8]) -> bool {
    matches!(
        error_field(fields, b'V').or(error_field(fields, b'S')),
        Some(b"FATAL" | b"PANIC")
    )
}

/// Queues one statement's record and counts it for the session and the
/// metrics. Cancel-safe: cancelled while waiting for queue space (`on_full:
/// block`), it has queued and counted nothing, and `draft` can be recorded
/// again.
pub async fn record(shared: &SessionShared, ctx: &ProxyContext, draft: &Draft) {
    let record = draft.clone().finish();
    let (class, decision) = (record.identity_class.clone(), record.decision);
    let (rule, duration_us) = (record.rule.clone(), record.duration_us);
    let queued = ctx.audit.record(record).await;
    shared.count(decision);
    ctx.metrics
        .statement(&class, decision, rule.as_deref(), duration_us);
    if let Err(e) = queued {
        tracing::error!("statement not audited: {e}");
    }
}

/// Matches one whole server message to the answer it belongs to, and appends
/// what the client should see of it to `out`; records of statements it
/// completes go to `finished`.
fn route(
    shared: &SessionShared,
    tag: u8,
    frame: &[u8],
    out: &mut BytesMut,
    finished: &mut Vec<Draft>,
) {
    let mut queue = shared.queue();
    // Asynchronous messages belong to no answer, except the warning
    // PostgreSQL gives pgward's own SET LOCAL outside a BEGIN (the extended
    // protocol's implicit transaction, where it still holds): the client
    // would not have seen it without pgward.
    if matches!(
        tag,
        b'A' | backend_tag::PARAMETER_STATUS | backend_tag::NOTICE_RESPONSE
    ) {
        let own_warning = tag == backend_tag::NOTICE_RESPONSE
            && queue
                .front()
                .is_some_and(|e| matches!(e.handling, Handling::Swallow))
            && error_field(body(frame), b'C') == Some(NO_ACTIVE_TRANSACTION);
        if !own_warning {
            out.extend_from_slice(frame);
        }
        return;
    }
    match tag {
        backend_tag::READY_FOR_QUERY => {
            if let Some(status) = body(frame).first().copied().and_then(TxnStatus::from_byte) {
                shared.set_txn_status(status);
            }
            // Completions still queued were skipped after an error.
            while let Some(done) = queue.pop_front() {
                let reach = done.reach;
                finish_skipped(done, finished);
                if reach != Reach::Completion {
                    break;
                }
            }
            out.extend_from_slice(frame);
        }
        backend_tag::ERROR_RESPONSE => {
            let Some(front) = queue.front_mut() else {
                out.extend_from_slice(frame);
                return;
            };
            // A poison's error becomes the refusal, unless the server answered
            // for a failed transaction, as it would have to the real statement.
            let sqlstate = error_field(body(frame), b'C');
            let refusal = match &front.handling {
                Handling::Refusal(refusal) if sqlstate != Some(IN_FAILED_TRANSACTION) => {
                    Some(refusal)
                }
                _ => None,
            };
            let index = front.client_completes as usize;
            if let Some(draft) = front.drafts.get_mut(index) {
                match refusal {
                    Some(_) => draft.failed(crate::relay::gate::REFUSED),
                    None => draft.failed(&String::from_utf8_lossy(sqlstate.unwrap_or_default())),
                }
            }
            out.extend_from_slice(refusal.map_or(frame, |r| &r[..]));
            if front.reach == Reach::Completion {
                // The server now skips every message up to Sync.
                while queue.front().is_some_and(|e| e.reach == Reach::Completion) {
                    if let Some(done) = queue.pop_front() {
                        finish_skipped(done, finished);
                    }
                }
            }
        }
        _ => {
            let Some(front) = queue.front_mut() else {
                out.extend_from_slice(frame);
                return;
            };
            let swallow = match &front.handling {
                Handling::Swallow => true,
                Handling::SwallowCommandCompletes(ordinals) => {
                    tag == b'C' && ordinals.contains(&front.completes_seen)
                }
                Handling::Relay | Handling::Refusal(_) => false,
            };
            // What completes a statement the client sent: its CommandComplete,
            // or an Execute cut short by its row limit (it has run; a DML
            // statement entirely, its rows are fetched later), or a
            // FunctionCall's result.
            let outcome = match tag {
                backend_tag::COMMAND_COMPLETE => {
                    front.completes_seen += 1;
                    Some(
                        crate::protocol::fields::Fields::new(body(frame))
                            .cstr()
                            .unwrap_or(""),
                    )
                }
                backend_tag::PORTAL_SUSPENDED => Some(PORTAL_SUSPENDED_OUTCOME),
                backend_tag::FUNCTION_CALL_RESPONSE => Some(FUNCTION_CALL_OUTCOME),
                _ => None,
            };
            if let Some(outcome) = outcome
                && !swallow
            {
                if let Some(draft) = front.drafts.get_mut(front.client_completes as usize) {
                    draft.completed(outcome);
                }
                front.client_completes += 1;
            }
            if front.reach == Reach::Completion
                && completes_extended(tag)
                && let Some(done) = queue.pop_front()
            {
                finish(done.drafts, finished);
            }
            if !swallow {
                out.extend_from_slice(frame);
            }
        }
    }
}

/// Moves the drafts that ran (or were refused) to `finished`; statements
/// the server skipped after an earlier error never ran and get no record.
fn finish(drafts: Drafts, finished: &mut Vec<Draft>) {
    finished.extend(drafts.into_iter().filter(|d| d.record.outcome.is_some()));
}

/// [`finish`] for an answer that may have been skipped after an error. A
/// statement pgward refused (a poison stood in for it) is recorded as
/// refused even when the server skipped the poison: the attempt is what a
/// reviewer needs to see.
fn finish_skipped(done: Expected, finished: &mut Vec<Draft>) {
    let mut drafts = done.drafts;
    if let Handling::Refusal(_) = done.handling {
        for draft in drafts.iter_mut().filter(|d| d.record.outcome.is_none()) {
            draft.failed(crate::relay::gate::REFUSED);
        }
    }
    finish(drafts, finished);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::{PgError, Severity};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn feed(shared: &SessionShared, msgs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut finished = Vec::new();
        for m in msgs {
            route(shared, m[0], m, &mut out, &mut finished);
        }
        out.to_vec()
    }

    #[test]
    fn swallows_only_injected_answers() {
        let shared = SessionShared::default();
        for _ in 0..4 {
            shared.expect(Reach::Completion, Handling::Swallow);
        }
        shared.expect(Reach::Completion, Handling::Relay);
        shared.expect(Reach::Sync, Handling::Relay);
        let client_complete = msg(b'C', b"SELECT 1\0");
        let ready = msg(b'Z', b"I");
        let out = feed(
            &shared,
            &[
                msg(b'1', b""),
                msg(b'2', b""),
                msg(b'N', b"SNOTICE\0\0"),
                msg(b'C', b"SET\0"),
                msg(b'3', b""),
                client_complete.clone(),
                ready.clone(),
            ],
        );
        let mut expected = msg(b'N', b"SNOTICE\0\0");
        expected.extend(client_complete);
        expected.extend(ready);
        assert_eq!(out, expected);
        assert!(!shared.busy());
    }

    #[test]
    fn error_skips_to_sync_and_poison_error_is_replaced() {
        let shared = SessionShared::default();
        let refusal = PgError::new(Severity::Error, "42501", "refused").to_bytes();
        shared.expect(Reach::Completion, Handling::Refusal(refusal.clone()));
        shared.expect(Reach::Completion, Handling::Relay);
        shared.expect(Reach::Sync, Handling::Relay);
        let out = feed(
            &shared,
            &[msg(b'E', b"SERROR\0C42P01\0\0"), msg(b'Z', b"I")],
        );
        let mut expected = refusal.to_vec();
        expected.extend(msg(b'Z', b"I"));
        assert_eq!(out, expected);
        assert!(!shared.busy());
    }

    #[test]
    fn failed_transaction_error_is_relayed_as_is() {
        let shared = SessionShared::default();
        let refusal = PgError::new(Severity::Error, "42501", "refused").to_bytes();
        shared.expect(Reach::UntilReady, Handling::Refusal(refusal));
        let natural = msg(b'E', b"SERROR\0C25P02\0\0");
        let out = feed(&shared, &[natural.clone(), msg(b'Z', b"E")]);
        assert!(out.starts_with(&natural));
        assert_eq!(shared.txn_status(), TxnStatus::Failed);
    }

    #[test]
    fn drops_inserted_statements_command_completes() {
        let shared = SessionShared::default();
        shared.expect(
            Reach::UntilReady,
            Handling::SwallowCommandCompletes(vec![0, 2]),
        );
        let out = feed(
            &shared,
            &[
                msg(b'C', b"SET\0"),
                msg(b'C', b"COMMIT\0"),
                msg(b'C', b"SET\0"),
                msg(b'T', b"\0\0"),
                msg(b'C', b"SELECT 0\0"),
                msg(b'Z', b"T"),
            ],
        );
        let mut expected = msg(b'C', b"COMMIT\0");
        expected.extend(msg(b'T', b"\0\0"));
        expected.extend(msg(b'C', b"SELECT 0\0"));
        expected.extend(msg(b'Z', b"T"));
        assert_eq!(out, expected);
    }
}
