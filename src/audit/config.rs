//! The `audit:` section of policy.yaml.

use std::path::PathBuf;

use serde::Deserialize;

/// Default path of the file sink (relative paths are used as given, i.e.
/// relative to pgward's working directory).
pub const DEFAULT_FILE: &str = "audit/pgward-audit.jsonl";
/// Default bound of the queue between sessions and the writer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Default fsync interval.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 200;

/// How the audit stream is written.
///
/// ```yaml
/// audit:
///   sinks:
///     file:
///       path: audit/pgward-audit.jsonl   # default
///       rotate_bytes: 104857600          # optional: rotate before exceeding 100 MiB
///       rotate_seconds: 86400            # optional: rotate files older than a day
///     stdout: false                      # default
///   queue_capacity: 65536                # default
///   on_full: block                       # default; or `drop`
///   fsync: 200                           # default: at most 200 ms after a write; or `per_record`
///   full_text: false                     # default: literals replaced by $n placeholders
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where records go. Absent: the default file sink only.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// How many records may wait for the writer (≥ 1).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    #[serde(default)]
    pub on_full: OnFull,
    #[serde(default)]
    pub fsync: Fsync,
    /// Record statement text as sent (with its literals) instead of normalized.
    #[serde(default)]
    pub full_text: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sinks: SinksConfig::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            on_full: OnFull::default(),
            fsync: Fsync::default(),
            full_text: false,
        }
    }
}

impl AuditConfig {
    /// `pgward serve --audit-file PATH`: use `path` for the file sink, keeping
    /// its rotation settings; adds a file sink if the configuration had none.
    pub fn override_file_path(&mut self, path: PathBuf) {
        match &mut self.sinks.file {
            Some(f) => f.path = path,
            None => self.sinks.file = Some(FileSinkConfig::new(path)),
        }
    }
}

fn default_queue_capacity() -> usize {
    DEFAULT_QUEUE_CAPACITY
}

/// The sinks. When the `sinks:` key is present, only the sinks it names are used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    #[serde(default)]
    pub file: Option<FileSinkConfig>,
    /// Also write every record to standard output.
    #[serde(default)]
    pub stdout: bool,
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            file: Some(FileSinkConfig::new(PathBuf::from(DEFAULT_FILE))),
            stdout: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: PathBuf,
    /// Rotate before the file would exceed this many bytes.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Rotate once the file's first record is this old.
    #[serde(default)]
    pub rotate_seconds: Option<u64>,
}

impl FileSinkConfig {
    pub fn new(path: PathBuf) -> Self {
        FileSinkConfig {
            path,
            rotate_bytes: None,
            rotate_seconds: None,
        }
    }
}

/// What [`super::Auditor::record`] does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Wait for space: the session stalls, no record is ever dropped.
    #[default]
    Block,
    /// Drop the record, count it; the writer then writes a chained `gap` record.
    Drop,
}

/// When written records are made durable. In YAML: a number of
/// milliseconds (`fsync: 200`, also `"200ms"`) or `fsync: per_record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// At most `interval_ms` after a record is written.
    Interval { interval_ms: u64 },
    /// After every write (the writer's batch of records, i.e. group commit:
    /// nothing is written without an fsync following it before the writer
    /// takes more records from the queue).
    PerRecord,
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Fsync;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`per_record` or an interval in milliseconds (e.g. 200)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Fsync, E> {
                Ok(Fsync::Interval { interval_ms: v })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Fsync, E> {
                u64::try_from(v)
                    .map(|interval_ms| Fsync::Interval { interval_ms })
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Fsync, E> {
                if v == "per_record" {
                    return Ok(Fsync::PerRecord);
                }
                v.strip_suffix("ms")
                    .unwrap_or(v)
                    .trim()
                    .parse()
                    .map(|interval_ms| Fsync::Interval { interval_ms })
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval {
            interval_ms: DEFAULT_FSYNC_INTERVAL_MS,
        }
    }
}
