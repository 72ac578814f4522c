//! The admin HTTP listener: `/metrics` (Prometheus text format 0.0.4),
//! `/healthz` (the process is up) and `/readyz` (upstream reachable, policy
//! loaded, audit sink writable).
//!
//! Off unless `server.admin_listen` (or `pgward serve --admin-listen`) is set;
//! bind it to loopback or a management network: it needs no credentials.
//!
//! This is deliberately a minimal HTTP/1.x responder, not a web server: one
//! request per connection (`Connection: close`), only `GET`, the request head
//! read with a size bound ([`MAX_HEAD_BYTES`]) and a time bound
//! ([`READ_TIMEOUT`]), at most [`MAX_CONNECTIONS`] connections served at once
//! (more are closed unanswered). Request bodies and headers are ignored.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditDecision;
use crate::context::ProxyContext;
use crate::metrics::{LATENCY_BUCKETS_US, Metrics};

/// Largest request head (request line and headers) read; a bigger one gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time each readiness check may take.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, unread input is drained (so that closing does not reset
/// the connection before the client has read the response) for at most this
/// long and this many bytes.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// The Prometheus text exposition content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Binds the admin listener.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Answers admin requests until `shutdown` fires. Connections being answered
/// then finish on their own (each is bounded by the timeouts above).
pub async fn serve(listener: TcpListener, ctx: Arc<ProxyContext>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("admin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin: too many connections, closing");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            handle(tcp, peer, &ctx).await;
        });
    }
}

/// An HTTP response: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: body.into(),
        }
    }

    /// The bytes on the wire (HTTP/1.1, `Connection: close`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            head.push_str("Allow: GET\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What reading the request head produced.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Method and path (query string removed).
    Request { method: String, path: String },
    /// Not a request an answer makes sense for: the status to send.
    Error(u16),
    /// The peer closed (or failed) before sending a complete head.
    Gone,
}

async fn handle(mut tcp: TcpStream, peer: SocketAddr, ctx: &ProxyContext) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut tcp)).await {
        Ok(head) => head,
        Err(_) => Head::Error(408),
    };
    let (response, head_only) = match head {
        Head::Gone => return,
        Head::Error(status) => (
            Response::text(status, format!("{}\n", reason_phrase(status))),
            false,
        ),
        Head::Request { method, path } => (route(&method, &path, ctx).await, method == "HEAD"),
    };
    tracing::debug!(%peer, status = response.status, "admin request");
    let mut bytes = response.to_bytes();
    if head_only {
        // A response to HEAD has no body (Content-Length still tells its size).
        bytes.truncate(bytes.len() - response.body.len());
    }
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        tcp.write_all(&bytes).await?;
        tcp.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    // Closing a socket with unread input resets the connection, which may
    // discard the response before the client reads it: drain a little first.
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Reads up to the end of the request head (an empty line), at most
/// [`MAX_HEAD_BYTES`].
async fn read_head(tcp: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(&buf) {
            return parse_request_line(&buf[..end]);
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Head::Error(431);
        }
        let want = chunk.len().min(MAX_HEAD_BYTES - buf.len());
        match tcp.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Offset of the end of the head (`\r\n\r\n`, or `\n\n` from lax clients).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_request_line(head: &[u8]) -> Head {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Head::Error(400);
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Error(400);
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Head::Error(400);
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Head::Request {
        method: method.to_string(),
        path: path.to_string(),
    }
}

/// The answer to `method path`.
pub async fn route(method: &str, path: &str, ctx: &ProxyContext) -> Response {
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return Response::text(404, "not found\n");
    }
    if method != "GET" {
        return Response::text(405, "method not allowed\n");
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: render_metrics(ctx),
        },
        "/healthz" => Response::text(200, "ok\n"),
        _ => {
            let checks = readiness(ctx).await;
            let ready = checks.iter().all(|c| c.ok);
            let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
            for c in &checks {
                let _ = writeln!(body, "{}: {}", c.name, c.detail);
            }
            Response::text(if ready { 200 } else { 503 }, body)
        }
    }
}

/// One readiness check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// `ok`, or why not (one line).
    pub detail: String,
}

/// Runs every readiness check (concurrently, each within
/// [`READY_CHECK_TIMEOUT`]).
pub async fn readiness(ctx: &ProxyContext) -> Vec<Check> {
    let upstream = async {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, ctx.upstream.connect()).await {
            Ok(Ok(mut stream)) => {
                // A clean close (TLS close_notify, FIN) before any startup
                // packet: PostgreSQL does not log it as an error.
                let _ = tokio::time::timeout(Duration::from_millis(200), stream.shutdown()).await;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "timed out connecting to PostgreSQL at {} after {:?}",
                ctx.upstream.addr, READY_CHECK_TIMEOUT
            )),
        }
    };
    let audit = async {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, ctx.audit.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "audit: flush did not complete within {READY_CHECK_TIMEOUT:?}"
            )),
        }
    };
    let (upstream, audit) = tokio::join!(upstream, audit);
    // The policy is loaded before the listener binds and a failed reload
    // keeps the previous one: while serving there always is one.
    let policy: Result<(), String> = {
        let _policy = ctx.policy.load();
        Ok(())
    };
    [("upstream", upstream), ("policy", policy), ("audit", audit)]
        .into_iter()
        .map(|(name, r)| match r {
            Ok(()) => Check {
                name,
                ok: true,
                detail: "ok".into(),
            },
            Err(e) => Check {
                name,
                ok: false,
                detail: one_line(&e),
            },
        })
        .collect()
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Every metric, in Prometheus text exposition format 0.0.4.
pub fn render_metrics(ctx: &ProxyContext) -> String {
    let audit = ctx.audit.stats();
    render(&ctx.metrics, audit.queued, audit.written, audit.dropped)
}

/// [`render_metrics`] from the parts (for tests).
pub fn render(m: &Metrics, audit_queued: u64, audit_written: u64, audit_dropped: u64) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

    scalar(
        o,
        "pgward_client_connections",
        "gauge",
        "Client connections open now (startup included).",
        m.client_connections.load(Ordering::Relaxed),
    );
    scalar(
        o,
        "pgward_server_connections",
        "gauge",
        "Server connections open now (one per relayed session).",
        m.server_connections.load(Ordering::Relaxed),
    );

    family(
        o,
        "pgward_sessions",
        "gauge",
        "Relayed sessions open now, by identity class.",
    );
    let mut by_class: Vec<(String, i64)> = m
        .sessions_by_class
        .iter()
        .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
        .collect();
    by_class.sort();
    for (class, n) in &by_class {
        sample(o, "pgward_sessions", &[("class", class)], n);
    }

    scalar(
        o,
        "pgward_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        load(&m.connections_accepted),
    );

    family(
        o,
        "pgward_connections_refused_total",
        "counter",
        "Client connections refused, by reason.",
    );
    let mut refused: Vec<(&str, u64)> = m
        .connections_refused
        .iter()
        .map(|e| (*e.key(), load(e.value())))
        .collect();
    refused.sort();
    for (reason, n) in &refused {
        sample(
            o,
            "pgward_connections_refused_total",
            &[("reason", reason)],
            n,
        );
    }

    scalar(
        o,
        "pgward_tls_handshake_failures_total",
        "counter",
        "Client TLS handshakes that failed.",
        load(&m.tls_handshake_failures),
    );

    family(
        o,
        "pgward_statements_total",
        "counter",
        "Statements by identity class and decision (allow, deny, monitor).",
    );
    let mut statements: Vec<(String, &str, u64)> = m
        .statements
        .iter()
        .flat_map(|e| {
            let class = e.key().clone();
            AuditDecision::ALL
                .iter()
                .zip(e.value().iter())
                .map(move |(d, n)| (class.clone(), d.as_str(), load(n)))
                .filter(|(_, _, n)| *n > 0)
                .collect::<Vec<_>>()
        })
        .collect();
    statements.sort();
    for (class, decision, n) in &statements {
        let labels = [("class", class.as_str()), ("decision", decision)];
        sample(o, "pgward_statements_total", &labels, n);
    }

    family(
        o,
        "pgward_denials_total",
        "counter",
        "Statements refused, by policy rule.",
    );
    let mut denials: Vec<(String, u64)> = m
        .denials_by_rule
        .iter()
        .map(|e| (e.key().clone(), load(e.value())))
        .collect();
    denials.sort();
    for (rule, n) in &denials {
        sample(o, "pgward_denials_total", &[("rule", rule)], n);
    }

    family(
        o,
        "pgward_statement_duration_seconds",
        "histogram",
        "Statement latency through pgward.",
    );
    let bucket = "pgward_statement_duration_seconds_bucket";
    let mut cumulative = 0u64;
    for (i, bound_us) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += load(&m.latency_buckets[i]);
        sample(o, bucket, &[("le", &seconds(*bound_us))], cumulative);
    }
    cumulative += load(&m.latency_buckets[LATENCY_BUCKETS_US.len()]);
    sample(o, bucket, &[("le", "+Inf")], cumulative);
    let sum = seconds(load(&m.latency_sum_us));
    sample(o, "pgward_statement_duration_seconds_sum", &[], sum);
    // The +Inf bucket, not latency_count: the two are read at different
    // instants, and the format requires them equal.
    sample(
        o,
        "pgward_statement_duration_seconds_count",
        &[],
        cumulative,
    );

    scalar(
        o,
        "pgward_audit_queue_depth",
        "gauge",
        "Audit events waiting to be written.",
        audit_queued,
    );
    scalar(
        o,
        "pgward_audit_records_written_total",
        "counter",
        "Audit records written to every sink.",
        audit_written,
    );
    scalar(
        o,
        "pgward_audit_records_dropped_total",
        "counter",
        "Audit events dropped because the queue was full (on_full: drop).",
        audit_dropped,
    );

    family(
        o,
        "pgward_policy_reloads_total",
        "counter",
        "Policy reloads, by result.",
    );
    let reloads = "pgward_policy_reloads_total";
    sample(o, reloads, &[("result", "ok")], load(&m.policy_reloads_ok));
    sample(
        o,
        reloads,
        &[("result", "failed")],
        load(&m.policy_reloads_failed),
    );

    scalar(
        o,
        "pgward_idle_timeouts_total",
        "counter",
        "Sessions closed for sending nothing for limits.idle_client_timeout_ms.",
        load(&m.idle_timeouts),
    );

    out
}

/// A family with one unlabelled sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(val));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Microseconds as seconds, shortest exact decimal form (`0.00025`, `10`).
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(100), "0.0001");
        assert_eq!(seconds(250), "0.00025");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(0), "0");
    }

    #[test]
    fn histogram_is_cumulative_and_counts_overflow() {
        let m = Metrics::default();
        m.statement("worker", AuditDecision::Allow, None, 50);
        m.statement("worker", AuditDecision::Deny, Some("r\"1"), 300);
        m.statement("worker", AuditDecision::Allow, None, 20_000_000);
        let text = render(&m, 0, 0, 0);
        assert!(text.contains("pgward_statement_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("pgward_statement_duration_seconds_bucket{le=\"0.0005\"} 2\n"));
        assert!(text.contains("pgward_statement_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("pgward_statement_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("pgward_statement_duration_seconds_count 3\n"));
        assert!(text.contains("pgward_statement_duration_seconds_sum 20.00035\n"));
        assert!(text.contains("pgward_denials_total{rule=\"r\\\"1\"} 1\n"));
        assert!(text.contains("pgward_statements_total{class=\"worker\",decision=\"allow\"} 2\n"));
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n"),
            Head::Request {
                method: "GET".into(),
                path: "/metrics".into()
            }
        );
        assert_eq!(parse_request_line(b"GET /metrics\r\n"), Head::Error(400));
        assert_eq!(
            parse_request_line(b"GET metrics HTTP/1.0\r\n"),
            Head::Error(400)
        );
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
    }
}
