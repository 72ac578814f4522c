//! Client → server: every message the client sends passes here, statements
//! are judged by the [`Gate`], and allowed bytes are forwarded unchanged.
//!
//! A refused message is not simply dropped: the server must end up in the
//! same state as if it had refused the statement itself (an explicit
//! transaction failed, the rest of an extended-protocol batch skipped up to
//! Sync, the implicit transaction rolled back). So pgward sends a "poison" in
//! its place: a statement that fails on the server at the same point. The
//! backend half, which knows which answer belongs to which message (see
//! [`super::shared::Expected`]), then swaps the server's error for the refusal.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::gate::{Gate, Verdict};
use super::shared::{Handling, Reach, SessionShared};
use crate::protocol::fields::Fields;
use crate::protocol::frame::{FrameError, FrameReader, Piece, Want, body};
use crate::protocol::reply::PgError;
use crate::protocol::tag;

/// Output is written once this much is batched, even if more input is buffered.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// How the client side of a session ended.
#[derive(Debug)]
pub enum ClientEnd {
    /// Terminate message or a clean close.
    Gone,
    /// The client broke the protocol; it gets this error before the connection closes.
    Fatal(PgError),
    /// Nothing from the client for `limits.idle_client_timeout_ms`.
    Idle,
    Io(std::io::Error),
}

/// Which client messages pgward must see whole: everything but COPY data,
/// which is streamed.
fn frontend_want(tag: u8) -> Want {
    match tag {
        tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Want::PassThrough,
        _ => Want::Whole,
    }
}

pub struct Frontend<'a> {
    pub shared: &'a SessionShared,
    pub gate: &'a mut Gate,
    pub idle_timeout: Option<std::time::Duration>,
}

impl Frontend<'_> {
    pub async fn run<R, W>(&mut self, reader: &mut FrameReader<R>, server: &mut W) -> ClientEnd
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut out = BytesMut::with_capacity(8 * 1024);
        loop {
            // Idleness is time with nothing from the client *and* nothing
            // owed by the server: a long-running query is not idle.
            // (FrameReader::next is cancel-safe: bytes read stay buffered.)
            let next = loop {
                let Some(limit) = self.idle_timeout else {
                    break reader.next(frontend_want).await;
                };
                match tokio::time::timeout(limit, reader.next(frontend_want)).await {
                    Ok(r) => break r,
                    Err(_) if self.shared.busy() || reader.has_buffered() => continue,
                    Err(_) => return ClientEnd::Idle,
                }
            };
            let piece = match next {
                Ok(Some(piece)) => piece,
                Ok(None) => return ClientEnd::Gone,
                Err(e) => return frame_error_end(e),
            };
            let terminate = match piece {
                Piece::PassThrough(bytes) if out.is_empty() => {
                    // Streamed COPY data: straight through, no copy.
                    if let Err(e) = server.write_all(&bytes).await {
                        return ClientEnd::Io(e);
                    }
                    false
                }
                Piece::PassThrough(bytes) => {
                    out.extend_from_slice(&bytes);
                    false
                }
                Piece::Frame { tag, bytes } => self.on_frame(tag, &bytes, &mut out),
            };
            if terminate || !reader.has_buffered() || out.len() >= FLUSH_THRESHOLD {
                if let Err(e) = server.write_all(&out).await {
                    return ClientEnd::Io(e);
                }
                out.clear();
            }
            if terminate {
                return ClientEnd::Gone;
            }
        }
    }

    /// Handles one whole client message; returns true for Terminate.
    fn on_frame(&mut self, t: u8, frame: &[u8], out: &mut BytesMut) -> bool {
        match t {
            tag::QUERY => {
                let sql = Fields::new(body(frame)).cstr();
                let verdict = self.gate.on_query(sql, self.shared);
                let drafts = self.gate.take_drafts();
                let handling = match verdict {
                    Verdict::Forward => {
                        out.extend_from_slice(frame);
                        Handling::Relay
                    }
                    Verdict::Rewrite(rewrite) => {
                        encode_query(&rewrite.sql, out);
                        Handling::SwallowCommandCompletes(rewrite.inserted)
                    }
                    Verdict::Refuse(err) => {
                        encode_poison_query(out);
                        Handling::Refusal(err.to_bytes())
                    }
                };
                self.shared.expect_with(Reach::UntilReady, handling, drafts);
            }
            tag::PARSE => {
                let mut f = Fields::new(body(frame));
                let name = f.cstr();
                let sql = f.cstr();
                match self.gate.on_parse(name, sql, self.shared) {
                    Verdict::Forward | Verdict::Rewrite(_) => {
                        out.extend_from_slice(frame);
                        self.shared.expect(Reach::Completion, Handling::Relay);
                    }
                    Verdict::Refuse(err) => {
                        encode_poison_parse(name.unwrap_or(""), out);
                        let drafts = self.gate.take_drafts();
                        self.shared.expect_with(
                            Reach::Completion,
                            Handling::Refusal(err.to_bytes()),
                            drafts,
                        );
                    }
                }
            }
            tag::FUNCTION_CALL => {
                let verdict = self.gate.on_function_call();
                let drafts = self.gate.take_drafts();
                let handling = match verdict {
                    Verdict::Forward | Verdict::Rewrite(_) => {
                        self.inject_tenant(out);
                        out.extend_from_slice(frame);
                        Handling::Relay
                    }
                    // A FunctionCall is answered like a Query (result or
                    // error, then ReadyForQuery), so a Query poison fits.
                    Verdict::Refuse(err) => {
                        encode_poison_query(out);
                        Handling::Refusal(err.to_bytes())
                    }
                };
                self.shared.expect_with(Reach::UntilReady, handling, drafts);
            }
            tag::BIND => {
                let mut f = Fields::new(body(frame));
                let portal = f.cstr();
                match self.gate.on_bind(portal, f.cstr()) {
                    Verdict::Forward | Verdict::Rewrite(_) => {
                        self.inject_tenant(out);
                        out.extend_from_slice(frame);
                        self.shared.expect(Reach::Completion, Handling::Relay);
                    }
                    Verdict::Refuse(err) => {
                        // Like an error at Bind: the server fails here and
                        // skips to Sync.
                        encode_poison_parse(REFUSED_STATEMENT, out);
                        let drafts = self.gate.take_drafts();
                        self.shared.expect_with(
                            Reach::Completion,
                            Handling::Refusal(err.to_bytes()),
                            drafts,
                        );
                    }
                }
            }
            tag::EXECUTE => {
                self.inject_tenant(out);
                self.gate.on_execute(Fields::new(body(frame)).cstr());
                let drafts = self.gate.take_drafts();
                out.extend_from_slice(frame);
                self.shared
                    .expect_with(Reach::Completion, Handling::Relay, drafts);
            }
            tag::CLOSE => {
                let mut f = Fields::new(body(frame));
                let kind = f.u8();
                self.gate.on_close(kind, f.cstr());
                out.extend_from_slice(frame);
                self.shared.expect(Reach::Completion, Handling::Relay);
            }
            tag::DESCRIBE => {
                out.extend_from_slice(frame);
                self.shared.expect(Reach::Completion, Handling::Relay);
            }
            tag::SYNC => {
                let commit = self.gate.on_sync();
                out.extend_from_slice(frame);
                self.shared
                    .expect_with(Reach::Sync, Handling::Relay, commit);
            }
            tag::TERMINATE => {
                out.extend_from_slice(frame);
                return true;
            }
            // Flush and anything unknown: the server answers unknown types
            // with a FATAL error, which is relayed.
            _ => out.extend_from_slice(frame),
        }
        false
    }
}

impl Frontend<'_> {
    /// Sends the tenant statement ahead of an execution when the current
    /// transaction does not have it yet: Parse/Bind/Execute/Close of a
    /// statement named for pgward (the client's unnamed statement stays
    /// intact; the unnamed portal is free, a batch's own Bind comes after),
    /// all four answers dropped.
    fn inject_tenant(&mut self, out: &mut BytesMut) {
        let Some(sql) = self.gate.tenant_before_execution(self.shared) else {
            return;
        };
        // Parse: name, text, no parameter types.
        put_frame(
            out,
            tag::PARSE,
            &[TENANT_STATEMENT, b"\0", sql.as_bytes(), b"\0", b"\0\0"],
        );
        // Bind: unnamed portal, the statement, no formats, parameters or result formats.
        put_frame(
            out,
            tag::BIND,
            &[b"\0", TENANT_STATEMENT, b"\0", b"\0\0\0\0\0\0"],
        );
        // Execute: unnamed portal, no row limit.
        put_frame(out, tag::EXECUTE, &[b"\0", b"\0\0\0\0"]);
        put_frame(out, tag::CLOSE, &[b"S", TENANT_STATEMENT, b"\0"]);
        for _ in 0..4 {
            self.shared.expect(Reach::Completion, Handling::Swallow);
        }
    }
}

/// Name the poison standing in for a refused Bind parses under: never the
/// client's unnamed statement, which a failed Bind leaves intact.
const REFUSED_STATEMENT: &str = "pgward_refused";

/// Name of the prepared statement that sets the tenant (without its NUL).
const TENANT_STATEMENT: &[u8] = b"pgward_tenant";

/// Appends a frame whose body is the concatenation of `parts`.
fn put_frame(out: &mut BytesMut, t: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.put_u8(t);
    out.put_i32((4 + len) as i32);
    for p in parts {
        out.put_slice(p);
    }
}

fn encode_query(sql: &str, out: &mut BytesMut) {
    put_frame(out, tag::QUERY, &[sql.as_bytes(), b"\0"]);
}

fn frame_error_end(e: FrameError) -> ClientEnd {
    match e {
        FrameError::Io(e) => ClientEnd::Io(e),
        FrameError::UnexpectedEof => ClientEnd::Gone,
        FrameError::TooLarge { tag, len, max } => ClientEnd::Fatal(PgError::fatal(
            "54000",
            format!(
                "message of type {tag:?} is {len} bytes, over pgward's limit of {max} (limits.max_message_bytes)"
            ),
        )),
        e @ FrameError::BadLength { .. } => ClientEnd::Fatal(PgError::fatal(
            "08P01",
            format!("invalid frontend message: {e}"),
        )),
    }
}

/// A statement that fails on the server: relation lookup happens at parse
/// analysis, so it fails at Parse time in the extended protocol too, and
/// nobody can create objects in pg_catalog. Its error never reaches the
/// client: the backend half swaps in the refusal.
const POISON_SQL: &str = "SELECT FROM pg_catalog.\"pgward: statement refused\"";

fn encode_poison_query(out: &mut BytesMut) {
    encode_query(POISON_SQL, out);
}

fn encode_poison_parse(name: &str, out: &mut BytesMut) {
    put_frame(
        out,
        tag::PARSE,
        &[
            name.as_bytes(),
            b"\0",
            POISON_SQL.as_bytes(),
            b"\0",
            b"\0\0",
        ],
    );
}
