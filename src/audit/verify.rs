//! `pgward audit verify`: walk the chain over files given oldest first.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::chain::{ChainTip, GENESIS, LineError, check_line};

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What verification found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Valid, chained records read before the end or the first problem.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last: Option<ChainTip>,
    /// `None`: the chain is intact.
    pub problem: Option<Problem>,
    /// Not tampering, but worth knowing (torn final line, gaps, partial chain).
    pub warnings: Vec<String>,
    /// Gap records, and the events they say were dropped.
    pub gaps: u64,
    pub dropped: u64,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Accept a first record that is not the start of a chain (earlier files
    /// archived or deleted): its `prev` is then taken on trust.
    pub allow_partial: bool,
}

struct Prev {
    tip: ChainTip,
    file: usize,
    line: u64,
}

/// Verifies `files` as one chain, oldest first. `Err` only for I/O errors.
pub fn verify_files(files: &[PathBuf], opts: VerifyOptions) -> io::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut prev: Option<Prev> = None;
    for (fi, path) in files.iter().enumerate() {
        let last_file = fi + 1 == files.len();
        let mut reader = BufReader::new(open(path)?);
        let mut raw = Vec::new();
        let mut line_no = 0u64;
        loop {
            raw.clear();
            if reader.read_until(b'\n', &mut raw).map_err(at(path))? == 0 {
                break;
            }
            line_no += 1;
            let terminated = raw.last() == Some(&b'\n');
            let line = if terminated {
                &raw[..raw.len() - 1]
            } else {
                &raw[..]
            };
            let fail = |message: String| Problem {
                file: path.clone(),
                line: line_no,
                message,
            };
            if line.is_empty() {
                report.problem = Some(fail("empty line (a record was removed?)".into()));
                return Ok(report);
            }
            let rec = match check_line(line) {
                Ok(r) => r,
                Err(LineError::Unparseable(_)) if !terminated && last_file => {
                    report.warnings.push(format!(
                        "{}:{line_no}: torn final line (crash?): {} bytes, ignored",
                        path.display(),
                        line.len()
                    ));
                    break;
                }
                Err(e @ LineError::Unparseable(_)) if !terminated => {
                    report.problem = Some(fail(format!(
                        "{e}: an unterminated last line is only expected at the end of the last file"
                    )));
                    return Ok(report);
                }
                Err(e) => {
                    report.problem = Some(fail(e.to_string()));
                    return Ok(report);
                }
            };
            match &prev {
                None => {
                    if rec.seq != 1 || rec.prev != GENESIS {
                        let what = format!(
                            "the chain does not start here: first record is seq {} (a chain starts with seq 1, prev 0...0)",
                            rec.seq
                        );
                        if opts.allow_partial {
                            report.warnings.push(format!(
                                "{}:{line_no}: {what}; its prev is taken on trust (--allow-partial)",
                                path.display()
                            ));
                        } else {
                            report.problem = Some(fail(format!(
                                "{what}: records before it are missing, or give the earlier files first (--allow-partial if they were archived)"
                            )));
                            return Ok(report);
                        }
                    }
                }
                Some(p) => {
                    let expected = p.tip.seq + 1;
                    let where_prev = format!("{}:{}", files[p.file].display(), p.line);
                    if rec.seq == expected && rec.prev != p.tip.hash {
                        report.problem = Some(fail(format!(
                            "record seq {} does not link to the record before it ({where_prev}, seq {}): \
                             its prev is not that record's hash; one of them was altered and re-hashed, or replaced",
                            rec.seq, p.tip.seq
                        )));
                        return Ok(report);
                    }
                    if rec.seq > expected {
                        let message = match find_seq(files, fi, line_no, expected)? {
                            Some((f, l)) => format!(
                                "records reordered: seq {} comes here, but seq {expected} (expected after {where_prev}) is later, at {}:{l}",
                                rec.seq,
                                files[f].display()
                            ),
                            None => format!(
                                "records missing: expected seq {expected} after {where_prev}, found seq {} ({} record(s) deleted)",
                                rec.seq,
                                rec.seq - expected
                            ),
                        };
                        report.problem = Some(fail(message));
                        return Ok(report);
                    }
                    if rec.seq < expected {
                        report.problem = Some(fail(format!(
                            "record seq {} out of order after seq {} ({where_prev}): inserted, duplicated or reordered record",
                            rec.seq, p.tip.seq
                        )));
                        return Ok(report);
                    }
                }
            }
            if !terminated {
                report.warnings.push(format!(
                    "{}:{line_no}: last record has no final newline",
                    path.display()
                ));
            }
            if rec.kind() == "gap" {
                let n = rec
                    .fields
                    .get("dropped")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                report.gaps += 1;
                report.dropped += n;
                report.warnings.push(format!(
                    "{}:{line_no}: gap record: {n} event(s) dropped (queue full, on_full: drop)",
                    path.display()
                ));
            }
            report.records += 1;
            report.first_seq.get_or_insert(rec.seq);
            prev = Some(Prev {
                tip: rec.tip(),
                file: fi,
                line: line_no,
            });
        }
    }
    report.last = prev.map(|p| p.tip);
    Ok(report)
}

fn open(path: &Path) -> io::Result<File> {
    File::open(path).map_err(at(path))
}

fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Where a record with `seq` appears after `files[file]` line `after` (only
/// used to explain a break: reordered vs. missing).
fn find_seq(
    files: &[PathBuf],
    file: usize,
    after: u64,
    seq: u64,
) -> io::Result<Option<(usize, u64)>> {
    for (fi, path) in files.iter().enumerate().skip(file) {
        let reader = BufReader::new(open(path)?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(at(path))?;
            let n = i as u64 + 1;
            if fi == file && n <= after {
                continue;
            }
            let found = serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|v| v.get("seq").and_then(Value::as_u64));
            if found == Some(seq) {
                return Ok(Some((fi, n)));
            }
        }
    }
    Ok(None)
}
