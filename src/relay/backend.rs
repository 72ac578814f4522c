//! Server → client: responses stream back unchanged, except that pgward
//! watches ReadyForQuery (transaction status) and swaps its poisons' errors
//! for the refusals the client should see.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::shared::SessionShared;
use crate::protocol::TxnStatus;
use crate::protocol::backend_tag;
use crate::protocol::fields::error_field;
use crate::protocol::frame::{FrameError, FrameReader, Piece, Want, body};

const FLUSH_THRESHOLD: usize = 64 * 1024;

/// How the server side of a session ended.
#[derive(Debug)]
pub enum ServerEnd {
    /// The server closed the connection after sending a FATAL error (already relayed).
    ClosedAfterFatal,
    /// The server vanished without a word (crash, network).
    Vanished,
    Io(std::io::Error),
    ClientIo(std::io::Error),
}

fn backend_want(tag: u8) -> Want {
    match tag {
        backend_tag::READY_FOR_QUERY | backend_tag::ERROR_RESPONSE => Want::Whole,
        _ => Want::PassThrough,
    }
}

pub async fn run<R, W>(
    shared: &SessionShared,
    reader: &mut FrameReader<R>,
    client: &mut W,
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
            Piece::Frame {
                tag: backend_tag::READY_FOR_QUERY,
                bytes,
            } => {
                if let Some(status) = body(&bytes).first().copied().and_then(TxnStatus::from_byte) {
                    shared.ready_received(status);
                }
                out.extend_from_slice(&bytes);
            }
            Piece::Frame { bytes, .. } => {
                let fields = body(&bytes);
                if matches!(
                    error_field(fields, b'V').or(error_field(fields, b'S')),
                    Some(b"FATAL" | b"PANIC")
                ) {
                    saw_fatal = true;
                }
                match error_field(fields, b'M').and_then(|m| shared.take_refusal(m)) {
                    Some(refusal) => out.extend_from_slice(&refusal),
                    None => out.extend_from_slice(&bytes),
                }
            }
        }
        if !reader.has_buffered() || out.len() >= FLUSH_THRESHOLD {
            if let Err(e) = client.write_all(&out).await {
                return ServerEnd::ClientIo(e);
            }
            out.clear();
        }
    }
}
