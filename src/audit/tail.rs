//! `pgward audit tail`: records in a readable one-line form.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use serde_json::{Map, Value};

/// Which records to print.
#[derive(Debug, Clone, Default)]
pub struct TailFilter {
    /// Only refusals: statements denied (or that monitor mode would have
    /// denied), failed authentications, startup refusals.
    pub denied: bool,
    /// Only records of this identity (session records — connect, disconnect —
    /// are matched through the session's auth record).
    pub identity: Option<String>,
    /// Only records of this tenant (matched like `identity`).
    pub tenant: Option<String>,
    /// Only the last N matching records.
    pub last: Option<usize>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TailSummary {
    pub printed: u64,
    /// Lines that are not JSON records (a torn final line, damage): reported on stderr.
    pub unreadable: u64,
}

fn s<'a>(r: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    r.get(k).and_then(Value::as_str)
}
fn n(r: &Map<String, Value>, k: &str) -> Option<u64> {
    r.get(k).and_then(Value::as_u64)
}

/// Whitespace runs → one space; at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    let mut count = 0;
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

fn who(identity: Option<&str>, class: Option<&str>, tenant: Option<&str>) -> String {
    let mut w = identity.unwrap_or("?").to_string();
    if let Some(c) = class {
        let _ = write!(w, "[{c}]");
    }
    if let Some(t) = tenant {
        let _ = write!(w, " tenant={t}");
    }
    w
}

fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

/// One record as one line: time, who, decision, kind, objects, text, outcome.
pub fn format_record(r: &Map<String, Value>) -> String {
    let ts = s(r, "ts").unwrap_or("?");
    let seq = n(r, "seq").unwrap_or(0);
    let sid = n(r, "session_id")
        .map(|v| format!("s{v}"))
        .unwrap_or_default();
    let mut line = format!("{ts} #{seq} ");
    match s(r, "type").unwrap_or("?") {
        "statement" => {
            let decision = match s(r, "decision") {
                Some("allow") => "ALLOW",
                Some("deny") => "DENY",
                Some("monitor") => "WOULD-DENY",
                _ => "?",
            };
            let objects: Vec<String> = r
                .get("objects")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|o| {
                            let action = o.get("action").and_then(Value::as_str).unwrap_or("?");
                            let name = o.get("name").and_then(Value::as_str).unwrap_or("?");
                            match o.get("schema").and_then(Value::as_str) {
                                Some(schema) => format!("{action}:{schema}.{name}"),
                                None => format!("{action}:{name}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let outcome = match r.get("outcome") {
                Some(Value::Object(o)) => match (o.get("tag"), o.get("sqlstate")) {
                    (Some(Value::String(t)), _) => t.clone(),
                    (_, Some(Value::String(code))) => format!("ERROR {code}"),
                    _ => "?".into(),
                },
                _ => "-".into(),
            };
            let _ = write!(
                line,
                "{sid} {} {decision} {}",
                who(s(r, "identity"), s(r, "identity_class"), s(r, "tenant")),
                s(r, "kind").unwrap_or("?"),
            );
            if !objects.is_empty() {
                let _ = write!(line, " [{}]", objects.join(", "));
            }
            let _ = write!(
                line,
                " \"{}\" => {outcome}",
                one_line(s(r, "text").unwrap_or(""), 300)
            );
            if let Some(rows) = n(r, "rows") {
                let _ = write!(line, " rows={rows}");
            }
            if let Some(us) = n(r, "duration_us") {
                let _ = write!(line, " {}", micros(us));
            }
            if decision != "ALLOW" {
                let _ = write!(
                    line,
                    " (rule {}: {})",
                    s(r, "rule").unwrap_or("?"),
                    one_line(s(r, "reason").unwrap_or(""), 300)
                );
            }
        }
        "connect" => {
            let _ = write!(line, "{sid} CONNECT peer={}", s(r, "peer").unwrap_or("?"));
            match s(r, "tls_version") {
                Some(v) => {
                    let _ = write!(line, " tls={v}");
                }
                None => line.push_str(" plaintext"),
            }
            if let Some(c) = s(r, "cert_subject") {
                let _ = write!(line, " cert=\"{c}\"");
            }
            if let Some(f) = s(r, "cert_fingerprint") {
                let _ = write!(line, " sha256={f}");
            }
        }
        "auth" => {
            let ok = r.get("ok").and_then(Value::as_bool).unwrap_or(false);
            let _ = write!(
                line,
                "{sid} {} AUTH {} db={}",
                who(s(r, "identity"), s(r, "identity_class"), s(r, "tenant")),
                if ok { "ok" } else { "FAILED" },
                s(r, "database").unwrap_or("?")
            );
            if let Some(u) = s(r, "upstream_user") {
                let _ = write!(line, " upstream={u}");
            }
            if let Some(m) = s(r, "method") {
                let _ = write!(line, " method={m}");
            }
            if let Some(e) = s(r, "error") {
                let _ = write!(line, ": {}", one_line(e, 300));
            }
        }
        "disconnect" => {
            let _ = write!(
                line,
                "{sid} DISCONNECT statements={} denied={} would-deny={} after {}",
                n(r, "statements").unwrap_or(0),
                n(r, "denied").unwrap_or(0),
                n(r, "monitored").unwrap_or(0),
                micros(n(r, "duration_us").unwrap_or(0))
            );
            if let Some(reason) = s(r, "reason") {
                let _ = write!(line, ": {}", one_line(reason, 300));
            }
        }
        "startup_refused" => {
            let _ = write!(
                line,
                "{sid} {} REFUSED at startup peer={} db={} {}: {}",
                s(r, "identity").unwrap_or("?"),
                s(r, "peer").unwrap_or("?"),
                s(r, "database").unwrap_or("?"),
                s(r, "sqlstate").unwrap_or("?"),
                one_line(s(r, "reason").unwrap_or(""), 300)
            );
        }
        "policy_reload" => {
            let ok = r.get("ok").and_then(Value::as_bool).unwrap_or(false);
            let _ = write!(
                line,
                "POLICY RELOAD {}",
                if ok { "applied" } else { "REJECTED" }
            );
            if let Some(src) = s(r, "source") {
                let _ = write!(line, " ({src})");
            }
            if let Some(h) = s(r, "policy_sha256") {
                let _ = write!(line, " sha256={h}");
            }
            if let Some(e) = s(r, "error") {
                let _ = write!(line, ": {}", one_line(e, 300));
            }
        }
        "gap" => {
            let _ = write!(
                line,
                "GAP: {} event(s) dropped (audit queue full)",
                n(r, "dropped").unwrap_or(0)
            );
        }
        "torn_tail" => {
            let _ = write!(
                line,
                "RECOVERY: cut a torn final line of {} bytes from {} after a crash",
                n(r, "bytes").unwrap_or(0),
                s(r, "file").unwrap_or("?")
            );
        }
        other => {
            let _ = write!(line, "{other}");
        }
    }
    line
}

/// What the filter needs to know about a session, from its `auth` record.
#[derive(Default)]
struct SessionInfo {
    identity: Option<String>,
    tenant: Option<String>,
}

fn is_refusal(r: &Map<String, Value>) -> bool {
    match s(r, "type") {
        Some("statement") => matches!(s(r, "decision"), Some("deny") | Some("monitor")),
        Some("auth") => r.get("ok").and_then(Value::as_bool) == Some(false),
        Some("startup_refused") => true,
        _ => false,
    }
}

fn matches(r: &Map<String, Value>, f: &TailFilter, sessions: &HashMap<u64, SessionInfo>) -> bool {
    if f.denied && !is_refusal(r) {
        return false;
    }
    let session = n(r, "session_id").and_then(|id| sessions.get(&id));
    let field = |key: &str| -> Option<String> {
        s(r, key).map(str::to_string).or_else(|| {
            session.and_then(|si| match key {
                "identity" => si.identity.clone(),
                _ => si.tenant.clone(),
            })
        })
    };
    if let Some(want) = &f.identity
        && field("identity").as_deref() != Some(want)
    {
        return false;
    }
    if let Some(want) = &f.tenant
        && field("tenant").as_deref() != Some(want)
    {
        return false;
    }
    true
}

/// Prints the records of `path` that pass `filter` to `out`; unreadable lines
/// are noted on `err`.
pub fn tail(
    path: &Path,
    filter: &TailFilter,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<TailSummary> {
    let reader = BufReader::new(File::open(path)?);
    let mut summary = TailSummary::default();
    let mut sessions: HashMap<u64, SessionInfo> = HashMap::new();
    let mut kept: VecDeque<String> = VecDeque::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let record = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(m)) => m,
            _ => {
                summary.unreadable += 1;
                writeln!(
                    err,
                    "{}:{}: not a record (torn or damaged line), skipped",
                    path.display(),
                    i + 1
                )?;
                continue;
            }
        };
        if s(&record, "type") == Some("auth")
            && let Some(id) = n(&record, "session_id")
        {
            sessions.insert(
                id,
                SessionInfo {
                    identity: s(&record, "identity").map(str::to_string),
                    tenant: s(&record, "tenant").map(str::to_string),
                },
            );
        }
        if !matches(&record, filter, &sessions) {
            continue;
        }
        let text = format_record(&record);
        match filter.last {
            Some(max) => {
                if max == 0 {
                    continue;
                }
                if kept.len() == max {
                    kept.pop_front();
                }
                kept.push_back(text);
            }
            None => {
                writeln!(out, "{text}")?;
                summary.printed += 1;
            }
        }
        if s(&record, "type") == Some("disconnect")
            && let Some(id) = n(&record, "session_id")
        {
            sessions.remove(&id);
        }
    }
    for text in kept {
        writeln!(out, "{text}")?;
        summary.printed += 1;
    }
    Ok(summary)
}
