//! Issue #6: reliability with a real server and real clients.
//!
//! - A thousand idle authenticated sessions cost pgward little memory each,
//!   the next client is refused with 53300, and pgward keeps serving.
//! - PostgreSQL restarting under load: clients get errors (never hangs),
//!   pgward survives, new sessions work once the server is back, and the
//!   audit chain is intact with every statement a client saw succeed.
//! - Silent and garbage-sending connections are closed by
//!   `limits.startup_timeout_ms` and leave nothing behind.
//!
//! The tests run one at a time (they load the two CI cores heavily and
//! measure memory and latency), and every wait is bounded.
//! Run with `--nocapture` to see the measurements.

mod support;

use std::future::IntoFuture;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;

use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The tests of this file run one at a time: each wants the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// policy.yaml: `limits` is a YAML fragment placed after `limits:`, and
/// every identity falls into one unrestricted class.
fn open_policy(limits: &str) -> String {
    format!(
        "limits:{limits}\nidentities:\n  default_class: open\n  classes:\n    open:\n      restricted: false\n"
    )
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<F: IntoFuture>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no outcome within {limit:?}"),
    }
}

/// A value from `/proc/<pid>/status` in kB (e.g. "VmRSS", "VmHWM").
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS").expect("pgward's VmRSS")
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `pgward audit verify FILE`: exit code and output.
fn verify_audit(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .expect("cannot run pgward audit verify");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether this pgward build has the admin HTTP listener (`/metrics`).
fn admin_supported() -> bool {
    Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["serve", "--help"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("--admin-listen"))
        .unwrap_or(false)
}

/// `GET path` on the admin listener; the body, or None on any failure.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let fetch = async {
        let mut tcp = TcpStream::connect((HOST, port)).await.ok()?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

/// An unlabelled sample of the Prometheus text `body`.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The soft limit on open files of this process (pgward inherits it).
fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// A session through pgward as `trust_user` (no password: cheap to open).
async fn trust_session(port: u16) -> Result<Client, String> {
    match tokio::time::timeout(
        Duration::from_secs(30),
        try_connect(HOST, port, TRUST_USER, "", "postgres"),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "{} (SQLSTATE {:?})",
            describe_error(&e),
            sqlstate(&e)
        )),
        Err(_) => Err("connect timed out after 30 s".to_string()),
    }
}

// ---------------------------------------------------------------------------
// 1. A thousand idle sessions
// ---------------------------------------------------------------------------

/// 1,000 authenticated idle sessions through pgward (one server connection
/// each, hence a private cluster with max_connections = 1100): pgward's RSS
/// grows by well under 256 KiB per session (target: 64 KiB), the 1,001st
/// client is refused with 53300, and the held sessions and new ones (once a
/// slot is free) keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_clients_with_bounded_memory() {
    const WANTED: usize = 1000;
    const MAX_BYTES_PER_CONNECTION: u64 = 256 * 1024;
    const CONNECT_CONCURRENCY: usize = 16;
    let _serial = SERIAL.lock().await;
    let test_started = Instant::now();
    // pgward needs two descriptors per session (client and server side) and
    // inherits our limit; we need one per session.
    let fd_limit = open_files_limit().unwrap_or(u64::MAX);
    let n = WANTED.min(usize::try_from(fd_limit.saturating_sub(100) / 2).unwrap_or(WANTED));
    if n < WANTED {
        println!(
            "reliability: open files limit {fd_limit}: testing {n} idle sessions instead of {WANTED}"
        );
    }
    assert!(
        n >= 100,
        "open files limit {fd_limit} is too low for this test"
    );

    let pg = PgCluster::start_with(&PgOptions {
        extra_conf: vec![
            "max_connections = 1100".into(),
            "shared_buffers = 16MB".into(),
            // 1,000 "connection authorized" lines are noise.
            "log_connections = off".into(),
        ],
        ..Default::default()
    });
    let proxy = ProxyProcess::builder(&pg.upstream())
        .policy(&open_policy(&format!("\n  max_client_connections: {n}")))
        // 2,000 session start/end lines are noise too.
        .env("RUST_LOG", "warn")
        .start();
    let pid = proxy.pid();
    let port = proxy.port();

    // Warm up: runtime threads, allocator arenas, audit writer, policy.
    for _ in 0..3 {
        let warm: Vec<Client> = futures::stream::iter(0..CONNECT_CONCURRENCY)
            .map(|_| trust_session(port))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .map(|r| r.unwrap_or_else(|e| panic!("warm-up session: {e}")))
            .collect()
            .await;
        for c in &warm {
            within(
                Duration::from_secs(30),
                "warm-up query",
                c.simple_query("SELECT 1"),
            )
            .await
            .unwrap();
        }
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline_kb = rss_kb(pid);
    let baseline_fds = fd_count(pid);

    // n sessions, CONNECT_CONCURRENCY handshakes at a time.
    let connect_started = Instant::now();
    let results: Vec<Result<Client, String>> = within(
        Duration::from_secs(300),
        "opening the sessions",
        futures::stream::iter(0..n)
            .map(|_| trust_session(port))
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect::<Vec<_>>(),
    )
    .await;
    let connect_time = connect_started.elapsed();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} sessions failed to open; first: {}",
        failures.len(),
        failures[0]
    );
    let mut clients: Vec<Client> = results.into_iter().map(Result::unwrap).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected_kb = rss_kb(pid);
    let connected_fds = fd_count(pid);

    // One statement each, as real (idle) sessions have run some.
    within(
        Duration::from_secs(120),
        "a query on every session",
        futures::stream::iter(clients.iter()).for_each_concurrent(32, |c| async move {
            c.simple_query("SELECT 1").await.unwrap();
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kb = rss_kb(pid);
    let hwm_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);

    let per_conn_connected = connected_kb.saturating_sub(baseline_kb) * 1024 / n as u64;
    let per_conn_idle = idle_kb.saturating_sub(baseline_kb) * 1024 / n as u64;
    println!(
        "reliability: {n} idle sessions opened in {connect_time:.2?}; pgward RSS baseline \
         {baseline_kb} kB, after connect {connected_kb} kB ({per_conn_connected} B/session), \
         after one query each {idle_kb} kB ({per_conn_idle} B/session), VmHWM {hwm_kb} kB; \
         fds {baseline_fds} -> {connected_fds}"
    );
    assert!(
        per_conn_idle < MAX_BYTES_PER_CONNECTION && per_conn_connected < MAX_BYTES_PER_CONNECTION,
        "pgward uses too much memory per idle session: {per_conn_connected} B after connect, \
         {per_conn_idle} B after a query (bound {MAX_BYTES_PER_CONNECTION} B)"
    );

    // The next client (the 1,001st) is refused like PostgreSQL refuses one
    // over max_connections.
    let err = within(
        Duration::from_secs(30),
        "the connect over the limit",
        try_connect(HOST, port, TRUST_USER, "", "postgres"),
    )
    .await
    .map(|_| ())
    .expect_err("the client over max_client_connections must be refused");
    assert_eq!(sqlstate(&err), Some("53300"), "{}", describe_error(&err));

    // pgward keeps serving: every held session answers...
    within(
        Duration::from_secs(120),
        "a query on every session after the refusal",
        futures::stream::iter(clients.iter()).for_each_concurrent(32, |c| async move {
            c.simple_query("SELECT 2").await.unwrap();
        }),
    )
    .await;
    // ...and once some leave, newcomers get in.
    clients.truncate(n - 10);
    let deadline = Instant::now() + Duration::from_secs(15);
    let newcomer = loop {
        match trust_session(port).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no new session within 15 s of freeing 10 slots: {e}"),
        }
    };
    within(
        Duration::from_secs(30),
        "a newcomer's query",
        newcomer.simple_query("SELECT 3"),
    )
    .await
    .unwrap();
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "pgward must still run"
    );
    drop(newcomer);
    drop(clients);
    println!(
        "reliability: thousand_idle_clients_with_bounded_memory took {:.2?}",
        test_started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 2. PostgreSQL restarts under load
// ---------------------------------------------------------------------------

/// What one client task saw.
#[derive(Debug, Default)]
struct LoadStats {
    /// Successful queries: before the stop, from the stop until the server
    /// is back (some before it actually went down), after.
    ok: [u64; 3],
    /// Queries that failed on an established session.
    query_errors: u64,
    /// Connection attempts that failed.
    connect_errors: u64,
    /// Operations that produced no outcome within the bound (hangs).
    timeouts: u64,
    /// A few of the error messages, for the report.
    samples: Vec<String>,
}

impl LoadStats {
    fn total_ok(&self) -> u64 {
        self.ok.iter().sum()
    }

    fn note(&mut self, message: String) {
        if self.samples.len() < 3 && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }
}

const PHASE_BEFORE: u8 = 0;
const PHASE_DOWN: u8 = 1;
const PHASE_AFTER: u8 = 2;

/// Runs `SELECT 1 AS reliability_t<task>_ok` in a loop, reconnecting after
/// errors, until `stop`; counts its successes in `progress[task]` too.
async fn load_task(
    task: usize,
    port: u16,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    progress: Arc<Vec<AtomicU64>>,
) -> LoadStats {
    const OP_TIMEOUT: Duration = Duration::from_secs(10);
    let sql = format!("SELECT 1 AS reliability_t{task}_ok");
    let mut stats = LoadStats::default();
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let session = match &client {
            Some(c) => c,
            None => {
                match tokio::time::timeout(
                    OP_TIMEOUT,
                    try_connect(HOST, port, TRUST_USER, "", "postgres"),
                )
                .await
                {
                    Ok(Ok(c)) => client.insert(c),
                    Ok(Err(e)) => {
                        stats.connect_errors += 1;
                        stats.note(format!("connect: {}", describe_error(&e)));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(_) => {
                        stats.timeouts += 1;
                        stats.note("connect timed out".to_string());
                        continue;
                    }
                }
            }
        };
        // The phase when the query started: a success is counted there.
        let started_in = phase.load(Ordering::SeqCst);
        match tokio::time::timeout(OP_TIMEOUT, session.simple_query(&sql)).await {
            Ok(Ok(_)) => {
                stats.ok[usize::from(started_in)] += 1;
                progress[task].fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                stats.query_errors += 1;
                stats.note(format!(
                    "query: {} (SQLSTATE {:?})",
                    describe_error(&e),
                    sqlstate(&e)
                ));
                client = None;
            }
            Err(_) => {
                stats.timeouts += 1;
                stats.note("query timed out".to_string());
                client = None;
            }
        }
    }
    stats
}

/// Four clients run short queries in a loop while PostgreSQL is stopped
/// (`pg_ctl stop -m fast`) for a second and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_mid_load() {
    const TASKS: usize = 4;
    let _serial = SERIAL.lock().await;
    let test_started = Instant::now();
    let pg = PgCluster::start();
    let mut proxy = ProxyProcess::builder(&pg.upstream())
        .policy(&open_policy(" {}"))
        .start();
    let port = proxy.port();

    let phase = Arc::new(AtomicU8::new(PHASE_BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..TASKS).map(|_| AtomicU64::new(0)).collect());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(load_task(
                task,
                port,
                phase.clone(),
                stop.clone(),
                progress.clone(),
            ))
        })
        .collect();
    // Waits (up to `limit`) until every task has `more` successes past `from`.
    let all_progressed = |from: Vec<u64>, more: u64, limit: Duration| {
        let progress = progress.clone();
        async move {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline
                && progress
                    .iter()
                    .zip(&from)
                    .any(|(done, from)| done.load(Ordering::Relaxed) < from + more)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let snapshot = || -> Vec<u64> { progress.iter().map(|p| p.load(Ordering::Relaxed)).collect() };

    // Load for a second (and until every task is running), then a second of
    // downtime.
    tokio::time::sleep(Duration::from_secs(1)).await;
    all_progressed(vec![0; TASKS], 20, Duration::from_secs(30)).await;
    let stop_started = Instant::now();
    phase.store(PHASE_DOWN, Ordering::SeqCst);
    // Blocking pg_ctl calls; the other worker thread keeps the clients going.
    tokio::task::block_in_place(|| pg.stop_fast());
    let stop_time = stop_started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_started = Instant::now();
    tokio::task::block_in_place(|| pg.start_again());
    let start_time = start_started.elapsed();
    phase.store(PHASE_AFTER, Ordering::SeqCst);
    let at_restart = snapshot();
    let back_at = Instant::now();

    // A brand-new session through pgward works once PostgreSQL is back.
    let deadline = Instant::now() + Duration::from_secs(15);
    let fresh = loop {
        let attempt = async {
            let c = trust_session(port).await?;
            c.simple_query("SELECT 1")
                .await
                .map_err(|e| describe_error(&e))?;
            Ok::<_, String>(c)
        };
        match tokio::time::timeout(Duration::from_secs(15), attempt).await {
            Ok(Ok(c)) => break c,
            outcome if Instant::now() >= deadline => {
                panic!("no working session within 15 s of the restart: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let recovered_in = back_at.elapsed();
    drop(fresh);

    // Let the load tasks recover too, then stop them.
    all_progressed(at_restart, 50, Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let mut stats = Vec::new();
    for task in tasks {
        stats.push(
            within(Duration::from_secs(30), "a load task to finish", task)
                .await
                .expect("load task panicked"),
        );
    }
    for (task, s) in stats.iter().enumerate() {
        println!(
            "reliability: task {task}: ok before/down/after {:?}, query errors {}, connect \
             errors {}, timeouts {}; e.g. {:?}",
            s.ok, s.query_errors, s.connect_errors, s.timeouts, s.samples
        );
    }
    println!(
        "reliability: pg_ctl stop took {stop_time:.2?}, start {start_time:.2?}; a new session \
         worked {recovered_in:.2?} after PostgreSQL was back"
    );

    // pgward survived.
    assert!(
        proxy.poll_exit().is_none(),
        "pgward exited during the restart\n{}",
        proxy.log()
    );
    for (task, s) in stats.iter().enumerate() {
        assert_eq!(s.timeouts, 0, "task {task} hung: {s:?}");
        assert!(
            s.ok[0] > 0,
            "task {task} did no work before the restart: {s:?}"
        );
        assert!(
            s.query_errors + s.connect_errors > 0,
            "task {task} never noticed PostgreSQL was down: {s:?}"
        );
        assert!(s.ok[2] > 0, "task {task} never recovered: {s:?}");
    }
    assert!(
        stats.iter().any(|s| s.query_errors > 0),
        "sessions open when PostgreSQL stopped must get errors: {stats:?}"
    );

    // Every statement a client saw succeed is in the audit trail.
    let count_ok = |records: &[Value], task: usize| {
        let alias = format!("reliability_t{task}_ok");
        records
            .iter()
            .filter(|r| {
                r["type"] == "statement"
                    && r["outcome"]["tag"] == "SELECT 1"
                    && r["text"].as_str().is_some_and(|t| t.contains(&alias))
            })
            .count() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let records = loop {
        let records = proxy.audit_records();
        let complete = stats
            .iter()
            .enumerate()
            .all(|(task, s)| count_ok(&records, task) >= s.total_ok());
        if complete || Instant::now() >= deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (task, s) in stats.iter().enumerate() {
        let recorded = count_ok(&records, task);
        println!(
            "reliability: task {task}: {} successes seen by the client, {recorded} recorded",
            s.total_ok()
        );
        assert!(
            recorded >= s.total_ok(),
            "task {task}: {} statements succeeded but only {recorded} were audited",
            s.total_ok()
        );
    }
    let gaps: Vec<&Value> = records.iter().filter(|r| r["type"] == "gap").collect();
    assert!(gaps.is_empty(), "audit records were dropped: {gaps:?}");

    // Graceful exit, then the whole chain verifies.
    let status = proxy
        .terminate_and_wait_async(Duration::from_secs(15))
        .await;
    assert!(status.success(), "pgward exited with {status}");
    let (code, out) = verify_audit(&proxy.audit_path());
    assert_eq!(code, Some(0), "pgward audit verify: {out}");
    println!(
        "reliability: upstream_restart_mid_load took {:.2?}",
        test_started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 3. Silent and garbage connections
// ---------------------------------------------------------------------------

/// What each kind of bad client sends after connecting.
fn bad_client_bytes(kind: usize) -> &'static [u8] {
    match kind % 4 {
        // Connects and says nothing.
        0 => b"",
        // Slowloris: a startup packet announcing 100 bytes, then stalling.
        1 => &[0, 0, 0, 100, 0, 3, 0, 0],
        // A single byte of a length.
        2 => &[0],
        // Not PostgreSQL at all.
        _ => b"GET / HTTP/1.1\r\nHost: x\r\n",
    }
}

/// Connects, sends the kind's bytes, and reads until pgward closes the
/// connection: the time that took, or None if it stayed open for `limit`.
async fn bad_client(port: u16, kind: usize, limit: Duration) -> Option<Duration> {
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect((HOST, port)))
        .await
        .expect("connect timed out")
        .expect("cannot connect to pgward");
    let opened = Instant::now();
    let bytes = bad_client_bytes(kind);
    if !bytes.is_empty() {
        let _ = tcp.write_all(bytes).await;
    }
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| opened.elapsed())
}

/// With `limits.startup_timeout_ms: 500`, 200 connections that send nothing,
/// half a startup packet or garbage are all closed promptly; the connection
/// gauge returns to the real sessions, memory does not stay grown, and a
/// normal client (and one already connected) is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_slowloris_do_not_hold_resources() {
    const BAD: usize = 200;
    /// Well under the default startup timeout (10 s): only the configured
    /// 500 ms can have closed them in time.
    const CLOSE_LIMIT: Duration = Duration::from_secs(6);
    const MAX_RSS_GROWTH_KB: u64 = 16 * 1024;
    let _serial = SERIAL.lock().await;
    let test_started = Instant::now();
    let pg = PgCluster::shared();
    let admin_port = admin_supported().then(free_port);
    let mut builder = ProxyProcess::builder(&pg.upstream())
        .policy(&open_policy("\n  startup_timeout_ms: 500"))
        .env("RUST_LOG", "warn");
    if let Some(admin) = admin_port {
        builder = builder
            .arg("--admin-listen")
            .arg(&format!("{HOST}:{admin}"));
    }
    let proxy = builder.start();
    let pid = proxy.pid();
    let port = proxy.port();

    // A real session, open throughout.
    let held = trust_session(port)
        .await
        .unwrap_or_else(|e| panic!("first session: {e}"));
    within(
        Duration::from_secs(30),
        "first query",
        held.simple_query("SELECT 1"),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline_kb = rss_kb(pid);
    let baseline_fds = fd_count(pid);

    let attack_started = Instant::now();
    let bad: Vec<_> = (0..BAD)
        .map(|kind| tokio::spawn(bad_client(port, kind, CLOSE_LIMIT)))
        .collect();
    // While they are open, the gauge counts them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak_fds = fd_count(pid);
    let gauge_during = match admin_port {
        Some(admin) => http_get(admin, "/metrics")
            .await
            .and_then(|body| metric(&body, "pgward_client_connections")),
        None => None,
    };
    let peak_kb = rss_kb(pid);

    // ~1.5 s later all must be closed (the bound allows for a loaded machine).
    let mut close_times = Vec::new();
    let mut still_open = Vec::new();
    for (kind, task) in bad.into_iter().enumerate() {
        match within(CLOSE_LIMIT + Duration::from_secs(15), "a bad client", task)
            .await
            .expect("bad client task panicked")
        {
            Some(t) => close_times.push(t),
            None => still_open.push(kind % 4),
        }
    }
    let attack_time = attack_started.elapsed();
    close_times.sort();
    let within_1_5s = close_times
        .iter()
        .filter(|t| **t <= Duration::from_millis(1500))
        .count();
    println!(
        "reliability: {BAD} bad connections: {} closed, {within_1_5s} within 1.5 s; close time \
         min {:?} median {:?} max {:?}; all done after {attack_time:.2?}",
        close_times.len(),
        close_times.first(),
        close_times.get(close_times.len() / 2),
        close_times.last()
    );
    assert!(
        still_open.is_empty(),
        "{} bad connections were still open after {CLOSE_LIMIT:?} (kinds {still_open:?})",
        still_open.len()
    );

    // Nothing is left behind: the gauge is back to the one real session...
    let mut gauge_after = None;
    if let Some(admin) = admin_port {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            gauge_after = http_get(admin, "/metrics")
                .await
                .and_then(|body| metric(&body, "pgward_client_connections"));
            if gauge_after == Some(1.0) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // ...the sockets are gone...
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after_fds = fd_count(pid);
    while after_fds > baseline_fds && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after_fds = fd_count(pid);
    }
    let after_kb = rss_kb(pid);
    println!(
        "reliability: pgward client_connections gauge during {gauge_during:?}, after \
         {gauge_after:?} (admin listener: {}); fds {baseline_fds} -> {peak_fds} -> {after_fds}; \
         RSS {baseline_kb} kB -> {peak_kb} kB -> {after_kb} kB",
        admin_port.is_some()
    );
    if admin_port.is_some() {
        assert_eq!(
            gauge_after,
            Some(1.0),
            "pgward_client_connections must return to the one real session"
        );
    }
    assert!(
        after_fds <= baseline_fds,
        "pgward still holds {after_fds} fds (baseline {baseline_fds})"
    );
    assert!(
        after_kb.saturating_sub(baseline_kb) < MAX_RSS_GROWTH_KB,
        "pgward's RSS grew by {} kB after the bad connections were closed",
        after_kb.saturating_sub(baseline_kb)
    );

    // ...and clients are served promptly: the held session and a new one.
    within(
        Duration::from_secs(10),
        "the held session's query",
        held.simple_query("SELECT 2"),
    )
    .await
    .unwrap();
    let connect_started = Instant::now();
    let fresh = trust_session(port)
        .await
        .unwrap_or_else(|e| panic!("a new session after the bad connections: {e}"));
    let connect_time = connect_started.elapsed();
    within(
        Duration::from_secs(10),
        "a new session's query",
        fresh.simple_query("SELECT 3"),
    )
    .await
    .unwrap();
    println!("reliability: a new session connected in {connect_time:.2?}");
    assert!(
        connect_time < Duration::from_secs(5),
        "a new session took {connect_time:?} to connect"
    );

    let (code, out) = verify_audit(&proxy.audit_path());
    assert_eq!(code, Some(0), "pgward audit verify: {out}");
    println!(
        "reliability: garbage_and_slowloris_do_not_hold_resources took {:.2?}",
        test_started.elapsed()
    );
}
