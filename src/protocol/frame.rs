//! Frame boundaries on an established (post-startup) connection.
//!
//! A frame is `tag (1 byte) | length (4 bytes, includes itself) | body`.
//! [`FrameReader`] hands out either a whole frame (for the tags its caller
//! must look into) or runs of bytes to forward untouched. Pass-through bytes
//! are never accumulated: a 1 GB DataRow or CopyData message streams through
//! in buffer-sized pieces, so memory per session stays bounded whatever the
//! result size. Consecutive small pass-through frames are coalesced into one
//! piece so that a pipelined batch costs one write, not one per message.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read from the socket per call, and the initial buffer size.
const READ_CHUNK: usize = 16 * 1024;

/// Whether the caller needs to see a message of a given tag whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Whole,
    PassThrough,
}

/// One unit handed out by [`FrameReader::next`].
#[derive(Debug)]
pub enum Piece {
    /// A complete frame, header included.
    Frame { tag: u8, bytes: BytesMut },
    /// Bytes to forward unchanged: complete uninteresting frames, or part of one
    /// large frame being streamed.
    PassThrough(BytesMut),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a message")]
    UnexpectedEof,
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i32 },
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
}

/// Reads frames from one side of a session.
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    /// Bytes of a streamed frame still to come after what was handed out.
    streaming_left: usize,
    /// Largest frame handed out whole; bigger ones are an error.
    max_whole: usize,
    /// The buffer was grown to exactly fit a wanted frame still arriving: no
    /// extra read-ahead room, or growth by doubling would allocate twice the
    /// frame (a 16 MiB Query would cost 32 MiB).
    sized_for_frame: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_whole: usize) -> Self {
        Self::with_buffer(reader, BytesMut::with_capacity(READ_CHUNK), max_whole)
    }

    /// Starts with bytes already read from the connection (e.g. pipelined
    /// behind the startup exchange).
    pub fn with_buffer(reader: R, buf: BytesMut, max_whole: usize) -> Self {
        FrameReader {
            reader,
            buf,
            streaming_left: 0,
            max_whole,
            sized_for_frame: false,
        }
    }

    /// Changes the largest frame handed out whole (e.g. after authentication).
    pub fn set_max_whole(&mut self, max_whole: usize) {
        self.max_whole = max_whole;
    }

    /// Whether bytes already received are waiting to be handed out. Callers use
    /// this to flush batched output only when no more input is immediately at hand.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next piece, or `None` at a clean end of stream (between frames).
    pub async fn next(&mut self, want: impl Fn(u8) -> Want) -> Result<Option<Piece>, FrameError> {
        loop {
            if let Some(piece) = self.split_piece(&want)? {
                return Ok(Some(piece));
            }
            if self.read_more().await? == 0 {
                if self.buf.is_empty() && self.streaming_left == 0 {
                    return Ok(None);
                }
                return Err(FrameError::UnexpectedEof);
            }
        }
    }

    async fn read_more(&mut self) -> Result<usize, FrameError> {
        let spare = self.buf.capacity() - self.buf.len();
        if spare == 0 || (!self.sized_for_frame && spare < READ_CHUNK / 4) {
            self.buf.reserve(READ_CHUNK);
        }
        Ok(self.reader.read_buf(&mut self.buf).await?)
    }

    /// Splits off the next piece if the buffer holds enough for one.
    fn split_piece(&mut self, want: &impl Fn(u8) -> Want) -> Result<Option<Piece>, FrameError> {
        if self.streaming_left > 0 {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let n = self.streaming_left.min(self.buf.len());
            self.streaming_left -= n;
            return Ok(Some(Piece::PassThrough(self.buf.split_to(n))));
        }
        let Some((tag, total)) = header(&self.buf)? else {
            return Ok(None);
        };
        if want(tag) == Want::Whole {
            if total - 1 > self.max_whole {
                return Err(FrameError::TooLarge {
                    tag: tag as char,
                    len: total - 1,
                    max: self.max_whole,
                });
            }
            if self.buf.len() < total {
                // Grow to exactly the frame's size (bounded by max_whole above), not more.
                self.buf.reserve(total - self.buf.len());
                self.sized_for_frame = true;
                return Ok(None);
            }
            self.sized_for_frame = false;
            return Ok(Some(Piece::Frame {
                tag,
                bytes: self.buf.split_to(total),
            }));
        }
        // Coalesce complete pass-through frames; stop at a wanted or incomplete one.
        let mut end = 0;
        while let Some((tag, total)) = header(&self.buf[end..])? {
            if want(tag) == Want::Whole || self.buf.len() - end < total {
                break;
            }
            end += total;
        }
        if end == 0 {
            // The first frame is an incomplete pass-through frame: stream it.
            self.streaming_left = total;
            return self.split_piece(want);
        }
        Ok(Some(Piece::PassThrough(self.buf.split_to(end))))
    }
}

/// Tag and total size (tag byte included) of the frame at the start of `buf`,
/// once its 5-byte header has arrived.
fn header(buf: &[u8]) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: buf[0] as char,
            len,
        });
    }
    Ok(Some((buf[0], len as usize + 1)))
}

/// Body of a whole frame (after tag and length).
pub fn body(frame: &[u8]) -> &[u8] {
    frame.get(5..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn wants_queries(tag: u8) -> Want {
        if tag == b'Q' {
            Want::Whole
        } else {
            Want::PassThrough
        }
    }

    async fn collect(input: Vec<u8>, max: usize) -> Result<Vec<Piece>, FrameError> {
        let mut r = FrameReader::new(&input[..], max);
        let mut out = vec![];
        while let Some(p) = r.next(wants_queries).await? {
            out.push(p);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn coalesces_pass_through_and_isolates_wanted() {
        let mut input = frame(b'd', b"aa");
        input.extend(frame(b'd', b"bb"));
        input.extend(frame(b'Q', b"SELECT 1\0"));
        input.extend(frame(b'c', b""));
        let pieces = collect(input.clone(), 1024).await.unwrap();
        assert_eq!(pieces.len(), 3);
        assert!(matches!(&pieces[0], Piece::PassThrough(b) if b.len() == 14));
        assert!(
            matches!(&pieces[1], Piece::Frame { tag: b'Q', bytes } if body(bytes) == b"SELECT 1\0")
        );
        // Nothing is lost or reordered.
        let rejoined: Vec<u8> = pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Frame { bytes, .. } | Piece::PassThrough(bytes) => bytes.to_vec(),
            })
            .collect();
        assert_eq!(rejoined, input);
    }

    #[tokio::test]
    async fn streams_large_pass_through_frames() {
        let big = vec![7u8; 200_000];
        let input = frame(b'd', &big);
        let pieces = collect(input.clone(), 1024).await.unwrap();
        assert!(pieces.len() > 1, "a large frame must not be buffered whole");
        let total: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::PassThrough(b) => b.len(),
                Piece::Frame { .. } => panic!("unexpected whole frame"),
            })
            .sum();
        assert_eq!(total, input.len());
    }

    #[tokio::test]
    async fn oversized_wanted_frame_is_refused_before_buffering() {
        let mut input = b"Q".to_vec();
        input.extend_from_slice(&(1_000_000_000i32).to_be_bytes());
        let err = collect(input, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { tag: 'Q', .. }));
    }

    #[tokio::test]
    async fn bad_length_and_truncation_are_errors() {
        let mut input = b"Q".to_vec();
        input.extend_from_slice(&2i32.to_be_bytes());
        assert!(matches!(
            collect(input, 1024).await,
            Err(FrameError::BadLength { .. })
        ));
        let mut truncated = frame(b'Q', b"SELECT 1\0");
        truncated.truncate(8);
        assert!(matches!(
            collect(truncated, 1024).await,
            Err(FrameError::UnexpectedEof)
        ));
    }
}
