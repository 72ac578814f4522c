//! Property tests over malformed input (issue #6): the frontend frame
//! decoder, the startup path, the message-field reader, the statement
//! inspector and the policy decision on top of it.
//!
//! Every property runs a bounded number of cases (the whole file takes well
//! under a minute on two cores in a debug build), with a fresh random seed
//! each run, so CI keeps exploring new inputs. A failure prints the shrunk
//! input, which is the reproducer. `PGWARD_FUZZ_SCALE=N` multiplies every
//! case count for a longer local run; `PROPTEST_RNG_SEED=N` fixes the seed.
//!
//! What is checked, beyond "never panics":
//! * [`FrameReader`]: the pieces it hands out, rejoined, are exactly the input
//!   (or a prefix of it when the stream is malformed); whole frames are exactly
//!   the wanted frames; the error is the one a simple model of the protocol
//!   predicts; a wanted frame over `max_whole` is refused as soon as its header
//!   is in, before its body is read; no single allocation exceeds twice the
//!   largest frame it had to hand out whole plus two read chunks (see
//!   `run_frame_case` for why twice).
//! * Startup: no allocation beyond PostgreSQL's own startup-packet bound
//!   whatever length is announced, and an out-of-range length is refused
//!   without waiting for a body.
//! * Inspector: no panic on token soup, grammar-generated scripts, mutated
//!   corpus statements or deep nesting; in a multi-statement string each
//!   statement's own text (what the audit log records) inspects the same alone.
//!   Statements that differ only in comments, whitespace, keyword
//!   case, the case of unquoted identifiers, or the quoting of lower-case
//!   identifiers have the same accesses; a quoted upper-case identifier is a
//!   different name.
//! * Policy: a protected write wrapped in any context (CTE, EXPLAIN ANALYZE,
//!   PREPARE, COPY (... RETURNING) TO STDOUT, CREATE TABLE AS, DECLARE,
//!   multi-statement strings, comments) is refused for the worker.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::FutureExt;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokio::io::{AsyncRead, ReadBuf};

use pgward::config::Config;
use pgward::inspect::cache::InspectCache;
use pgward::inspect::shape::Shape;
use pgward::inspect::{self, Access, Action, ObjectName, STACK_BYTES};
use pgward::policy::{Policy, SearchPath, Verdict};
use pgward::protocol::fields::{Fields, error_field};
use pgward::protocol::frame::{FrameError, FrameReader, Piece, Want};
use pgward::protocol::startup::{
    self, InitialPacket, MAX_STARTUP_PACKET, StartupError, StartupMessage, parse_initial_packet,
    read_initial_packet,
};
use pgward::relay::notes::statement_text;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// FrameReader's read size (and initial buffer), `READ_CHUNK` in frame.rs.
const READ_CHUNK: usize = 16 * 1024;

/// Records the largest single allocation made on a thread while tracking is
/// on, so that "no unbounded allocation" is checked, not assumed.
struct TrackingAllocator;

thread_local! {
    /// `Some(largest so far)` while tracking.
    static LARGEST_ALLOC: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST_ALLOC.try_with(|l| {
        if let Some(max) = l.get() {
            l.set(Some(max.max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping only touches a const-initialised thread-local Cell (no
// allocation, no destructor).
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// Runs `f`, returning its result and the largest single allocation it made
/// on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let outer = LARGEST_ALLOC.with(|l| l.replace(Some(0)));
    let out = f();
    let largest = LARGEST_ALLOC.with(|l| l.replace(outer)).unwrap_or(0);
    if let Some(o) = outer {
        LARGEST_ALLOC.with(|l| l.set(Some(o.max(largest))));
    }
    (out, largest)
}

/// Counts what the generators actually exercised; printed per property when
/// `PGWARD_FUZZ_STATS` is set (with `--nocapture`), to see that no property
/// is vacuous.
fn stat(key: impl Into<String>) {
    STATS.with(|s| *s.borrow_mut().entry(key.into()).or_default() += 1);
}

thread_local! {
    static STATS: std::cell::RefCell<std::collections::BTreeMap<String, u64>> =
        std::cell::RefCell::default();
}

fn scale() -> u32 {
    std::env::var("PGWARD_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Runs a property for `cases` cases on a thread with the inspector's stack
/// (as the proxy's runtime workers have), so deep nesting cannot overflow.
/// `make` builds the strategy on that thread.
fn check<S, M, F>(name: &str, cases: u32, make: M, test: F)
where
    S: Strategy,
    S::Value: Debug,
    M: FnOnce() -> S + Send,
    F: Fn(S::Value) -> Result<(), TestCaseError> + Send,
{
    let config = ProptestConfig {
        cases: cases * scale(),
        // Only tests/fuzz.rs is ours to write: no regression files.
        failure_persistence: None,
        max_shrink_time: 30_000,
        ..ProptestConfig::default()
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .stack_size(STACK_BYTES)
            .spawn_scoped(s, move || {
                let mut runner = TestRunner::new(config);
                let res = runner.run(&make(), test).map_err(|e| e.to_string());
                if std::env::var_os("PGWARD_FUZZ_STATS").is_some() {
                    STATS.with(|s| eprintln!("{name}: {:?}", s.borrow()));
                }
                res
            })
            .expect("spawn test thread");
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: {e}"),
            Err(p) => std::panic::resume_unwind(p),
        }
    });
}

// ---------------------------------------------------------------------------
// 1. FrameReader
// ---------------------------------------------------------------------------

/// An AsyncRead that hands out `data` in the given chunk sizes (cycled),
/// sometimes returning Pending first, and counts what was read.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next_size: usize,
    /// Return Pending (after waking) on every n-th poll; 0: never.
    pending_every: usize,
    polls: usize,
    read_total: Rc<Cell<usize>>,
}

impl AsyncRead for Chunked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.polls += 1;
        if this.pending_every > 0 && this.polls.is_multiple_of(this.pending_every) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let size = this.sizes[this.next_size % this.sizes.len()];
        this.next_size += 1;
        let n = size.min(this.data.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        this.read_total.set(this.read_total.get() + n);
        Poll::Ready(Ok(()))
    }
}

/// The outcome the protocol predicts for a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    End,
    UnexpectedEof,
    BadLength { tag: char, len: i32 },
    TooLarge { tag: char, len: usize, max: usize },
}

#[derive(Debug)]
struct Model {
    /// (start, total size, tag) of every complete frame before the outcome.
    frames: Vec<(usize, usize, u8)>,
    outcome: Outcome,
    /// Where the frame the outcome is about starts (input length at End).
    at: usize,
}

fn model(input: &[u8], max_whole: usize, wanted: &dyn Fn(u8) -> bool) -> Model {
    let mut frames = Vec::new();
    let mut at = 0;
    let outcome = loop {
        let rest = &input[at..];
        if rest.is_empty() {
            break Outcome::End;
        }
        if rest.len() < 5 {
            break Outcome::UnexpectedEof;
        }
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len < 4 {
            break Outcome::BadLength {
                tag: tag as char,
                len,
            };
        }
        let len = len as usize;
        if wanted(tag) && len > max_whole {
            break Outcome::TooLarge {
                tag: tag as char,
                len,
                max: max_whole,
            };
        }
        if rest.len() < len + 1 {
            break Outcome::UnexpectedEof;
        }
        frames.push((at, len + 1, tag));
        at += len + 1;
    };
    Model {
        frames,
        outcome,
        at,
    }
}

fn outcome_of(e: &FrameError) -> Outcome {
    match e {
        FrameError::UnexpectedEof => Outcome::UnexpectedEof,
        FrameError::BadLength { tag, len } => Outcome::BadLength {
            tag: *tag,
            len: *len,
        },
        FrameError::TooLarge { tag, len, max } => Outcome::TooLarge {
            tag: *tag,
            len: *len,
            max: *max,
        },
        FrameError::Io(e) => panic!("unexpected i/o error {e}"),
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn frame_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..48),
        // Bigger than a read chunk: streamed when passed through.
        1 => (0usize..40_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn frame_tag() -> impl Strategy<Value = u8> {
    prop_oneof![select(b"QPBEDCSHFXdcfp".to_vec()), any::<u8>(),]
}

/// What follows the well-formed frames.
fn stream_tail() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        // A cut header.
        1 => prop::collection::vec(any::<u8>(), 1..5),
        // A length below 4.
        1 => (frame_tag(), i32::MIN..4).prop_map(|(t, l)| {
            let mut v = vec![t];
            v.extend_from_slice(&l.to_be_bytes());
            v
        }),
        // A huge announced length, with a little body.
        1 => (frame_tag(), 1_000_000i32.., prop::collection::vec(any::<u8>(), 0..64)).prop_map(
            |(t, l, body)| {
                let mut v = vec![t];
                v.extend_from_slice(&l.to_be_bytes());
                v.extend(body);
                v
            }
        ),
        // A frame cut short.
        1 => (frame_tag(), frame_body(), any::<prop::sample::Index>()).prop_map(|(t, b, cut)| {
            let mut v = frame(t, &b);
            let keep = 5 + cut.index(b.len().max(1));
            v.truncate(keep.min(v.len().saturating_sub(1)).max(1));
            v
        }),
    ]
}

fn byte_stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = || {
        (
            prop::collection::vec((frame_tag(), frame_body()), 0..12),
            stream_tail(),
        )
            .prop_map(|(frames, tail)| {
                let mut v: Vec<u8> = frames.iter().flat_map(|(t, b)| frame(*t, b)).collect();
                v.extend(tail);
                v
            })
    };
    prop_oneof![
        6 => frames(),
        // Random bytes.
        2 => prop::collection::vec(any::<u8>(), 0..256),
        // Well-formed frames with a few bytes overwritten.
        2 => (frames(), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(|(mut v, flips)| {
                if !v.is_empty() {
                    for (i, b) in flips {
                        let i = i.index(v.len());
                        v[i] = b;
                    }
                }
                v
            }),
    ]
}

#[derive(Debug, Clone)]
struct FrameCase {
    input: Vec<u8>,
    max_whole: usize,
    /// Bit set of wanted tags.
    wanted: [u64; 4],
    chunk_sizes: Vec<usize>,
    pending_every: usize,
    /// Bytes handed to `with_buffer` up front (pipelined behind startup).
    prefilled: usize,
}

fn frame_case() -> impl Strategy<Value = FrameCase> {
    let wanted = prop_oneof![
        Just([u64::MAX; 4]),
        Just([0; 4]),
        // Query and Parse only, as the relay's frontend side.
        Just({
            let mut w = [0u64; 4];
            for t in [b'Q', b'P'] {
                w[t as usize / 64] |= 1 << (t % 64);
            }
            w
        }),
        any::<[u64; 4]>(),
    ];
    let max_whole = prop_oneof![0usize..16, 0usize..2_000, 0usize..70_000];
    let chunk_sizes = prop_oneof![
        prop::collection::vec(1usize..4, 1..6),
        prop::collection::vec(1usize..64, 1..6),
        prop::collection::vec(1usize..40_000, 1..6),
    ];
    (
        byte_stream(),
        max_whole,
        wanted,
        chunk_sizes,
        prop_oneof![Just(0usize), 2usize..5],
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(
            |(input, max_whole, wanted, chunk_sizes, pending_every, split, prefill)| {
                let prefilled = if prefill {
                    split.index(input.len() + 1)
                } else {
                    0
                };
                FrameCase {
                    input,
                    max_whole,
                    wanted,
                    chunk_sizes,
                    pending_every,
                    prefilled,
                }
            },
        )
}

fn run_frame_case(case: FrameCase) -> Result<(), TestCaseError> {
    let wanted = |t: u8| case.wanted[t as usize / 64] & (1 << (t % 64)) != 0;
    let want = |t: u8| {
        if wanted(t) {
            Want::Whole
        } else {
            Want::PassThrough
        }
    };
    let expected = model(&case.input, case.max_whole, &wanted);
    let read_total = Rc::new(Cell::new(case.prefilled));
    let reader = Chunked {
        data: case.input[case.prefilled..].to_vec(),
        pos: 0,
        sizes: case.chunk_sizes.clone(),
        next_size: 0,
        pending_every: case.pending_every,
        polls: 0,
        read_total: read_total.clone(),
    };
    let mut r = FrameReader::with_buffer(
        reader,
        BytesMut::from(&case.input[..case.prefilled]),
        case.max_whole,
    );

    let mut pieces: Vec<Piece> = Vec::new();
    let mut largest = 0;
    let result = loop {
        // Every piece holds at least one byte: more calls than bytes is a hang.
        prop_assert!(
            pieces.len() <= case.input.len() + 1,
            "no progress after {} pieces",
            pieces.len()
        );
        let (res, l) = largest_allocation(|| block_on(r.next(want)));
        largest = largest.max(l);
        match res {
            Ok(Some(p)) => pieces.push(p),
            Ok(None) => break Outcome::End,
            Err(e) => break outcome_of(&e),
        }
    };
    prop_assert_eq!(&result, &expected.outcome);
    stat(match &result {
        Outcome::End => "end",
        Outcome::UnexpectedEof => "eof",
        Outcome::BadLength { .. } => "bad length",
        Outcome::TooLarge { .. } => "too large",
    });
    if pieces.iter().any(|p| matches!(p, Piece::Frame { .. })) {
        stat("has whole frames");
    }
    if pieces.iter().any(|p| matches!(p, Piece::PassThrough(_))) {
        stat("has pass-through");
    }
    if pieces.len() > expected.frames.len() {
        stat("streamed (more pieces than frames)");
    }

    // Pieces rejoined are the input (a prefix of it after an error); whole
    // frames are exactly the wanted frames, at their places.
    let mut offset = 0;
    let mut frames = expected.frames.iter().peekable();
    for p in &pieces {
        match p {
            Piece::Frame { tag, bytes } => {
                prop_assert!(wanted(*tag), "unwanted tag {tag} handed out whole");
                prop_assert_eq!(&bytes[..], &case.input[offset..offset + bytes.len()]);
                prop_assert_eq!(bytes[0], *tag);
                let &(start, total, ftag) = frames.next().expect("a frame the model knows");
                prop_assert_eq!((start, total, ftag), (offset, bytes.len(), *tag));
                offset += bytes.len();
            }
            Piece::PassThrough(bytes) => {
                prop_assert!(!bytes.is_empty(), "empty pass-through piece");
                prop_assert!(offset + bytes.len() <= case.input.len());
                prop_assert_eq!(&bytes[..], &case.input[offset..offset + bytes.len()]);
                let end = offset + bytes.len();
                // No wanted frame inside a pass-through run.
                while let Some(&&(start, total, tag)) = frames.peek() {
                    if start >= end {
                        break;
                    }
                    prop_assert!(
                        !wanted(tag),
                        "wanted frame at {start} passed through in {offset}..{end}"
                    );
                    if start + total > end {
                        break;
                    }
                    frames.next();
                }
                offset = end;
            }
        }
    }
    if result == Outcome::End {
        prop_assert_eq!(offset, case.input.len(), "bytes lost at a clean end");
        prop_assert!(frames.next().is_none());
    } else {
        // Nothing of a frame that was refused whole is handed out.
        if matches!(result, Outcome::TooLarge { .. } | Outcome::BadLength { .. }) {
            prop_assert!(offset <= expected.at);
        }
    }

    // A wanted frame over the limit is refused once its header is in: at
    // most the read that completed the header went past it.
    if let Outcome::TooLarge { .. } = result {
        let header_end = expected.at + 5;
        let max_chunk = case.chunk_sizes.iter().copied().max().unwrap_or(1);
        prop_assert!(
            read_total.get() < (header_end + max_chunk).max(case.prefilled + 1),
            "read {} bytes for a too-large frame whose header ends at {header_end}",
            read_total.get()
        );
    }

    // Memory: the largest frame handed out whole (or the bytes handed over
    // up front) bounds what is buffered. Not to one frame plus a read chunk,
    // though: once a big wanted frame nearly fills the buffer, the reader's
    // top-up `reserve(READ_CHUNK)` lets the buffer's capacity double, so a
    // frame of N bytes read in small pieces costs one allocation of 2N (a
    // 16 MiB Query, the default max_message_bytes, allocates 32 MiB). The
    // bound checked is that factor of two: linear, never unbounded.
    let largest_whole = expected
        .frames
        .iter()
        .filter(|f| wanted(f.2))
        .map(|f| f.1)
        .max()
        .unwrap_or(0);
    let base = largest_whole.max(case.prefilled);
    let bound = 2 * (base + 2 * READ_CHUNK);
    if largest > base + READ_CHUNK + 1024 {
        stat("allocated more than the largest whole frame + READ_CHUNK + 1 KiB");
    }
    prop_assert!(
        largest <= bound,
        "allocated {largest} bytes at once; largest whole frame {largest_whole}, max_whole {}",
        case.max_whole
    );
    Ok(())
}

#[test]
fn frame_reader_hands_out_exactly_the_input() {
    check("frame_reader", 5000, frame_case, run_frame_case);
}

#[test]
fn frame_reader_rejects_short_lengths() {
    check(
        "frame_reader_short_lengths",
        300,
        || {
            (
                any::<u8>(),
                i32::MIN..4,
                prop::collection::vec(any::<u8>(), 0..16),
            )
        },
        |(tag, len, rest)| {
            let mut input = vec![tag];
            input.extend_from_slice(&len.to_be_bytes());
            input.extend(rest);
            for want in [Want::Whole, Want::PassThrough] {
                let mut r = FrameReader::new(&input[..], 1 << 20);
                let res = block_on(r.next(|_| want));
                prop_assert!(
                    matches!(res, Err(FrameError::BadLength { tag: t, len: l }) if t == tag as char && l == len),
                    "{res:?}"
                );
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 2. Startup packets
// ---------------------------------------------------------------------------

fn cstring() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            b"user".to_vec(),
            b"database".to_vec(),
            b"options".to_vec(),
            b"application_name".to_vec(),
            b"replication".to_vec(),
            b"".to_vec(),
        ]),
        prop::collection::vec(1u8.., 0..12),
    ]
}

fn startup_body() -> impl Strategy<Value = Vec<u8>> {
    let code = prop_oneof![
        Just(startup::PROTOCOL_3_0),
        Just(startup::SSL_REQUEST_CODE),
        Just(startup::GSSENC_REQUEST_CODE),
        Just(startup::CANCEL_REQUEST_CODE),
        any::<i32>(),
    ];
    let params = (
        code,
        prop::collection::vec(cstring(), 0..8),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(code, strings, terminate, trailing)| {
            let mut v = code.to_be_bytes().to_vec();
            for s in strings {
                v.extend(s);
                v.push(0);
            }
            if terminate {
                v.push(0);
            }
            v.extend(trailing);
            v
        });
    prop_oneof![params, prop::collection::vec(any::<u8>(), 0..64)]
}

#[test]
fn startup_packets_parse_without_panics() {
    check("parse_initial_packet", 3000, startup_body, |body| {
        match parse_initial_packet(&body) {
            Ok(InitialPacket::Startup(m)) => {
                // Accepted only in the exact canonical form: re-encoding
                // reproduces the body byte for byte.
                prop_assert!(m.params.iter().any(|(k, _)| k == "user"));
                let mut enc = BytesMut::new();
                m.encode(&mut enc);
                prop_assert_eq!(&enc[4..], &body[..]);
                let _ = (m.user(), m.database(), m.settings());
            }
            Ok(InitialPacket::Cancel { .. }) => prop_assert!(body.len() >= 12),
            Ok(_) => prop_assert!(body.len() >= 4),
            Err(_) => {}
        }
        Ok(())
    });
}

#[test]
fn startup_messages_round_trip() {
    check(
        "startup_round_trip",
        500,
        || {
            prop::collection::vec(("[^\\x00]{1,10}", "[^\\x00]{0,10}"), 0..6).prop_map(
                |mut params| {
                    params.insert(0, ("user".to_owned(), "u".to_owned()));
                    StartupMessage { params }
                },
            )
        },
        |msg| {
            let mut buf = BytesMut::new();
            msg.encode(&mut buf);
            let mut input = &buf[..];
            let got = block_on(read_initial_packet(&mut input));
            if buf.len() <= MAX_STARTUP_PACKET {
                prop_assert_eq!(got.ok(), Some(InitialPacket::Startup(msg)));
            }
            Ok(())
        },
    );
}

#[test]
fn announced_startup_length_is_checked_before_allocating() {
    check(
        "read_initial_packet",
        2000,
        || {
            (
                prop_oneof![
                    i32::MIN..=i32::MAX,
                    -8i32..16,
                    0i32..=(MAX_STARTUP_PACKET as i32 + 8),
                    (MAX_STARTUP_PACKET as i32)..,
                ],
                startup_body(),
                prop::collection::vec(1usize..16, 1..4),
                any::<bool>(),
            )
        },
        |(len, body, sizes, eof)| {
            let mut input = len.to_be_bytes().to_vec();
            input.extend(&body);
            // After its bytes, the reader either ends or never answers
            // again: a reader that waits for a body that never comes.
            let mut reader = Chunked {
                data: input.clone(),
                pos: 0,
                sizes,
                next_size: 0,
                pending_every: 0,
                polls: 0,
                read_total: Rc::new(Cell::new(0)),
            };
            let mut stalled = Stall {
                inner: &mut reader,
                eof,
            };
            let (res, largest) =
                largest_allocation(|| read_initial_packet(&mut stalled).now_or_never());
            prop_assert!(largest <= MAX_STARTUP_PACKET, "allocated {largest} bytes");
            let in_range = (8..=MAX_STARTUP_PACKET as i32).contains(&len);
            match res {
                None => {
                    // Waiting is fine only for a plausible packet not yet complete.
                    prop_assert!(!eof && in_range && body.len() < len as usize - 4);
                }
                Some(Err(StartupError::BadLength(l))) => {
                    prop_assert_eq!(l, len);
                    prop_assert!(!in_range);
                }
                Some(Err(StartupError::Io(e))) => {
                    prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    prop_assert!(eof && in_range && body.len() < len as usize - 4);
                }
                Some(Ok(_)) | Some(Err(StartupError::Malformed(_))) => {
                    prop_assert!(in_range && body.len() >= len as usize - 4);
                    let parsed = parse_initial_packet(&body[..len as usize - 4]);
                    prop_assert_eq!(format!("{res:?}"), format!("{:?}", Some(parsed)));
                }
            }
            Ok(())
        },
    );
}

/// Reads through `inner`; once it is exhausted, ends the stream (`eof`) or
/// stays Pending without ever waking.
struct Stall<'a> {
    inner: &'a mut Chunked,
    eof: bool,
}

impl AsyncRead for Stall<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.inner.pos == this.inner.data.len() && !this.eof {
            return Poll::Pending;
        }
        Pin::new(&mut *this.inner).poll_read(cx, buf)
    }
}

// ---------------------------------------------------------------------------
// 3. Message fields
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum FieldOp {
    CstrBytes,
    Cstr,
    U8,
    I16,
    I32,
    Take(usize),
}

#[test]
fn fields_never_panic_and_never_lose_bytes() {
    check(
        "fields",
        3000,
        || {
            let op = prop_oneof![
                Just(FieldOp::CstrBytes),
                Just(FieldOp::Cstr),
                Just(FieldOp::U8),
                Just(FieldOp::I16),
                Just(FieldOp::I32),
                prop_oneof![0usize..8, any::<usize>()].prop_map(FieldOp::Take),
            ];
            let body = prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(select(vec![0u8, b'C', b'M', b'S', 0xff, b'a']), 0..64),
            ];
            (body, prop::collection::vec(op, 0..24), any::<u8>())
        },
        |(body, ops, code)| {
            let mut f = Fields::new(&body);
            for op in ops {
                let before = f.remaining().len();
                let consumed = |f: &Fields<'_>| before - f.remaining().len();
                match op {
                    FieldOp::CstrBytes => match f.cstr_bytes() {
                        Some(s) => {
                            prop_assert!(!s.contains(&0));
                            prop_assert_eq!(consumed(&f), s.len() + 1);
                        }
                        None => prop_assert_eq!(consumed(&f), 0),
                    },
                    FieldOp::Cstr => {
                        let got = f.cstr().map(str::len);
                        if let Some(n) = got {
                            prop_assert_eq!(consumed(&f), n + 1);
                        }
                    }
                    FieldOp::U8 => {
                        let got = f.u8().is_some();
                        prop_assert_eq!(consumed(&f), if got { 1 } else { 0 });
                    }
                    FieldOp::I16 => {
                        let got = f.i16().is_some();
                        prop_assert_eq!(got, before >= 2);
                        prop_assert_eq!(consumed(&f), if got { 2 } else { 0 });
                    }
                    FieldOp::I32 => {
                        let got = f.i32().is_some();
                        prop_assert_eq!(got, before >= 4);
                        prop_assert_eq!(consumed(&f), if got { 4 } else { 0 });
                    }
                    FieldOp::Take(n) => {
                        let got = f.take(n).map(<[u8]>::len);
                        prop_assert_eq!(got, (before >= n).then_some(n));
                        prop_assert_eq!(consumed(&f), got.unwrap_or(0));
                    }
                }
                // Whatever was read, the rest is a suffix of the body.
                prop_assert!(body.ends_with(f.remaining()));
            }
            if let Some(v) = error_field(&body, code) {
                prop_assert!(!v.contains(&0));
                // A subslice of the body.
                let start = v.as_ptr() as usize - body.as_ptr() as usize;
                prop_assert!(start + v.len() < body.len());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 4. Inspector
// ---------------------------------------------------------------------------

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "DELETE",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "WITH",
    "AS",
    "RETURNING",
    "COPY",
    "TO",
    "STDOUT",
    "STDIN",
    "EXPLAIN",
    "ANALYZE",
    "PREPARE",
    "EXECUTE",
    "CREATE",
    "TABLE",
    "VIEW",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "MERGE",
    "USING",
    "ON",
    "WHEN",
    "MATCHED",
    "THEN",
    "DO",
    "LANGUAGE",
    "FUNCTION",
    "BEGIN",
    "END",
    "COMMIT",
    "ROLLBACK",
    "JOIN",
    "UNION",
    "ALL",
    "NOT",
    "NULL",
    "AND",
    "OR",
    "CASE",
    "ELSE",
    "ONLY",
    "LATERAL",
    "ARRAY",
    "ROW",
    "CAST",
    "GRANT",
    "REVOKE",
    "RULE",
    "TRIGGER",
    "LOCK",
    "IN",
    "MODE",
    "RESET",
    "SHOW",
    "DECLARE",
    "CURSOR",
    "FOR",
    "CALL",
    "VACUUM",
    "LISTEN",
    "NOTIFY",
    "RECURSIVE",
    "MATERIALIZED",
    "SEARCH_PATH",
    "LOCAL",
    "SESSION",
    "UESCAPE",
    "TEMP",
];

const NAMES: &[&str] = &[
    "ops",
    "intake",
    "enforcement",
    "public",
    "pg_catalog",
    "pg_temp",
    "job_queue",
    "judgments",
    "t",
    "x",
    "set_config",
    "dblink",
    "query_to_xml",
    "current_setting",
    "search_path",
];

/// Random case for the ASCII letters of `s`.
fn recase(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn sql_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (select(KEYWORDS), any::<u64>()).prop_map(|(k, b)| recase(k, b)),
        3 => (select(NAMES), any::<u64>()).prop_map(|(k, b)| recase(k, b)),
        1 => "[a-z_][a-z0-9_$]{0,6}",
        1 => "\"([^\"\\x00]|\"\"){0,6}\"?",
        1 => "[uU]&\"([a-z]|\\\\[0-9a-f]{4}|\\\\\\+[0-9a-f]{6}|\\\\\\\\|!00[0-9]{2}){0,5}\"( UESCAPE '!')?",
        2 => "[0-9]{1,4}(\\.[0-9]{0,3})?(e[+-]?[0-9]{1,2})?",
        2 => "'([^'\\x00]|''){0,6}'?",
        1 => "[eE]'([^'\\x00\\\\]|\\\\.|''){0,6}'",
        1 => "[bBxX]'[0-9a-f]{0,4}'",
        1 => "\\$[0-9]{1,2}",
        2 => ("(|[a-z_]{1,3})", "[^\\x00]{0,8}", any::<bool>()).prop_map(|(tag, body, close)| {
            format!("${tag}${body}{}", if close { format!("${tag}$") } else { String::new() })
        }),
        2 => prop_oneof![
            "/\\*[^\\x00]{0,6}\\*/",
            "/\\* /\\* [a-z]{0,3} \\*/ \\*/",
            "--[^\\x00\n]{0,6}\n",
            Just("/*".to_owned()),
            Just("*/".to_owned()),
            Just("--".to_owned()),
        ],
        5 => select(vec![
            ";", ";", "(", "(", ")", ")", ",", ".", "*", "=", "::", "[", "]", "+", "-", "<>", "||",
            ":=", "=>", "$", "\\", "&", "@", "#", "%", "^", "~", "!", "?", "`", "{", "}", "\n",
        ])
        .prop_map(str::to_owned),
    ]
}

fn sql_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (sql_token(), select(vec!["", " ", " ", " ", "\n", "\t"])),
        0..40,
    )
    .prop_map(|toks| toks.into_iter().map(|(t, s)| t + s).collect())
}

/// An identifier in one of the ways PostgreSQL accepts, from a small pool
/// of names that matter to the policy.
fn sql_ident() -> impl Strategy<Value = String> {
    (select(NAMES), ident_style()).prop_map(|(n, style)| render_ident(n, &style).0)
}

/// A possibly qualified relation name.
fn sql_relation() -> BoxedStrategy<String> {
    prop_oneof![
        2 => (sql_ident(), sql_ident()).prop_map(|(s, t)| format!("{s}.{t}")),
        1 => sql_ident(),
        1 => select(TARGETS).prop_map(str::to_owned),
    ]
    .boxed()
}

fn sql_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(\\.[0-9]{0,3})?",
        "'([a-z ;$\"]|''){0,6}'",
        "E'([a-z;]|\\\\n|\\\\'|''){0,4}'",
        "\\$\\$[a-z ;'\"]{0,8}\\$\\$",
        "\\$q\\$[a-z ;'\"$]{0,8}\\$q\\$",
        "[bB]'[01]{0,4}'",
        "[xX]'[0-9a-f]{0,4}'",
        Just("NULL".to_owned()),
        Just("TRUE".to_owned()),
        Just("$1".to_owned()),
        Just("'search_path'".to_owned()),
        Just("'app.current_tenant'".to_owned()),
    ]
}

/// A comment or whitespace, placed between tokens.
fn sql_gap() -> impl Strategy<Value = &'static str> {
    select(vec![
        " ",
        " ",
        " ",
        "\n",
        " /* ; */ ",
        " /* /* */ */ ",
        " -- ;\n",
        "/**/",
    ])
}

fn sql_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => sql_literal(),
        2 => sql_ident(),
        1 => (sql_ident(), sql_ident()).prop_map(|(a, b)| format!("{a}.{b}")),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        let rel = sql_relation();
        prop_oneof![
            (
                inner.clone(),
                select(vec![
                    "+",
                    "||",
                    "=",
                    "<>",
                    "AND",
                    "OR",
                    "::int +",
                    "IS DISTINCT FROM"
                ]),
                inner.clone(),
                sql_gap()
            )
                .prop_map(|(a, op, b, g)| format!("{a}{g}{op} {b}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("{e}::text")),
            inner.clone().prop_map(|e| format!("CAST({e} AS int)")),
            (
                select(vec![
                    "f",
                    "now",
                    "ops.claim_pending_job",
                    "ops.reap_stuck_jobs",
                    "set_config",
                    "current_setting",
                    "dblink",
                    "query_to_xml",
                    "pg_catalog.set_config",
                    "lo_import",
                    "pg_read_file",
                    "\"Ops\".f",
                    "public.f",
                ]),
                prop::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("CASE WHEN {a} THEN {b} ELSE {c} END")),
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|v| format!("ARRAY[{}]", v.join(", "))),
            (inner.clone(), rel.clone(), inner.clone())
                .prop_map(|(e, r, w)| format!("(SELECT {e} FROM {r} WHERE {w})")),
            (rel.clone(), inner.clone())
                .prop_map(|(r, w)| format!("EXISTS (SELECT 1 FROM {r} WHERE {w})")),
            (inner.clone(), rel).prop_map(|(e, r)| format!("{e} IN (SELECT * FROM {r})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("ROW({a}, {b})")),
        ]
    })
}

/// A grammatical statement (mostly: some combinations are still refused by
/// the grammar, e.g. a keyword where an identifier is expected).
fn sql_statement() -> impl Strategy<Value = String> {
    let e = sql_expr;
    let r = sql_relation;
    let i = sql_ident;
    let query = (e(), e(), r(), e(), prop::option::of(e()))
        .prop_map(|(a, b, rel, w, order)| {
            let order = order.map(|o| format!(" ORDER BY {o}")).unwrap_or_default();
            format!("SELECT {a}, {b} FROM {rel} WHERE {w}{order}")
        })
        .boxed();
    let dml = prop_oneof![
        (r(), i(), e(), prop::option::of(e())).prop_map(|(rel, c, v, ret)| {
            let ret = ret.map(|x| format!(" RETURNING {x}")).unwrap_or_default();
            format!("INSERT INTO {rel} ({c}) VALUES ({v}){ret}")
        }),
        (r(), i(), e(), e()).prop_map(|(rel, c, v, w)| format!("UPDATE {rel} SET {c} = {v} WHERE {w}")),
        (r(), e()).prop_map(|(rel, w)| format!("DELETE FROM {rel} WHERE {w} RETURNING *")),
        (r(), r(), e()).prop_map(|(t, s, on)| {
            format!("MERGE INTO {t} USING {s} ON {on} WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN DO NOTHING")
        }),
    ]
    .boxed();
    let simple = prop_oneof![
        4 => query.clone(),
        4 => dml.clone(),
        1 => (i(), dml.clone(), query.clone()).prop_map(|(n, d, q)| format!("WITH {n} AS ({d}) {q}")),
        1 => dml.clone().prop_map(|d| format!("EXPLAIN ANALYZE {d}")),
        1 => (i(), dml.clone()).prop_map(|(n, d)| format!("PREPARE {n} AS {d}")),
        1 => (i(), e()).prop_map(|(n, a)| format!("EXECUTE {n}({a})")),
        1 => i().prop_map(|n| format!("DEALLOCATE {n}")),
        1 => r().prop_map(|t| format!("COPY {t} FROM STDIN")),
        1 => dml.prop_map(|d| format!("COPY ({d}) TO STDOUT")),
        1 => (r(), query.clone()).prop_map(|(t, q)| format!("CREATE TABLE {t} AS {q}")),
        1 => (r(), query).prop_map(|(t, q)| format!("CREATE VIEW {t} AS {q}")),
        1 => r().prop_map(|t| format!("TRUNCATE {t}")),
        1 => r().prop_map(|t| format!("DROP TABLE {t}")),
        1 => (r(), i()).prop_map(|(t, c)| format!("ALTER TABLE {t} ADD COLUMN {c} int")),
        1 => (r(), i()).prop_map(|(t, u)| format!("GRANT ALL ON {t} TO {u}")),
        1 => r().prop_map(|t| format!("LOCK TABLE {t} IN EXCLUSIVE MODE")),
        1 => r().prop_map(|t| format!("VACUUM {t}")),
        1 => prop::collection::vec(i(), 1..3)
            .prop_map(|v| format!("SET search_path = {}", v.join(", "))),
        1 => (i(), e()).prop_map(|(n, v)| format!("SET LOCAL app.{n} = {v}")),
        1 => select(vec![
            "RESET ALL", "DISCARD ALL", "RESET search_path", "SET ROLE postgres",
            "SET SESSION AUTHORIZATION DEFAULT", "SET standard_conforming_strings = off",
            "SET client_encoding = 'SJIS'", "BEGIN", "COMMIT AND CHAIN", "ROLLBACK",
            "SAVEPOINT a", "ROLLBACK TO a", "DO $$ BEGIN DELETE FROM ops.job_queue; END $$",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ DELETE FROM ops.x RETURNING 1 $$",
            "LISTEN x", "NOTIFY x", "SHOW ALL", "CHECKPOINT", "CALL ops.p()",
            "CREATE RULE r AS ON INSERT TO public.t DO INSTEAD DELETE FROM ops.job_queue",
            "COMMENT ON TABLE ops.job_queue IS 'x'", "REINDEX SCHEMA ops", "CLUSTER",
            "ALTER ROLE dragonfly_app SET search_path = ops", "IMPORT FOREIGN SCHEMA x FROM SERVER s INTO ops",
        ])
        .prop_map(str::to_owned),
    ];
    simple
}

/// Several statements, separated by semicolons and comments.
fn sql_script() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            sql_statement(),
            sql_gap(),
            select(vec![";", ";", ";;", "; -- x\n"]),
        ),
        1..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(s, g, semi)| format!("{s}{g}{semi}"))
            .collect()
    })
}

/// Runs the inspector and, when it parses, the policy on every statement
/// (with the search_path unknown, the most demanding case).
fn inspect_and_decide(policy: &Policy, sql: &str) {
    let parsed = inspect::inspect(sql);
    stat(if parsed.is_ok() {
        "parses"
    } else {
        "syntax error"
    });
    if let Ok(stmts) = parsed {
        let class = policy.class_for_user("dragonfly_app");
        for (i, s) in stmts.iter().enumerate() {
            assert!(s.location <= sql.len(), "statement location past the end");
            if stmts.len() > 1 {
                // The text pgward logs for a statement (its slice of the
                // string) is what it judged: inspected alone, it is the same.
                assert!(
                    sql.is_char_boundary(s.location),
                    "location inside a character"
                );
                let text = statement_text(sql, &stmts, i);
                let alone = inspect::inspect(text)
                    .unwrap_or_else(|e| panic!("statement {i} of {sql:?}: {text:?}: {e}"));
                assert_eq!(alone.len(), 1, "statement {i} of {sql:?}: {text:?}");
                let mut alone = alone.into_iter().next().unwrap();
                alone.location = s.location;
                assert_eq!(&alone, s, "statement {i} of {sql:?}: {text:?}");
            }
            let _ = policy.decide(class, "dragonfly_app", s, &SearchPath::Unknown);
            let _ = policy.decide(class, "dragonfly_app", s, &worker_path());
        }
    }
}

fn shipped_policy() -> Policy {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.yaml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Policy::from_config(&config)
}

fn worker_path() -> SearchPath {
    SearchPath::Known(vec!["$user".to_owned(), "public".to_owned()])
}

#[test]
fn inspector_survives_sql_soup() {
    check("inspect_soup", 2000, sql_soup, {
        let policy = shipped_policy();
        move |sql| {
            inspect_and_decide(&policy, &sql);
            Ok(())
        }
    });
}

#[test]
fn inspector_survives_generated_statements() {
    check("inspect_grammar", 2000, sql_script, {
        let policy = shipped_policy();
        move |sql| {
            inspect_and_decide(&policy, &sql);
            Ok(())
        }
    });
}

/// The inspection cache shares one inspection among texts that differ only
/// in integer literals (their shape): whatever text of a shape came first, a
/// later one gets exactly what parsing it afresh gives (objects, settings,
/// statement locations after longer or shorter literals).
#[test]
fn shape_cache_hits_equal_fresh_inspections() {
    check(
        "inspect_shape",
        3000,
        || {
            (
                prop_oneof![
                    4 => prop::collection::vec(sql_statement(), 1..4).prop_map(|v| v.join("; ")),
                    1 => sql_script(),
                    1 => sql_soup(),
                ],
                prop::collection::vec(0u32..1_000_000_000, 1..8),
            )
        },
        |(sql, values)| {
            // Any text is a valid input: strip what makes texts shapeless
            // (comments, `$`, backslashes) so that most cases have a shape.
            let sql = sql
                .replace("--", "- ")
                .replace("/*", "/ ")
                .replace(['$', '\\'], " ");
            let Some(shape) = Shape::of(&sql) else {
                stat("shapeless");
                return Ok(());
            };
            let variant = |offset: usize| {
                let mut text = String::new();
                let mut at = 0;
                for (i, lit) in shape.literals.iter().enumerate() {
                    text.push_str(&sql[at..lit.start]);
                    text.push_str(&values[(i + offset) % values.len()].to_string());
                    at = lit.end;
                }
                text.push_str(&sql[at..]);
                text
            };
            // First sight, the proof on the second text, a hit on the third.
            let cache = InspectCache::new(16);
            prop_assert_eq!(&*cache.get(&sql), &inspect::inspect(&sql));
            for text in [variant(0), variant(1)] {
                prop_assert_eq!(&*cache.get(&text), &inspect::inspect(&text), "{}", text);
            }
            stat(if inspect::inspect(&sql).is_ok() {
                "shaped ok"
            } else {
                "shaped error"
            });
            Ok(())
        },
    );
}

#[test]
fn inspector_survives_deep_nesting() {
    check(
        "inspect_nesting",
        300,
        || {
            (
                0usize..8,
                // The parser's own limits are between 500 and 1,000 levels
                // for most shapes: aim around them.
                prop_oneof![1usize..64, 300usize..1_000, 1usize..6_000],
                any::<bool>(),
            )
        },
        |(shape, depth, balanced)| {
            let close = if balanced { depth } else { depth / 2 };
            let sql = match shape {
                0 => format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(close)),
                1 => format!("SELECT {}1{}", "ARRAY[".repeat(depth), "]".repeat(close)),
                2 => format!(
                    "SELECT * FROM {}(SELECT 1) s{}",
                    "(SELECT * FROM ".repeat(depth),
                    ") s".repeat(close)
                ),
                3 => format!("SELECT {}1", "- ".repeat(depth)),
                4 => format!("SELECT {}true", "NOT ".repeat(depth)),
                5 => format!(
                    "SELECT {}1{}",
                    "CASE WHEN true THEN ".repeat(depth),
                    " END".repeat(close)
                ),
                6 => format!(
                    "DELETE FROM ops.t WHERE id IN {}SELECT 1{}",
                    "(SELECT id FROM ops.u WHERE id IN (".repeat(depth),
                    "))".repeat(close)
                ),
                _ => format!(
                    "SELECT 1 /*{} x {}",
                    "/*".repeat(depth),
                    "*/".repeat(close + 1)
                ),
            };
            let r = inspect::inspect(&sql);
            stat(format!("shape {shape} parses {}", r.is_ok()));
            Ok(())
        },
    );
}

/// The SQL of every entry of tests/corpus/worker.txt.
fn corpus() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/worker.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut current: Option<(Vec<&str>, bool)> = None;
    let finish = |entry: Option<(Vec<&str>, bool)>, out: &mut Vec<String>| {
        if let Some((lines, escapes)) = entry {
            let mut sql = lines.join("\n").trim().replace("{db}", "postgres");
            if escapes {
                sql = sql
                    .replace("\\t", "\t")
                    .replace("\\r", "\r")
                    .replace("\\n", "\n")
                    .replace("\\f", "\x0c");
            }
            if !sql.is_empty() {
                out.push(sql);
            }
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with("=== ") {
            finish(current.take(), &mut out);
            current = Some((Vec::new(), false));
        } else if let Some((lines, escapes)) = current.as_mut() {
            if lines.is_empty() && line.starts_with('@') {
                *escapes |= line.starts_with("@escapes");
            } else {
                lines.push(line);
            }
        }
    }
    finish(current, &mut out);
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, String),
    Delete(prop::sample::Index, usize),
    Replace(prop::sample::Index, String),
    /// Splice in a piece of another corpus statement.
    Splice(
        prop::sample::Index,
        prop::sample::Index,
        prop::sample::Index,
        usize,
    ),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let snippet = prop_oneof![
        select(vec![
            "'", "\"", "$", "$$", ";", "(", ")", "--", "/*", "*/", "\\", "U&", "E'", "\n", " ",
            ",", ".", "*", "0", "x", "é", "\u{FEFF}", "\u{00A0}",
        ])
        .prop_map(str::to_owned),
        sql_token(),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), snippet.clone()).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<prop::sample::Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), snippet).prop_map(|(i, s)| Mutation::Replace(i, s)),
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            1usize..30
        )
            .prop_map(|(a, b, c, n)| Mutation::Splice(a, b, c, n)),
    ]
}

/// Applies a mutation on bytes; the result is made valid UTF-8 again (the
/// relay refuses non-UTF-8 text before inspection).
fn mutate(sql: &str, m: &Mutation, corpus: &[String]) -> String {
    let mut b = sql.as_bytes().to_vec();
    match m {
        Mutation::Insert(i, s) => {
            let at = i.index(b.len() + 1);
            b.splice(at..at, s.bytes());
        }
        Mutation::Delete(i, n) => {
            if !b.is_empty() {
                let at = i.index(b.len());
                b.drain(at..(at + n).min(b.len()));
            }
        }
        Mutation::Replace(i, s) => {
            if !b.is_empty() {
                let at = i.index(b.len());
                b.splice(at..at + 1, s.bytes());
            }
        }
        Mutation::Splice(at, which, from, n) => {
            let other = corpus[which.index(corpus.len())].as_bytes();
            let from = from.index(other.len());
            let piece = &other[from..(from + n).min(other.len())];
            let at = at.index(b.len() + 1);
            b.splice(at..at, piece.iter().copied());
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn inspector_survives_corpus_mutations() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 50,
        "read only {} statements from tests/corpus/worker.txt",
        corpus.len()
    );
    let n = corpus.len();
    check(
        "inspect_corpus_mutations",
        5000,
        move || (0..n, prop::collection::vec(mutation(), 1..5)),
        {
            let policy = shipped_policy();
            move |(i, muts): (usize, Vec<Mutation>)| {
                let mut sql = corpus[i].clone();
                for m in &muts {
                    sql = mutate(&sql, m, &corpus);
                }
                inspect_and_decide(&policy, &sql);
                Ok(())
            }
        },
    );
}

// --- metamorphic: comments, whitespace, case and quoting don't change accesses

/// A statement template: tokens separated by single spaces; `{N}` is
/// identifier slot N; all-capital words are keywords; anything else is copied.
struct Template {
    sql: &'static str,
    /// Base (lower-case) name of each slot.
    names: &'static [&'static str],
    /// Accesses the canonical rendering must include: (action, schema slot, name slot).
    expect: &'static [(Action, Option<usize>, usize)],
}

const TEMPLATES: &[Template] = &[
    Template {
        sql: "DELETE FROM {0} . {1} WHERE {2} = 1",
        names: &["ops", "job_queue", "status"],
        expect: &[(Action::Write, Some(0), 1)],
    },
    Template {
        sql: "UPDATE {0} . {1} SET {2} = 'x' WHERE {3} > 0 RETURNING *",
        names: &["public", "judgments", "status", "id"],
        expect: &[(Action::Write, Some(0), 1)],
    },
    Template {
        sql: "INSERT INTO {0} . {1} ( {2} ) SELECT {3} FROM {4} . {5}",
        names: &["ops", "job_queue", "job_type", "name", "public", "scratch"],
        expect: &[(Action::Write, Some(0), 1), (Action::Read, Some(4), 5)],
    },
    Template {
        sql: "TRUNCATE {0} . {1} , {2}",
        names: &["intake", "foil_datasets", "plaintiffs"],
        expect: &[(Action::Write, Some(0), 1), (Action::Write, None, 2)],
    },
    Template {
        sql: "COPY {0} . {1} ( {2} ) FROM STDIN",
        names: &["enforcement", "actions", "note"],
        expect: &[(Action::Write, Some(0), 1)],
    },
    Template {
        sql: "COPY ( SELECT * FROM {0} . {1} ) TO STDOUT",
        names: &["ops", "job_queue"],
        expect: &[(Action::Read, Some(0), 1)],
    },
    Template {
        sql: "WITH {0} AS ( DELETE FROM {1} . {2} RETURNING * ) SELECT * FROM {3}",
        names: &["d", "ops", "intake_logs", "d"],
        expect: &[(Action::Write, Some(1), 2)],
    },
    Template {
        sql: "SELECT {0} . {1} FROM {2} . {3} JOIN {4} ON TRUE",
        names: &["j", "id", "public", "judgments", "plaintiffs"],
        expect: &[(Action::Read, Some(2), 3), (Action::Read, None, 4)],
    },
    Template {
        sql: "MERGE INTO {0} . {1} USING {2} ON TRUE WHEN MATCHED THEN DELETE",
        names: &["ops", "worker_heartbeats", "scratch"],
        expect: &[(Action::Write, Some(0), 1), (Action::Read, None, 2)],
    },
    Template {
        sql: "DROP TABLE {0} . {1}",
        names: &["ops", "job_queue"],
        expect: &[(Action::Ddl, Some(0), 1)],
    },
    Template {
        sql: "ALTER TABLE {0} . {1} ADD COLUMN {2} INT",
        names: &["public", "judgments", "evil"],
        expect: &[(Action::Ddl, Some(0), 1)],
    },
    Template {
        sql: "EXPLAIN ANALYZE DELETE FROM {0} . {1}",
        names: &["ops", "job_queue"],
        expect: &[(Action::Write, Some(0), 1)],
    },
    Template {
        sql: "PREPARE {0} AS UPDATE {1} . {2} SET {3} = 1",
        names: &["p", "ops", "job_queue", "attempts"],
        expect: &[(Action::Write, Some(1), 2)],
    },
    Template {
        sql: "LOCK TABLE {0} . {1} IN ACCESS EXCLUSIVE MODE",
        names: &["ops", "job_queue"],
        expect: &[(Action::Write, Some(0), 1)],
    },
    Template {
        sql: "LOCK TABLE {0} . {1} IN ACCESS SHARE MODE",
        names: &["ops", "job_queue"],
        expect: &[(Action::Read, Some(0), 1)],
    },
    Template {
        sql: "SELECT * INTO {0} . {1} FROM {2} . {3}",
        names: &["public", "copy_of", "ops", "job_queue"],
        // Creating the target is DDL (src/inspect/dml.rs).
        expect: &[(Action::Ddl, Some(0), 1), (Action::Read, Some(2), 3)],
    },
    Template {
        sql: "DELETE FROM {0}",
        names: &["judgments"],
        expect: &[(Action::Write, None, 0)],
    },
];

/// How one identifier occurrence is written.
#[derive(Debug, Clone)]
enum IdentStyle {
    Lower,
    Upper,
    Mixed(u64),
    QuotedLower,
    /// `U&"..."`, escaping the characters whose bit is set.
    Unicode(u64),
    /// `"NAME"`: a different name.
    QuotedUpper,
    /// `"NaMe"`: a different name too (unless no letter changed).
    QuotedMixed(u64),
}

fn ident_style() -> impl Strategy<Value = IdentStyle> {
    prop_oneof![
        Just(IdentStyle::Lower),
        Just(IdentStyle::Upper),
        any::<u64>().prop_map(IdentStyle::Mixed),
        Just(IdentStyle::QuotedLower),
        any::<u64>().prop_map(IdentStyle::Unicode),
        Just(IdentStyle::QuotedUpper),
        any::<u64>().prop_map(IdentStyle::QuotedMixed),
    ]
}

/// (as written, as PostgreSQL folds it)
fn render_ident(name: &str, style: &IdentStyle) -> (String, String) {
    match style {
        IdentStyle::Lower => (name.to_owned(), name.to_owned()),
        IdentStyle::Upper => (name.to_ascii_uppercase(), name.to_owned()),
        IdentStyle::Mixed(bits) => (recase(name, *bits), name.to_owned()),
        IdentStyle::QuotedLower => (format!("\"{name}\""), name.to_owned()),
        IdentStyle::Unicode(bits) => {
            let body: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if bits >> (i % 64) & 1 == 1 {
                        format!("\\{:04X}", c as u32)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let prefix = if bits >> 63 == 1 { "u&" } else { "U&" };
            (format!("{prefix}\"{body}\""), name.to_owned())
        }
        IdentStyle::QuotedUpper => {
            let up = name.to_ascii_uppercase();
            (format!("\"{up}\""), up)
        }
        IdentStyle::QuotedMixed(bits) => {
            let m = recase(name, *bits);
            (format!("\"{m}\""), m)
        }
    }
}

const SEPARATORS: &[&str] = &[
    " ",
    "  ",
    "\n",
    "\t",
    "\r\n",
    "/**/",
    " /* c */ ",
    "--c\n",
    " -- DELETE FROM ops.x;\n",
    "/* /* nested */ */",
    "/*;*/",
    "\x0c",
];

#[derive(Debug, Clone)]
struct Variant {
    template: usize,
    styles: Vec<IdentStyle>,
    keyword_case: Vec<u64>,
    separators: Vec<prop::sample::Index>,
    leading: prop::sample::Index,
    trailing: Option<&'static str>,
}

fn variant() -> impl Strategy<Value = Variant> {
    (0..TEMPLATES.len()).prop_flat_map(|template| {
        let slots = TEMPLATES[template].names.len();
        let tokens = TEMPLATES[template].sql.split(' ').count();
        (
            Just(template),
            prop::collection::vec(ident_style(), slots),
            prop::collection::vec(any::<u64>(), tokens),
            prop::collection::vec(any::<prop::sample::Index>(), tokens + 1),
            any::<prop::sample::Index>(),
            prop::option::of(select(vec![";", " ;", "; ;", ";/* x */", ";--\n", ";  "])),
        )
            .prop_map(
                |(template, styles, keyword_case, separators, leading, trailing)| Variant {
                    template,
                    styles,
                    keyword_case,
                    separators,
                    leading,
                    trailing,
                },
            )
    })
}

fn slot_of(token: &str) -> Option<usize> {
    token.strip_prefix('{')?.strip_suffix('}')?.parse().ok()
}

/// Renders a variant; `canonical` writes single spaces, upper-case keywords and
/// every identifier quoted exactly as folded. Also returns the folded names.
fn render(v: &Variant, canonical: bool) -> (String, Vec<String>) {
    let t = &TEMPLATES[v.template];
    let folded: Vec<String> = t
        .names
        .iter()
        .zip(&v.styles)
        .map(|(n, s)| render_ident(n, s).1)
        .collect();
    let mut out = String::new();
    if !canonical {
        out.push_str(SEPARATORS[v.leading.index(SEPARATORS.len())]);
    }
    for (i, tok) in t.sql.split(' ').enumerate() {
        if i > 0 {
            out.push_str(if canonical {
                " "
            } else {
                SEPARATORS[v.separators[i].index(SEPARATORS.len())]
            });
        }
        if let Some(slot) = slot_of(tok) {
            if canonical {
                out.push_str(&format!("\"{}\"", folded[slot]));
            } else {
                out.push_str(&render_ident(t.names[slot], &v.styles[slot]).0);
            }
        } else if !canonical && tok.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            out.push_str(&recase(tok, v.keyword_case[i]));
        } else {
            out.push_str(tok);
        }
    }
    if !canonical {
        if let Some(t) = v.trailing {
            out.push_str(t);
        }
        out.push_str(SEPARATORS[v.separators[0].index(SEPARATORS.len())]);
    }
    (out, folded)
}

fn access_set(sql: &str) -> Result<BTreeSet<(Action, Option<String>, String)>, TestCaseError> {
    let stmts = inspect::inspect(sql)
        .map_err(|e| TestCaseError::fail(format!("{sql:?} does not parse: {e}")))?;
    prop_assert_eq!(stmts.len(), 1, "{:?}: {:?}", sql, stmts);
    Ok(stmts[0]
        .accesses
        .iter()
        .map(
            |Access {
                 action,
                 object: ObjectName { schema, name },
             }| { (*action, schema.clone(), name.clone()) },
        )
        .collect())
}

#[test]
fn accesses_do_not_depend_on_comments_case_or_quoting() {
    check("inspect_metamorphic", 4000, variant, |v| {
        let (sql, folded) = render(&v, false);
        let (canonical, _) = render(&v, true);
        let got = access_set(&sql)?;
        let want = access_set(&canonical)?;
        prop_assert_eq!(&got, &want, "{:?} vs canonical {:?}", sql, canonical);

        // The canonical form has the accesses the template promises, under
        // the folded names: a quoted upper-case name stays upper-case.
        let t = &TEMPLATES[v.template];
        for &(action, schema, name) in t.expect {
            let key = (
                action,
                schema.map(|s| folded[s].clone()),
                folded[name].clone(),
            );
            prop_assert!(
                want.contains(&key),
                "{canonical:?}: {key:?} not in {want:?}"
            );
        }
        // And no access under a name that was not written: `"OPS"` is not ops.
        let written: BTreeSet<&str> = folded.iter().map(String::as_str).collect();
        for (_, schema, name) in &want {
            prop_assert!(written.contains(name.as_str()), "{canonical:?}: {name}");
            if let Some(s) = schema {
                prop_assert!(written.contains(s.as_str()), "{canonical:?}: {s}");
            }
        }
        Ok(())
    });
}

#[test]
fn quoting_an_upper_case_identifier_names_another_object() {
    // The deterministic core of the property above, for the protected schema.
    let one = |sql: &str| access_set(sql).unwrap_or_else(|e| panic!("{e}"));
    let ops = BTreeSet::from([(
        Action::Write,
        Some("ops".to_owned()),
        "job_queue".to_owned(),
    )]);
    for sql in [
        "DELETE FROM ops.job_queue",
        "DELETE FROM OPS.JOB_QUEUE",
        "delete from Ops.Job_Queue",
        "DELETE FROM \"ops\".\"job_queue\"",
        "DELETE FROM U&\"\\006Fps\".job_queue",
        "DELETE/**/FROM--x\nops/**/./* y */job_queue",
    ] {
        assert_eq!(one(sql), ops, "{sql}");
    }
    assert_eq!(
        one("DELETE FROM \"OPS\".job_queue"),
        BTreeSet::from([(
            Action::Write,
            Some("OPS".to_owned()),
            "job_queue".to_owned()
        )])
    );
}

// ---------------------------------------------------------------------------
// 5. Policy: no protected write slips through
// ---------------------------------------------------------------------------

/// Protected relations, as a client may write them (search_path $user, public).
const TARGETS: &[&str] = &[
    "ops.job_queue",
    "OPS.JOB_QUEUE",
    "\"ops\".\"job_queue\"",
    "U&\"\\006Fps\".job_queue",
    "ops . /**/ intake_logs",
    "intake.foil_datasets",
    "enforcement.actions",
    "enforcement.\"Anything\"",
    "public.judgments",
    "judgments",
    "Public.Judgments",
    "plaintiffs",
    "public.enforcement_cases",
    "postgres.public.judgments",
];

/// A statement shape in the composition.
#[derive(Debug, Clone)]
struct Stmt {
    sql: String,
    /// INSERT/UPDATE/DELETE/MERGE: can take RETURNING, sit in a CTE, be EXPLAINed.
    dml: bool,
    /// Starts with a WITH clause.
    has_with: bool,
    /// A query (SELECT ...) usable where a SELECT is required.
    select: bool,
}

fn protected_write() -> impl Strategy<Value = Stmt> {
    let t = select(TARGETS);
    let dml = prop_oneof![
        Just("DELETE FROM {t}"),
        Just("DELETE FROM {t} WHERE id > 0"),
        Just("DELETE FROM ONLY {t} AS x USING public.scratch s WHERE s.k = 'x'"),
        Just("UPDATE {t} SET status = 'x'"),
        Just("UPDATE {t} AS u SET (a, b) = (SELECT 1, 2) FROM public.scratch"),
        Just("INSERT INTO {t} (id) VALUES (1)"),
        Just("INSERT INTO {t} DEFAULT VALUES"),
        Just("INSERT INTO {t} SELECT * FROM public.scratch"),
        Just("INSERT INTO {t} AS i (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = i.id"),
        Just("MERGE INTO {t} m USING public.scratch s ON true WHEN MATCHED THEN DELETE"),
        Just("MERGE INTO public.scratch m USING {t} s ON true WHEN MATCHED THEN DELETE"),
    ];
    let utility = prop_oneof![
        Just("TRUNCATE {t}"),
        Just("TRUNCATE TABLE public.scratch, {t} CASCADE"),
        Just("COPY {t} FROM STDIN"),
        Just("COPY {t} (id) FROM STDIN WITH (FORMAT csv)"),
        Just("copy {t} from stdin"),
    ];
    // The second MERGE writes public.scratch and only reads the target: not
    // a protected write. Keep the first statement of that template a write.
    prop_oneof![
        4 => (dml, t.clone()).prop_filter_map("reads only", |(d, t)| {
            (!d.starts_with("MERGE INTO public.scratch")).then(|| Stmt {
                sql: d.replace("{t}", t),
                dml: true,
                has_with: false,
                select: false,
            })
        }),
        1 => (utility, t).prop_map(|(u, t)| Stmt {
            sql: u.replace("{t}", t),
            dml: false,
            has_with: false,
            select: false,
        }),
    ]
}

fn returning(s: &Stmt) -> String {
    format!("{} RETURNING *", s.sql)
}

/// One layer of context around a statement; layers that don't fit leave it as is.
fn wrap(s: Stmt, layer: u8) -> Stmt {
    let q = |sql: String, dml: bool, has_with: bool, select: bool| Stmt {
        sql,
        dml,
        has_with,
        select,
    };
    match layer {
        // Data-modifying CTE read by a SELECT.
        0 if s.dml => q(
            format!("WITH w AS ({}) SELECT * FROM w", returning(&s)),
            false,
            true,
            true,
        ),
        // Data-modifying CTE feeding an unprotected insert.
        1 if s.dml => q(
            format!(
                "WITH w AS ({}) INSERT INTO public.scratch SELECT * FROM w",
                returning(&s)
            ),
            true,
            true,
            false,
        ),
        // A harmless CTE in front.
        2 if s.dml && !s.has_with => {
            q(format!("WITH a AS (SELECT 1) {}", s.sql), true, true, false)
        }
        // Nested among other CTEs, unreferenced (it still runs).
        3 if s.dml => q(
            format!(
                "WITH a AS (SELECT 1), w AS ({}), b AS (SELECT 2) SELECT * FROM a, b",
                s.sql
            ),
            false,
            true,
            true,
        ),
        // A subquery around a query with a data-modifying CTE.
        4 if s.select => q(format!("SELECT * FROM ({}) sub", s.sql), false, false, true),
        // Writable CTE inside a CTE.
        5 if s.dml || s.select => q(
            format!("WITH outer_w AS ({}) SELECT 1", s.sql),
            false,
            true,
            true,
        ),
        _ => s,
    }
}

/// The outermost layer: turns the statement into something else that runs it.
fn terminal(s: Stmt, kind: u8) -> String {
    let query = s.dml || s.select;
    match kind {
        0 if query => format!("EXPLAIN ANALYZE {}", s.sql),
        1 if query => format!("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) {}", s.sql),
        2 if query => format!("PREPARE p AS {}", s.sql),
        3 if query => format!("PREPARE p (int, text) AS {}", s.sql),
        4 if s.dml => format!("COPY ({}) TO STDOUT", returning(&s)),
        5 if s.select => format!("COPY ({}) TO STDOUT WITH (FORMAT csv)", s.sql),
        6 if s.select => format!("CREATE TEMP TABLE tt AS {}", s.sql),
        7 if s.select => format!("DECLARE c CURSOR FOR {}", s.sql),
        8 if s.select => format!("CREATE VIEW public.v AS {}", s.sql),
        9 if s.select => format!("SELECT * INTO TEMP tt FROM ({}) s", s.sql),
        _ => s.sql,
    }
}

const HARMLESS: &[&str] = &[
    "SELECT 1",
    "SELECT * FROM public.scratch",
    "SELECT now()",
    "VALUES (1)",
    "SHOW search_path",
    "BEGIN",
    "COMMIT",
    "SAVEPOINT s",
    "SELECT count(*) FROM ops.job_queue",
    "SELECT * FROM judgments",
    "SELECT 'DELETE FROM ops.job_queue'",
    "SELECT $$; DELETE FROM ops.job_queue; $$",
    "SELECT $x$ ' $$ ; DELETE FROM ops.job_queue $x$",
    "/* DELETE FROM ops.job_queue; */ SELECT 1",
    "SELECT 1 -- ; DELETE FROM ops.job_queue\n",
    "SELECT \"DELETE FROM ops\" FROM (SELECT 1) AS t(\"DELETE FROM ops\")",
    "",
];

const GLUE: &[&str] = &[";", "; ", ";\n", " ;", ";/* ; */", ";-- x\n", ";;", "; ;\n"];

fn sprinkle_comments(sql: &str, spots: &[(prop::sample::Index, &'static str)]) -> String {
    // Replace some single spaces outside literals by comments or other
    // whitespace. The write statements' literals hold no spaces, and U&
    // identifiers none either, so any space is between tokens.
    let spaces: Vec<usize> = sql.match_indices(' ').map(|(i, _)| i).collect();
    if spaces.is_empty() {
        return sql.to_owned();
    }
    let mut chosen: Vec<(usize, &str)> = spots
        .iter()
        .map(|(i, s)| (spaces[i.index(spaces.len())], *s))
        .collect();
    chosen.sort();
    chosen.dedup_by_key(|c| c.0);
    let mut out = String::new();
    let mut last = 0;
    for (at, s) in chosen {
        out.push_str(&sql[last..at]);
        out.push_str(s);
        last = at + 1;
    }
    out.push_str(&sql[last..]);
    out
}

#[derive(Debug, Clone)]
struct Composition {
    write: Stmt,
    layers: Vec<u8>,
    terminal: u8,
    comments: Vec<(prop::sample::Index, &'static str)>,
    before: Vec<&'static str>,
    after: Vec<&'static str>,
    glue: Vec<prop::sample::Index>,
}

fn composition() -> impl Strategy<Value = Composition> {
    (
        protected_write(),
        prop::collection::vec(0u8..6, 0..4),
        0u8..12,
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                select(vec!["/**/", " /* x */ ", "\n", "--\n", "\t", " /*/**/*/ "]),
            ),
            0..6,
        ),
        prop::collection::vec(select(HARMLESS), 0..3),
        prop::collection::vec(select(HARMLESS), 0..3),
        prop::collection::vec(any::<prop::sample::Index>(), 8),
    )
        .prop_map(
            |(write, layers, terminal, comments, before, after, glue)| Composition {
                write,
                layers,
                terminal,
                comments,
                before,
                after,
                glue,
            },
        )
}

fn compose(c: &Composition) -> (String, String) {
    let mut s = c.write.clone();
    for &l in &c.layers {
        s = wrap(s, l);
    }
    let unwrapped = terminal(s, c.terminal);
    stat(format!(
        "{} with {} WITH",
        unwrapped.split([' ', '(']).next().unwrap_or(""),
        unwrapped.matches("WITH").count()
    ));
    let stmt = sprinkle_comments(&unwrapped, &c.comments);
    let mut parts: Vec<&str> = c.before.clone();
    parts.push(&stmt);
    parts.extend(c.after.iter().copied());
    let mut sql = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            sql.push_str(GLUE[c.glue[i % c.glue.len()].index(GLUE.len())]);
        }
        sql.push_str(p);
    }
    let harmless: Vec<&str> = c.before.iter().chain(&c.after).copied().collect();
    (sql, harmless.join(";\n"))
}

#[test]
fn no_protected_write_slips_through() {
    check("policy_no_write_slips_through", 5000, composition, {
        let policy = shipped_policy();
        move |c| {
            let class = policy.class_for_user("dragonfly_app");
            prop_assert!(policy.is_restricted(class));
            let decide_all = |sql: &str| -> Result<Vec<Verdict>, TestCaseError> {
                let stmts = inspect::inspect(sql)
                    .map_err(|e| TestCaseError::fail(format!("{sql:?} does not parse: {e}")))?;
                Ok(stmts
                    .iter()
                    .map(|s| {
                        policy
                            .decide(class, "dragonfly_app", s, &worker_path())
                            .verdict
                    })
                    .collect())
            };
            let (sql, harmless) = compose(&c);
            let verdicts = decide_all(&sql)?;
            prop_assert!(
                verdicts.contains(&Verdict::Deny),
                "slipped through: {:?} -> {:?}",
                sql,
                verdicts
            );
            // Control: the statements around it are allowed on their own, so
            // the refusal is the write's.
            let control = decide_all(&harmless)?;
            prop_assert!(
                control.iter().all(|v| *v == Verdict::Allow),
                "harmless statements refused: {:?} -> {:?}",
                harmless,
                control
            );
            Ok(())
        }
    });
}
