//! The admin HTTP listener (`--admin-listen`): /healthz, /readyz, /metrics,
//! and how it treats requests it does not serve, spoken to over raw TCP.

mod support;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// Longest any admin exchange may take in these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Every metric family /metrics must declare.
const FAMILIES: &[&str] = &[
    "pgward_client_connections",
    "pgward_server_connections",
    "pgward_connections_accepted_total",
    "pgward_connections_refused_total",
    "pgward_tls_handshake_failures_total",
    "pgward_statements_total",
    "pgward_denials_total",
    "pgward_statement_duration_seconds",
    "pgward_audit_queue_depth",
    "pgward_audit_records_written_total",
    "pgward_audit_records_dropped_total",
    "pgward_policy_reloads_total",
    "pgward_idle_timeouts_total",
];

fn shipped_policy() -> String {
    std::fs::read_to_string(repo_path("policy.yaml")).unwrap()
}

struct Admin {
    proxy: ProxyProcess,
    addr: SocketAddr,
}

/// pgward in front of `upstream` with the shipped policy and an admin listener.
fn start(upstream: &str) -> Admin {
    let port = free_port();
    let proxy = ProxyProcess::builder(upstream)
        .policy(&shipped_policy())
        .arg("--admin-listen")
        .arg(&format!("{HOST}:{port}"))
        .start();
    assert!(
        proxy.wait_for_log("admin listener", IO_TIMEOUT),
        "no admin listener in the log:\n{}",
        proxy.log()
    );
    Admin {
        proxy,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to the admin listener {addr}: {e}"));
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp
}

/// Sends `request` as is and reads the whole response (the server closes).
fn exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut tcp = connect(addr);
    tcp.write_all(request).expect("cannot send the request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .expect("reading the response (the server must close after it)");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8(raw.to_vec()).expect("response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert!(
        parts.next().unwrap().starts_with("HTTP/1."),
        "status line {status_line:?}"
    );
    let status = parts.next().unwrap().parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let response = HttpResponse {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(len) = response.header("Content-Length") {
        assert_eq!(len.parse::<usize>().unwrap(), response.body.len());
    }
    response
}

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    exchange(
        addr,
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// Blocking HTTP off the runtime's worker threads.
async fn get_async(addr: SocketAddr, path: &str) -> HttpResponse {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || get(addr, &path))
        .await
        .unwrap()
}

/// One sample line: name, labels (unescaped), value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the exposition text strictly: every line is a `# HELP`/`# TYPE`
/// comment or `name{labels} value` with a float value.
fn parse_metrics(text: &str) -> (BTreeSet<String>, Vec<Sample>) {
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("line {n}: {line:?}"));
            assert!(valid_name(name), "line {n}: bad name in {line:?}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "line {n}: type {t:?}"
                    );
                    assert!(families.insert(name.to_string()), "line {n}: {name} twice");
                }
                _ => panic!("line {n}: unexpected comment {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "line {n}: {line:?}");
        let sample = parse_sample(line).unwrap_or_else(|e| panic!("line {n}: {e}: {line:?}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| sample.name.strip_suffix(s))
            .filter(|f| families.contains(*f))
            .unwrap_or(&sample.name);
        assert!(
            families.contains(family),
            "line {n}: sample {} has no # TYPE before it",
            sample.name
        );
        samples.push(sample);
    }
    (families, samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value after the name")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut chars = line[name_end..].chars();
    let mut labels = Vec::new();
    let mut next = chars.next();
    if next == Some('{') {
        next = chars.next();
        while next != Some('}') {
            let mut key = String::new();
            while let Some(c) = next.filter(|&c| c != '=') {
                key.push(c);
                next = chars.next();
            }
            if next != Some('=') || !valid_name(&key) || key.contains(':') {
                return Err(format!("bad label name {key:?}"));
            }
            if chars.next() != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")? {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")? {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            next = chars.next();
            match next {
                Some(',') => next = chars.next(),
                Some('}') => {}
                other => return Err(format!("unexpected {other:?} after a label")),
            }
        }
        next = chars.next();
    }
    if next != Some(' ') {
        return Err("no space before the value".into());
    }
    let rest: String = chars.collect();
    let value = rest.split(' ').next().unwrap(); // an optional timestamp may follow
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn sum_of(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filter
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_against_a_live_upstream() {
    let pg = PgCluster::shared();
    let admin = start(&pg.upstream());
    let addr = admin.addr;

    let health = get_async(addr, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok\n");

    let ready = get_async(addr, "/readyz").await;
    assert_eq!(
        ready.status,
        200,
        "readyz: {}\n{}",
        ready.body,
        admin.proxy.log()
    );
    assert!(ready.body.starts_with("ready\n"), "{}", ready.body);

    let metrics = get_async(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "content type {:?}",
        metrics.header("Content-Type")
    );
    let (families, samples) = parse_metrics(&metrics.body);
    for f in FAMILIES {
        assert!(families.contains(*f), "no {f} in\n{}", metrics.body);
    }
    // The histogram is complete even before any statement.
    let inf = samples
        .iter()
        .find(|s| {
            s.name == "pgward_statement_duration_seconds_bucket"
                && s.labels == [("le".to_string(), "+Inf".to_string())]
        })
        .expect("+Inf bucket");
    assert_eq!(
        inf.value,
        sum_of(&samples, "pgward_statement_duration_seconds_count", &[])
    );
    for result in ["ok", "failed"] {
        assert!(
            samples
                .iter()
                .any(|s| s.name == "pgward_policy_reloads_total"
                    && s.labels == [("result".to_string(), result.to_string())]),
            "no policy_reloads_total{{result={result:?}}}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_denials_are_counted() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("admin_metrics");
    let admin = start(&pg.upstream());
    let worker = connect_with_options(
        HOST,
        admin.proxy.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=acme",
    )
    .await;
    worker.simple_query("SELECT 1").await.unwrap();
    worker
        .query("SELECT count(*) FROM public.judgments", &[])
        .await
        .unwrap();
    let refused = worker
        .simple_query("DELETE FROM ops.job_queue")
        .await
        .expect_err("the worker may not write ops");
    assert_eq!(
        sqlstate(&refused),
        Some("42501"),
        "{}",
        describe_error(&refused)
    );
    worker.simple_query("SELECT 2").await.unwrap();

    let metrics = get_async(admin.addr, "/metrics").await;
    let (_, samples) = parse_metrics(&metrics.body);
    let statements = sum_of(&samples, "pgward_statements_total", &[]);
    let denials = sum_of(
        &samples,
        "pgward_denials_total",
        &[("rule", "protected-schemas")],
    );
    let denied = sum_of(&samples, "pgward_statements_total", &[("decision", "deny")]);
    assert!(
        statements >= 4.0,
        "statements_total = {statements}\n{}",
        metrics.body
    );
    assert!(denied >= 1.0, "no deny decision counted\n{}", metrics.body);
    assert!(
        denials >= 1.0,
        "denials_total{{rule=\"protected-schemas\"}} = {denials}\n{}",
        metrics.body
    );
    assert!(sum_of(&samples, "pgward_statement_duration_seconds_count", &[]) >= 1.0);
    assert!(sum_of(&samples, "pgward_client_connections", &[]) >= 1.0);
    assert!(sum_of(&samples, "pgward_connections_accepted_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_upstream_is_unreachable() {
    let nobody = format!("{HOST}:{}", free_port());
    let admin = start(&nobody);
    let started = Instant::now();
    let ready = get_async(admin.addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.starts_with("not ready\n"), "{}", ready.body);
    let upstream_line = ready
        .body
        .lines()
        .find(|l| l.starts_with("upstream: "))
        .unwrap_or_else(|| panic!("no upstream line in {:?}", ready.body));
    assert_ne!(upstream_line, "upstream: ok");
    assert!(ready.body.contains("policy: ok\n"), "{}", ready.body);
    assert!(ready.body.contains("audit: ok\n"), "{}", ready.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "readyz took {:?}",
        started.elapsed()
    );
    // The process itself is fine.
    assert_eq!(get_async(admin.addr, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_it_does_not_serve() {
    let nobody = format!("{HOST}:{}", free_port());
    let admin = start(&nobody);
    let addr = admin.addr;
    tokio::task::spawn_blocking(move || {
        assert_eq!(get(addr, "/nope").status, 404);
        assert_eq!(get(addr, "/metrics/x").status, 404);
        assert_eq!(get(addr, "/healthz?verbose=1").status, 200);
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(post.status, 405);
        assert_eq!(post.header("Allow"), Some("GET"));
        assert_eq!(exchange(addr, b"garbage\r\n\r\n").status, 400);

        // A 100 KB request line: 431 or a closed connection, never a hang.
        let started = Instant::now();
        let mut tcp = connect(addr);
        let mut request = b"GET /".to_vec();
        request.extend(std::iter::repeat_n(b'a', 100 * 1024));
        request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = tcp.write_all(&request); // the server may close mid-way
        let mut raw = Vec::new();
        match tcp.read_to_end(&mut raw) {
            Ok(_) if raw.is_empty() => {}
            Ok(_) => assert_eq!(parse_response(&raw).status, 431),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "the server hung on a huge request line: {e}"
            ),
        }
        assert!(started.elapsed() < IO_TIMEOUT);

        // A client that never finishes its request does not block others.
        let mut slow = connect(addr);
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        assert_eq!(get(addr, "/healthz").status, 200);
        let mut raw = Vec::new();
        let _ = slow.read_to_end(&mut raw);
        if !raw.is_empty() {
            assert_eq!(parse_response(&raw).status, 408);
        }
    })
    .await
    .unwrap();
    // Still serving.
    assert_eq!(get_async(addr, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_stops_with_the_proxy() {
    let nobody = format!("{HOST}:{}", free_port());
    let mut admin = start(&nobody);
    assert_eq!(get_async(admin.addr, "/healthz").await.status, 200);
    let status = admin
        .proxy
        .terminate_and_wait_async(Duration::from_secs(10))
        .await;
    assert!(status.success(), "{status}\n{}", admin.proxy.log());
    assert!(TcpStream::connect_timeout(&admin.addr, Duration::from_secs(1)).is_err());
}
