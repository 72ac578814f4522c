//! What is recorded ([`Event`] and its record types) and how a record becomes
//! a chained JSON line ([`Encoder`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};
use smallvec::SmallVec;

use super::chain::{ChainTip, GENESIS, sha256_hex, sha256_hex_into};
use super::time::write_rfc3339_micros;
use crate::inspect::Action;
use crate::inspect::shape::{self, Shape, ShapeState};
use crate::policy::{Decision, ResolvedAccess, Verdict};

/// One thing worth recording. Built by the session (cheap: owned data, no
/// formatting) and handed to [`super::Auditor::record`]; the writer task
/// normalizes, serializes and hashes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A statement executed or refused (simple Query: one per statement in the
    /// string; extended protocol: one per Execute; FunctionCall: one per call).
    Statement(StatementRecord),
    /// A client connected (before authentication).
    Connect(ConnectRecord),
    /// The outcome of authentication, successful or not.
    Authenticated(AuthRecord),
    /// A session ended.
    Disconnect(DisconnectRecord),
    /// A client refused during startup (TLS required, unknown identity, limits...).
    StartupRefused(StartupRefusedRecord),
    /// A policy reload, applied or rejected.
    PolicyReload(PolicyReloadRecord),
}

impl From<StatementRecord> for Event {
    fn from(r: StatementRecord) -> Self {
        Event::Statement(r)
    }
}
impl From<ConnectRecord> for Event {
    fn from(r: ConnectRecord) -> Self {
        Event::Connect(r)
    }
}
impl From<AuthRecord> for Event {
    fn from(r: AuthRecord) -> Self {
        Event::Authenticated(r)
    }
}
impl From<DisconnectRecord> for Event {
    fn from(r: DisconnectRecord) -> Self {
        Event::Disconnect(r)
    }
}
impl From<StartupRefusedRecord> for Event {
    fn from(r: StartupRefusedRecord) -> Self {
        Event::StartupRefused(r)
    }
}
impl From<PolicyReloadRecord> for Event {
    fn from(r: PolicyReloadRecord) -> Self {
        Event::PolicyReload(r)
    }
}

/// The wire protocol path a statement came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Simple,
    Extended,
    FunctionCall,
}

/// The policy's verdict, as recorded: `"allow"`, `"deny"`, or `"monitor"`
/// (would have been denied, but the applicable mode is monitor, so it ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    #[default]
    Allow,
    Deny,
    Monitor,
}

impl AuditDecision {
    /// Every decision, in declaration order (`decision as usize` indexes it).
    pub const ALL: [AuditDecision; 3] = [
        AuditDecision::Allow,
        AuditDecision::Deny,
        AuditDecision::Monitor,
    ];

    /// The name recorded in the stream and used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::Monitor => "monitor",
        }
    }
}

impl From<Verdict> for AuditDecision {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => AuditDecision::Allow,
            Verdict::Deny => AuditDecision::Deny,
            Verdict::MonitorWouldDeny => AuditDecision::Monitor,
        }
    }
}

/// One object a statement touches and the action on it. Serialized as
/// `{"action":"read"|"write"|"ddl","schema":"public"|null,"name":"users"}`
/// (`schema` null: unqualified and not resolvable to one schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditObject {
    #[serde(serialize_with = "ser_action")]
    pub action: Action,
    pub schema: Option<String>,
    pub name: String,
}

fn ser_action<S: Serializer>(a: &Action, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(action_name(*a))
}

pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Read => "read",
        Action::Write => "write",
        Action::Ddl => "ddl",
    }
}

impl From<&ResolvedAccess> for AuditObject {
    fn from(a: &ResolvedAccess) -> Self {
        AuditObject {
            action: a.action,
            schema: a.schema.clone(),
            name: a.name.clone(),
        }
    }
}

/// How a statement ended. Serialized as `{"tag":"INSERT 0 1"}` or
/// `{"sqlstate":"42501"}`. Error messages are deliberately not recorded: they
/// can quote data (`Key (email)=(bob@example.com) already exists`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The CommandComplete tag.
    #[serde(rename = "tag")]
    Tag(ShortText),
    /// The SQLSTATE of the ErrorResponse (pgward's own refusals: `42501`).
    #[serde(rename = "sqlstate")]
    Error(ShortText),
}

/// Text that is nearly always short (command tags such as `INSERT 0 1`,
/// SQLSTATEs), kept inline up to 32 bytes: recording a statement's outcome
/// allocates nothing. Longer text spills to the heap.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ShortText(SmallVec<[u8; 32]>);

impl ShortText {
    pub fn as_str(&self) -> &str {
        // Only ever built from a &str.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<&str> for ShortText {
    fn from(s: &str) -> Self {
        ShortText(SmallVec::from_slice(s.as_bytes()))
    }
}

impl std::fmt::Debug for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ShortText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One statement, executed or refused.
///
/// Every text is shared (`Arc`): a session builds its part once, a prepared
/// statement its drafts once, and each execution's record is a clone that
/// costs reference counts, not allocations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementRecord {
    pub session_id: u64,
    /// Client address, e.g. `10.0.0.7:51234`.
    pub peer: Arc<str>,
    /// Who the client is (startup user, or the certificate identity).
    pub identity: Arc<str>,
    /// The identity's class name in the policy.
    pub identity_class: Arc<str>,
    /// The role pgward connects upstream as.
    pub upstream_user: Arc<str>,
    pub database: Arc<str>,
    pub tenant: Option<Arc<str>>,
    pub protocol: Protocol,
    /// The statement as the client sent it. The writer records it normalized
    /// (literals → `$n`) unless `full_text` is set; this raw text never
    /// reaches the file otherwise.
    pub statement_text: Arc<str>,
    /// Short kind from inspection, e.g. `SELECT`, `CREATE TABLE`.
    pub statement_kind: Arc<str>,
    pub objects: Arc<[AuditObject]>,
    pub decision: AuditDecision,
    /// Rule id that denied (or would have denied).
    pub rule: Option<Arc<str>>,
    pub reason: Arc<str>,
    /// `None` while unknown (e.g. the connection broke before the reply).
    pub outcome: Option<Outcome>,
    /// Rows affected or returned, from the command tag.
    pub rows: Option<u64>,
    /// From receipt of the statement to its completion, in microseconds.
    pub duration_us: u64,
}

impl StatementRecord {
    /// Fills `decision`, `rule`, `reason` and `objects` from the policy's decision.
    pub fn set_decision(&mut self, d: &Decision) {
        self.decision = d.verdict.into();
        self.rule = d.rule.as_deref().map(Arc::from);
        self.reason = Arc::from(d.reason.as_str());
        self.objects = d.accesses.iter().map(AuditObject::from).collect();
    }
}

/// A client connected. Record type `connect`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ConnectRecord {
    pub session_id: u64,
    pub peer: String,
    /// e.g. `TLSv1.3`; `None`: plaintext.
    pub tls_version: Option<String>,
    /// Client certificate subject, RFC 4514 form.
    pub cert_subject: Option<String>,
    /// Hex SHA-256 of the client certificate (DER).
    pub cert_fingerprint: Option<String>,
}

/// Authentication finished. Record type `auth`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AuthRecord {
    pub session_id: u64,
    pub peer: String,
    pub identity: String,
    pub identity_class: Option<String>,
    pub upstream_user: Option<String>,
    pub database: String,
    pub tenant: Option<String>,
    pub ok: bool,
    /// e.g. `scram-sha-256`, `cert`, `trust`.
    pub method: Option<String>,
    /// Why it failed (SQLSTATE and/or a short reason).
    pub error: Option<String>,
}

/// A session ended. Record type `disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DisconnectRecord {
    pub session_id: u64,
    pub peer: String,
    /// Statements recorded for the session, of which `denied` were refused and
    /// `monitored` would have been.
    pub statements: u64,
    pub denied: u64,
    pub monitored: u64,
    pub duration_us: u64,
    /// `None`: the client said Terminate; otherwise why the session ended.
    pub reason: Option<String>,
}

/// A client refused before its session started. Record type `startup_refused`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StartupRefusedRecord {
    pub session_id: u64,
    pub peer: String,
    pub identity: Option<String>,
    pub database: Option<String>,
    pub sqlstate: String,
    pub reason: String,
}

/// A policy reload. Record type `policy_reload`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PolicyReloadRecord {
    pub ok: bool,
    pub error: Option<String>,
    /// What triggered it, e.g. `SIGHUP`, `file change`.
    pub source: Option<String>,
    /// Hex SHA-256 of the policy file now in force.
    pub policy_sha256: Option<String>,
}

/// How the `text` field of a statement record was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum TextForm {
    /// Literals replaced by `$n` placeholders.
    Normalized,
    /// As sent (`full_text: true`).
    Full,
    /// Normalization failed (unparseable SQL) and full text is off: `text` is
    /// a marker, never the raw text.
    Withheld,
}

#[derive(Serialize)]
struct StatementView<'a> {
    session_id: u64,
    peer: &'a str,
    identity: &'a str,
    identity_class: &'a str,
    upstream_user: &'a str,
    database: &'a str,
    tenant: Option<&'a str>,
    protocol: Protocol,
    kind: &'a str,
    text_form: TextForm,
    text: &'a str,
    fingerprint: Option<&'a str>,
    objects: &'a [AuditObject],
    decision: AuditDecision,
    rule: Option<&'a str>,
    reason: &'a str,
    outcome: Option<&'a Outcome>,
    rows: Option<u64>,
    duration_us: u64,
}

/// Record type `gap`: records dropped because the queue was full (`on_full: drop`).
#[derive(Serialize)]
pub(crate) struct Gap {
    pub dropped: u64,
}

/// Record type `torn_tail`: at startup, an incomplete last line (a crash
/// mid-write) was cut from the file before appending.
#[derive(Serialize)]
pub(crate) struct TornTail {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The normalized form of one statement text.
#[derive(Debug, Clone)]
struct Normalized {
    /// `None`: pg_query could not normalize it.
    text: Option<String>,
    fingerprint: Option<String>,
}

fn normalize(raw: &str) -> Normalized {
    match pg_query::normalize(raw) {
        Ok(text) => {
            let fingerprint = Some(fingerprint_of(&text));
            Normalized {
                text: Some(text),
                fingerprint,
            }
        }
        Err(_) => Normalized {
            text: None,
            fingerprint: None,
        },
    }
}

/// Inserts into a cache of at most [`NORMALIZE_CACHE`] entries (emptied
/// when full, like the inspection cache).
fn bounded_insert<V>(map: &mut HashMap<String, V>, key: String, value: V) {
    if map.len() >= NORMALIZE_CACHE {
        map.clear();
    }
    map.insert(key, value);
}

/// The fingerprint of a normalized statement text: the first 16 hex digits
/// (64 bits) of its SHA-256. Reproduce with
/// `printf %s "$text" | sha256sum | cut -c1-16`.
pub fn fingerprint_of(normalized: &str) -> String {
    let mut h = sha256_hex(normalized.as_bytes());
    h.truncate(16);
    h
}

/// How many distinct statement texts the encoder remembers the normalization
/// of (prepared statements and repeated queries hit it), and the longest text
/// it remembers: at most a few MiB.
const NORMALIZE_CACHE: usize = 2048;
const NORMALIZE_CACHE_MAX_TEXT: usize = 2048;

/// Turns events into chained JSON lines. The writer task owns one; it is public
/// so tools, tests and benchmarks can produce exactly what the writer writes.
#[derive(Debug)]
pub struct Encoder {
    seq: u64,
    prev: String,
    full_text: bool,
    cache: HashMap<String, Arc<Normalized>>,
    /// By [`Shape::key`]: invariant when every integer literal became a
    /// placeholder.
    shapes: HashMap<String, ShapeState<Arc<Normalized>>>,
}

impl Encoder {
    /// Continues the chain after `tip` (`None`: a new chain, first seq 1,
    /// prev 64 zeros).
    pub fn new(tip: Option<ChainTip>, full_text: bool) -> Encoder {
        let (seq, prev) = match tip {
            Some(t) => (t.seq, t.hash),
            None => (0, GENESIS.to_string()),
        };
        Encoder {
            seq,
            prev,
            full_text,
            cache: HashMap::new(),
            shapes: HashMap::new(),
        }
    }

    /// The last record encoded (or the tip it was created with).
    pub fn tip(&self) -> ChainTip {
        ChainTip {
            seq: self.seq,
            hash: self.prev.clone(),
        }
    }

    /// Encodes one event that happened at `at` as the next record: one JSON
    /// line, terminated by `\n`.
    pub fn encode(&mut self, at: SystemTime, event: &Event) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.encode_into(at, event, &mut out);
        out
    }

    /// [`Encoder::encode`], appending to `out`.
    pub fn encode_into(&mut self, at: SystemTime, event: &Event, out: &mut Vec<u8>) {
        match event {
            Event::Statement(s) => self.encode_statement(at, s, out),
            Event::Connect(r) => self.seal(at, "connect", r, out),
            Event::Authenticated(r) => self.seal(at, "auth", r, out),
            Event::Disconnect(r) => self.seal(at, "disconnect", r, out),
            Event::StartupRefused(r) => self.seal(at, "startup_refused", r, out),
            Event::PolicyReload(r) => self.seal(at, "policy_reload", r, out),
        }
    }

    fn encode_statement(&mut self, at: SystemTime, s: &StatementRecord, out: &mut Vec<u8>) {
        let raw: &str = &s.statement_text;
        let n = self.normalized(raw);
        let marker;
        let (text_form, text) = match (&n.text, self.full_text) {
            (_, true) => (TextForm::Full, raw),
            (Some(t), false) => (TextForm::Normalized, t.as_str()),
            (None, false) => {
                marker = format!(
                    "[withheld: not normalizable SQL, {} bytes]",
                    s.statement_text.len()
                );
                (TextForm::Withheld, marker.as_str())
            }
        };
        let view = StatementView {
            session_id: s.session_id,
            peer: &s.peer,
            identity: &s.identity,
            identity_class: &s.identity_class,
            upstream_user: &s.upstream_user,
            database: &s.database,
            tenant: s.tenant.as_deref(),
            protocol: s.protocol,
            kind: &s.statement_kind,
            text_form,
            text,
            fingerprint: n.fingerprint.as_deref(),
            objects: &s.objects,
            decision: s.decision,
            rule: s.rule.as_deref(),
            reason: &s.reason,
            outcome: s.outcome.as_ref(),
            rows: s.rows,
            duration_us: s.duration_us,
        };
        self.seal(at, "statement", &view, out)
    }

    /// The normalization of `raw`, from the caches when possible. Texts that
    /// differ only in integer literals (one [`Shape`]) share one entry once
    /// PostgreSQL's normalizer has been seen to replace every such literal
    /// (proven on the shape's second text: it and its probe normalize alike);
    /// statements with inlined literals then cost a lookup instead of a parse.
    fn normalized(&mut self, raw: &str) -> Arc<Normalized> {
        if let Some(n) = self.cache.get(raw) {
            return n.clone();
        }
        if let Some(shape) = Shape::of(raw).filter(|s| s.key.len() <= NORMALIZE_CACHE_MAX_TEXT)
            && let Some(n) = self.by_shape(raw, shape)
        {
            return n;
        }
        let n = Arc::new(normalize(raw));
        if raw.len() <= NORMALIZE_CACHE_MAX_TEXT {
            bounded_insert(&mut self.cache, raw.to_string(), n.clone());
        }
        n
    }

    /// `raw`'s normalization through its shape, proving the shape on its
    /// second text; `None` when `raw` must be normalized on its own (a shape
    /// that varies pays that once more on the text that disproved it).
    fn by_shape(&mut self, raw: &str, shape: Shape) -> Option<Arc<Normalized>> {
        let next = match self.shapes.get(shape.key.as_str()) {
            Some(ShapeState::Invariant(n)) => return Some(n.clone()),
            Some(ShapeState::Varies) => return None,
            Some(ShapeState::SeenOnce) => {
                let n = Arc::new(normalize(raw));
                if n.text.is_some() && normalize(&shape::probe(raw, &shape)).text == n.text {
                    ShapeState::Invariant(n)
                } else {
                    ShapeState::Varies
                }
            }
            None => ShapeState::SeenOnce,
        };
        let found = match &next {
            ShapeState::Invariant(n) => Some(n.clone()),
            _ => None,
        };
        bounded_insert(&mut self.shapes, shape.key, next);
        found
    }

    /// The record envelope: `{"seq":N,"ts":"...","prev":"...","type":"...",`
    /// + the body's members + `,"hash":"..."}` + `\n`. `body` must serialize
    ///   to a JSON object with at least one member.
    pub(crate) fn seal<T: Serialize>(
        &mut self,
        at: SystemTime,
        ty: &str,
        body: &T,
        buf: &mut Vec<u8>,
    ) {
        let seq = self.seq + 1;
        let line_start = buf.len();
        buf.extend_from_slice(b"{\"seq\":");
        let _ = write!(buf, "{seq}");
        buf.extend_from_slice(b",\"ts\":\"");
        write_rfc3339_micros(at, buf);
        buf.extend_from_slice(b"\",\"prev\":\"");
        buf.extend_from_slice(self.prev.as_bytes());
        buf.extend_from_slice(b"\",\"type\":\"");
        buf.extend_from_slice(ty.as_bytes());
        buf.push(b'"');
        let body_start = buf.len();
        if serde_json::to_writer(&mut *buf, body).is_err() || buf.len() < body_start + 3 {
            // Unreachable with the types above; keep the record (and the chain) anyway.
            buf.truncate(body_start);
            buf.extend_from_slice(b"{\"error\":\"unserializable record\"}");
        }
        // `{...}` → `,...}`: the body's members continue the envelope's object.
        buf[body_start] = b',';
        let mut hash = [0u8; 64];
        sha256_hex_into(&buf[line_start..], &mut hash);
        buf.pop();
        buf.extend_from_slice(b",\"hash\":\"");
        buf.extend_from_slice(&hash);
        buf.extend_from_slice(b"\"}\n");
        self.seq = seq;
        // Hex digits are ASCII: the conversion cannot fail.
        self.prev.clear();
        self.prev
            .push_str(std::str::from_utf8(&hash).unwrap_or(GENESIS));
    }
}
