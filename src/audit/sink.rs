//! Where records go. A [`Sink`] receives batches of complete, already chained
//! lines; the file sink also tells the writer where the chain left off.
//!
//! Adding a sink (syslog, a socket, ...): implement [`Sink`], add its settings
//! to [`super::SinksConfig`] and construct it in `open_sinks`. Every sink gets
//! identical bytes, so each one holds a verifiable chain.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::AuditError;
use super::chain::{ChainTip, check_line, first_line, scan_tail, sha256_hex};
use super::config::FileSinkConfig;
use super::record::TornTail;
use super::time::{compact_micros, parse_rfc3339_micros};

/// Records waiting to be written: complete lines, each ending with `\n`,
/// stored contiguously.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
    /// End offset (exclusive) of each line in `buf`.
    ends: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }
    /// Lines `from..to`, contiguous.
    pub fn bytes(&self, from: usize, to: usize) -> &[u8] {
        &self.buf[self.start(from)..self.start(to)]
    }
    /// Line `i`, with its `\n`.
    pub fn line(&self, i: usize) -> &[u8] {
        self.bytes(i, i + 1)
    }
    /// Where the encoder appends the next line; call [`Batch::end_line`] after.
    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
    pub(crate) fn end_line(&mut self) {
        self.ends.push(self.buf.len());
    }
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// A destination for audit records.
pub trait Sink: Send {
    /// For logs: e.g. the file's path.
    fn describe(&self) -> String;
    /// Appends lines `from..` of `batch`, in order. On error, returns the index
    /// of the first line not completely written, having removed any part of it
    /// that was written where it can (the file sink truncates): the writer
    /// retries from that index, so a record is neither lost nor duplicated.
    fn write(&mut self, batch: &Batch, from: usize) -> Result<(), (usize, io::Error)>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Standard output. Its chain starts afresh at every start (nothing to read back).
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn describe(&self) -> String {
        "stdout".into()
    }
    fn write(&mut self, batch: &Batch, from: usize) -> Result<(), (usize, io::Error)> {
        let mut out = io::stdout().lock();
        out.write_all(batch.bytes(from, batch.len()))
            .and_then(|()| out.flush())
            .map_err(|e| (from, e))
    }
    fn sync(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

/// An append-only JSON Lines file, mode 0600, rotated by size and/or age.
///
/// Rotation renames `<path>` to `<path>.<UTC time, YYYYMMDDTHHMMSS.ffffffZ>`
/// (`-1`, `-2`... appended in the unlikely case that name exists) and starts a
/// new `<path>`; rotated names sort in the order they were written, and the
/// chain continues from the rotated file's last record into the new file.
pub struct FileSink {
    path: PathBuf,
    file: File,
    /// Bytes in the file that are complete records.
    len: u64,
    /// When the file's first record was written (`None`: empty).
    born: Option<SystemTime>,
    rotate_bytes: Option<u64>,
    rotate_seconds: Option<u64>,
}

/// A file sink ready to append, and what its existing content says.
pub(crate) struct OpenedFile {
    pub sink: FileSink,
    /// The last record on disk (this file, or the newest rotated one when this
    /// one is empty or new): the chain continues from it.
    pub tip: Option<ChainTip>,
    /// An incomplete last line cut from the file (after a crash).
    pub torn: Option<TornTail>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_append(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).append(true).mode(0o600);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    o.open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The tip of a file's last complete line; an error if that line is not a
/// valid record (the chain cannot be continued honestly from it).
fn tip_of(path: &Path, line: &[u8]) -> Result<ChainTip, AuditError> {
    check_line(line)
        .map(|r| r.tip())
        .map_err(|e| AuditError::Resume {
            path: path.to_path_buf(),
            reason: format!("its last record is invalid: {e}"),
        })
}

impl FileSink {
    pub(crate) fn open(cfg: &FileSinkConfig) -> Result<OpenedFile, AuditError> {
        let path = cfg.path.clone();
        if path.as_os_str().is_empty() {
            return Err(AuditError::Config("audit file path is empty".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
        let mut file = open_append(&path, false).map_err(io_err(&path))?;
        if let Ok(meta) = file.metadata()
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "audit file is readable by others (mode {:o}); expected 0600",
                meta.permissions().mode() & 0o777
            );
        }
        let scan = scan_tail(&mut file).map_err(io_err(&path))?;
        let mut tip = None;
        let mut torn = None;
        if let Some((offset, rest)) = scan.unterminated {
            if let Ok(rec) = check_line(&rest) {
                // A complete record that only lacks its newline.
                file.write_all(b"\n").map_err(io_err(&path))?;
                tip = Some(rec.tip());
            } else {
                file.set_len(offset).map_err(io_err(&path))?;
                torn = Some(TornTail {
                    file: path.display().to_string(),
                    bytes: rest.len() as u64,
                    sha256: sha256_hex(&rest),
                });
            }
            file.sync_all().map_err(io_err(&path))?;
        }
        if tip.is_none()
            && let Some(line) = &scan.last_line
        {
            tip = Some(tip_of(&path, line)?);
        }
        let len = file.metadata().map_err(io_err(&path))?.len();
        let born = if len == 0 {
            None
        } else {
            let first = first_line(&mut file).map_err(io_err(&path))?;
            Some(
                first
                    .and_then(|l| check_line(&l).ok())
                    .and_then(|r| {
                        r.fields
                            .get("ts")
                            .and_then(|v| v.as_str())
                            .and_then(parse_rfc3339_micros)
                    })
                    .unwrap_or_else(SystemTime::now),
            )
        };
        if tip.is_none() {
            tip = tip_from_rotated(&path)?;
        }
        Ok(OpenedFile {
            sink: FileSink {
                path,
                file,
                len,
                born,
                rotate_bytes: cfg.rotate_bytes,
                rotate_seconds: cfg.rotate_seconds,
            },
            tip,
            torn,
        })
    }

    /// True if the file should be rotated before appending `next` more bytes.
    fn should_rotate(&self, next: u64) -> bool {
        if self.len == 0 {
            return false;
        }
        let too_big = self.rotate_bytes.is_some_and(|b| self.len + next > b);
        let too_old = match (self.rotate_seconds, self.born) {
            (Some(s), Some(born)) => {
                born.elapsed().unwrap_or(Duration::ZERO) >= Duration::from_secs(s)
            }
            _ => false,
        };
        too_big || too_old
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        let stamp = compact_micros(SystemTime::now());
        let mut target = rotated_name(&self.path, &stamp, 0);
        let mut n = 0;
        while target.exists() {
            n += 1;
            target = rotated_name(&self.path, &stamp, n);
        }
        std::fs::rename(&self.path, &target)?;
        // From here on the old name is free: create the new file, which is
        // also what a restart would do if we crashed now.
        self.file = open_append(&self.path, false)?;
        self.len = 0;
        self.born = None;
        sync_dir(&self.path)?;
        tracing::info!(rotated = %target.display(), "audit file rotated");
        Ok(())
    }
}

fn rotated_name(path: &Path, stamp: &str, n: u32) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".");
    s.push(stamp);
    if n > 0 {
        s.push(format!("-{n}"));
    }
    PathBuf::from(s)
}

/// The tip of the newest rotated sibling `<path>.<stamp>`, if any.
fn tip_from_rotated(path: &Path) -> Result<Option<ChainTip>, AuditError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let prefix = format!("{name}.");
    let mut newest: Option<String> = None;
    for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let Ok(n) = entry.file_name().into_string() else {
            continue;
        };
        let is_rotated = n
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if is_rotated && newest.as_ref().is_none_or(|m| n > *m) {
            newest = Some(n);
        }
    }
    let Some(newest) = newest else {
        return Ok(None);
    };
    let rotated = dir.join(newest);
    let mut f = File::open(&rotated).map_err(io_err(&rotated))?;
    let scan = scan_tail(&mut f).map_err(io_err(&rotated))?;
    match scan.last_line {
        Some(line) => tip_of(&rotated, &line).map(Some),
        None => Ok(None),
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn write(&mut self, batch: &Batch, from: usize) -> Result<(), (usize, io::Error)> {
        let mut done = from;
        while done < batch.len() {
            if self.should_rotate(batch.line(done).len() as u64) {
                self.rotate().map_err(|e| (done, e))?;
            }
            // As many lines as fit before the size limit (at least one).
            let mut end = done + 1;
            while end < batch.len()
                && self
                    .rotate_bytes
                    .is_none_or(|b| self.len + batch.bytes(done, end + 1).len() as u64 <= b)
            {
                end += 1;
            }
            let bytes = batch.bytes(done, end);
            if let Err(e) = self.file.write_all(bytes) {
                // Remove a partial write so that a retry appends whole lines only.
                let _ = self.file.set_len(self.len);
                return Err((done, e));
            }
            self.len += bytes.len() as u64;
            if self.born.is_none() {
                self.born = Some(SystemTime::now());
            }
            done = end;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
