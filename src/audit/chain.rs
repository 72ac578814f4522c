//! The hash chain: canonical bytes, checking one line, and finding the last
//! record of a file (to continue the chain after a restart).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex digits + `"}`: how every record line ends.
pub const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// The last record of a chain: what the next record links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    pub seq: u64,
    /// Hex SHA-256 of that record's canonical bytes (its `hash` field).
    pub hash: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// [`sha256_hex`] into a buffer: the writer hashes every record, and this
/// path allocates nothing.
pub fn sha256_hex_into(bytes: &[u8], out: &mut [u8; 64]) {
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(Sha256::digest(bytes), out);
}

/// The canonical bytes of a record line (without its `\n`): the line with its
/// final `,"hash":"<64 hex>"` member removed. `None` if the line does not end
/// that way.
pub fn canonical(line: &[u8]) -> Option<Vec<u8>> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return None;
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let suffix = &line[cut..];
    if !suffix.starts_with(b",\"hash\":\"")
        || !suffix.ends_with(b"\"}")
        || !suffix[9..73]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut c = Vec::with_capacity(cut + 1);
    c.extend_from_slice(&line[..cut]);
    c.push(b'}');
    Some(c)
}

/// A line that is a well-formed record whose hash matches its content.
#[derive(Debug, Clone)]
pub struct CheckedRecord {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// The whole record, parsed.
    pub fields: Map<String, Value>,
}

impl CheckedRecord {
    pub fn kind(&self) -> &str {
        self.fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn tip(&self) -> ChainTip {
        ChainTip {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not JSON at all (e.g. a line torn by a crash).
    #[error("not a JSON record ({0})")]
    Unparseable(String),
    /// JSON, but not shaped like a record.
    #[error("not a pgward audit record: {0}")]
    NotRecord(String),
    /// A record whose content does not match its `hash`: altered.
    #[error("record seq {seq} was altered: its content does not match its hash")]
    Altered { seq: u64 },
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses one line (without its `\n`) and checks its own hash.
pub fn check_line(line: &[u8]) -> Result<CheckedRecord, LineError> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| LineError::Unparseable(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(LineError::NotRecord("not a JSON object".into()));
    };
    let seq = fields
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| LineError::NotRecord("no numeric `seq`".into()))?;
    let hex_field = |name: &str| -> Result<String, LineError> {
        match fields.get(name).and_then(Value::as_str) {
            Some(s) if is_hex64(s) => Ok(s.to_string()),
            _ => Err(LineError::NotRecord(format!(
                "`{name}` is not 64 lowercase hex digits"
            ))),
        }
    };
    let prev = hex_field("prev")?;
    let hash = hex_field("hash")?;
    let canonical = canonical(line)
        .ok_or_else(|| LineError::NotRecord("`hash` is not the last member".into()))?;
    if sha256_hex(&canonical) != hash || !line.ends_with(format!("{hash}\"}}").as_bytes()) {
        return Err(LineError::Altered { seq });
    }
    Ok(CheckedRecord {
        seq,
        prev,
        hash,
        fields,
    })
}

/// The end of a file as the writer finds it at startup.
#[derive(Debug, Default)]
pub struct TailScan {
    /// The last `\n`-terminated line (without its `\n`).
    pub last_line: Option<Vec<u8>>,
    /// Bytes after the last `\n`, with their offset: a line the writer did not finish.
    pub unterminated: Option<(u64, Vec<u8>)>,
}

/// Reads backwards from the end of `file` until the last complete line and any
/// unterminated remainder are known. Reads only the tail, however big the file.
pub fn scan_tail(file: &mut File) -> io::Result<TailScan> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut data = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        file.by_ref().take(len - start).read_to_end(&mut data)?;
        let at_start = start == 0;
        // Where the final (possibly unterminated) part begins.
        let (complete_end, unterminated) = match data.iter().rposition(|&c| c == b'\n') {
            Some(nl) => {
                let rest = &data[nl + 1..];
                let u = (!rest.is_empty()).then(|| (start + nl as u64 + 1, rest.to_vec()));
                (Some(nl), u)
            }
            None if at_start => (None, (!data.is_empty()).then(|| (0, data.clone()))),
            None => {
                window *= 4;
                continue;
            }
        };
        let Some(end) = complete_end else {
            return Ok(TailScan {
                last_line: None,
                unterminated,
            });
        };
        let line_start = match data[..end].iter().rposition(|&c| c == b'\n') {
            Some(p) => p + 1,
            None if at_start => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        return Ok(TailScan {
            last_line: Some(data[line_start..end].to_vec()),
            unterminated,
        });
    }
}

/// The first line of `file` (without `\n`), if it has a complete one.
pub fn first_line(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    file.seek(SeekFrom::Start(0))?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(p) = chunk[..n].iter().position(|&c| c == b'\n') {
            out.extend_from_slice(&chunk[..p]);
            return Ok(Some(out));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}
