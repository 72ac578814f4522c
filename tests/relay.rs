//! Issue #2: pgward relays the whole PostgreSQL frontend/backend protocol.
//!
//! Every test runs real clients (tokio-postgres, `psql`, `pgbench`, and a
//! small hand-written protocol client for what those cannot show) against a
//! real PostgreSQL, through the real pgward binary, and where it is
//! meaningful compares with the same thing done directly against PostgreSQL:
//! a proxy is only transparent if a client cannot tell the difference.
//!
//! The policy used here puts every identity in one unrestricted class: these
//! tests are about the relay, not the statement gate.
//!
//! Sections:
//!  1. authentication relay          8. transaction status
//!  2. simple query                  9. client disconnects
//!  3. extended query               10. upstream death
//!  4. COPY                         11. bad input and limits
//!  5. LISTEN/NOTIFY                12. SIGTERM drain
//!  6. large results, bounded memory 13. TLS termination
//!  7. cancel                       14. pgbench

mod support;

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::pin;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The bound on anything that should answer promptly; a hang fails the test.
const T: Duration = Duration::from_secs(30);

/// policy.yaml for relay tests: `server` and `limits` are YAML fragments
/// placed after `server:` / `limits:` (" {}" for defaults), and every
/// identity falls into one unrestricted class.
fn relay_policy(server: &str, limits: &str) -> String {
    format!(
        "server:{server}\nlimits:{limits}\nidentities:\n  default_class: open\n  classes:\n    open:\n      restricted: false\n"
    )
}

/// pgward in front of the shared cluster with default server settings.
fn proxy_with_limits(limits: &str) -> ProxyProcess {
    ProxyProcess::start(PgCluster::shared().port(), &relay_policy(" {}", limits))
}

fn plain_proxy() -> ProxyProcess {
    proxy_with_limits(" {}")
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<F: IntoFuture>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut.into_future()).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no outcome within {limit:?}"),
    }
}

/// Polls `check` every 50 ms until it holds; false if `limit` passes first.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tokio-postgres session whose connection task forwards notices and
/// notifications to `messages`, and which a test can kill (`task.abort()`)
/// to make the client vanish without a Terminate message.
struct Session {
    client: Client,
    messages: mpsc::UnboundedReceiver<AsyncMessage>,
    task: tokio::task::JoinHandle<Option<String>>,
}

async fn session(port: u16, user: &str, password: &str, db: &str) -> Session {
    let config = pg_config(HOST, port, user, password, db);
    let (client, mut connection) = within(T, "connect", config.connect(NoTls))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to port {port} as {user}: {}",
                describe_error(&e)
            )
        });
    let (tx, messages) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    let _ = tx.send(message);
                }
                Some(Err(e)) => return Some(describe_error(&e)),
                None => return None,
            }
        }
    });
    Session {
        client,
        messages,
        task,
    }
}

impl Session {
    /// The next notice or notification, if one arrives within `limit`.
    async fn next_message(&mut self, limit: Duration) -> Option<AsyncMessage> {
        tokio::time::timeout(limit, self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// `pg_backend_pid()` of a session: the real server process, for lookups in
/// `pg_stat_activity`.
async fn backend_pid(client: &Client) -> i32 {
    within(
        T,
        "pg_backend_pid()",
        client.query_one("SELECT pg_backend_pid()", &[]),
    )
    .await
    .expect("SELECT pg_backend_pid()")
    .get(0)
}

/// The `state` of a backend in `pg_stat_activity` (None: no such backend).
async fn backend_state(observer: &Client, pid: i32) -> Option<String> {
    within(
        T,
        "pg_stat_activity",
        observer.query_opt(
            "SELECT coalesce(state, '') FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        ),
    )
    .await
    .expect("query pg_stat_activity")
    .map(|row| row.get(0))
}

/// Waits until `pid` is running a statement containing `needle`.
async fn wait_running(observer: &Client, pid: i32, needle: &str) {
    let running = eventually(Duration::from_secs(15), || async {
        observer
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND strpos(query, $2) > 0",
                &[&pid, &needle],
            )
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(running, "backend {pid} never started running {needle:?}");
}

/// Clears libpq's PG* variables so a developer's environment cannot redirect
/// the clients under test.
fn pg_client_command(tool: &str) -> tokio::process::Command {
    let bin = find_pg_bin().expect("PostgreSQL binaries");
    let mut cmd = tokio::process::Command::new(bin.join(tool));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs psql on a libpq connection string with `password`; unaligned,
/// tuples-only output, stop on the first error.
async fn psql(conninfo: &str, password: &str, commands: &[&str]) -> Output {
    let mut cmd = pg_client_command("psql");
    cmd.env("PGPASSWORD", password).args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
    ]);
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    within(Duration::from_secs(60), "psql", cmd.output())
        .await
        .expect("cannot run psql")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn conninfo(port: u16, user: &str, db: &str) -> String {
    format!("host={HOST} port={port} user={user} dbname={db}")
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

/// Normalises simple-query results for comparison.
fn simple_summary(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(row) => format!(
                "row {:?}",
                (0..row.len()).map(|i| row.get(i)).collect::<Vec<_>>()
            ),
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            SimpleQueryMessage::RowDescription(columns) => format!(
                "columns {:?}",
                columns.iter().map(|c| c.name()).collect::<Vec<_>>()
            ),
            _ => "other".to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A raw protocol client
// ---------------------------------------------------------------------------

/// One backend message.
#[derive(Debug, Clone)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// A field of an ErrorResponse/NoticeResponse ('C' SQLSTATE, 'M' message, 'S' severity).
    fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if kind == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// A comparable one-line description.
    fn summary(&self) -> String {
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_end_matches('\0')
                .to_string()
        };
        match self.tag {
            b'E' => format!(
                "E {} {}",
                self.field(b'S').unwrap_or_default(),
                self.sqlstate().unwrap_or_default()
            ),
            b'N' => format!("N {}", self.field(b'M').unwrap_or_default()),
            b'C' => format!("C {}", text(&self.body)),
            b'Z' => format!("Z {}", self.body.first().map_or('?', |&b| b as char)),
            b'D' | b'S' | b'T' | b'A' => format!("{} {:?}", self.tag as char, self.body),
            t => (t as char).to_string(),
        }
    }
}

fn summaries(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().map(Msg::summary).collect()
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Text of the first column of the first DataRow.
fn first_value(msgs: &[Msg]) -> Option<String> {
    let row = msgs.iter().find(|m| m.tag == b'D')?;
    let len = i32::from_be_bytes(row.body.get(2..6)?.try_into().ok()?);
    if len < 0 {
        return None;
    }
    Some(String::from_utf8_lossy(row.body.get(6..6 + len as usize)?).into_owned())
}

/// A protocol-level client, for what libraries hide: exact message
/// sequences, transaction status bytes, the cancel key, malformed input.
/// It logs in as `trust_user` (no password over TCP).
struct Raw {
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = within(T, "TCP connect", TcpStream::connect(addr))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Raw {
            reader,
            writer: Some(writer),
            buf: Vec::new(),
        }
    }

    /// Connects and logs in as `trust_user`; returns the startup messages.
    async fn login(addr: SocketAddr, db: &str) -> (Raw, Vec<Msg>) {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(
            PROTOCOL_3_0,
            &[("user", TRUST_USER), ("database", db)],
        ))
        .await;
        let msgs = raw.until_ready().await;
        assert_eq!(
            msgs.first().map(|m| (m.tag, m.body.clone())),
            Some((b'R', vec![0, 0, 0, 0])),
            "expected AuthenticationOk first: {:?}",
            summaries(&msgs)
        );
        (raw, msgs)
    }

    async fn send(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("writer taken");
        within(T, "send", writer.write_all(bytes))
            .await
            .expect("write to server");
    }

    /// Reads more bytes; false at end of stream (or reset).
    async fn fill(&mut self, limit: Duration) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match within(limit, "read", self.reader.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// One untagged byte (the answer to SSLRequest/GSSENCRequest).
    async fn read_byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() && !self.fill(T).await {
            return None;
        }
        Some(self.buf.remove(0))
    }

    /// The next message; None at end of stream. Panics after `limit`.
    async fn recv_within(&mut self, limit: Duration) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap());
                assert!(len >= 4, "bad length {len} from the server");
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let frame: Vec<u8> = self.buf.drain(..total).collect();
                    return Some(Msg {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            if !self.fill(limit).await {
                return None;
            }
        }
    }

    async fn recv(&mut self) -> Option<Msg> {
        self.recv_within(T).await
    }

    /// Whether a message arrives within `limit` (without panicking).
    async fn quiet_for(&mut self, limit: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(limit, self.reader.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(_)) => false,
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            match self.recv().await {
                Some(m) => {
                    let done = m.tag == b'Z';
                    msgs.push(m);
                    if done {
                        return msgs;
                    }
                }
                None => panic!(
                    "connection closed before ReadyForQuery; got {:?}",
                    summaries(&msgs)
                ),
            }
        }
    }

    /// Messages until the server closes the connection.
    async fn until_closed(&mut self, limit: Duration) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while let Some(m) = self.recv_within(limit).await {
            msgs.push(m);
        }
        msgs
    }

    /// Sends a simple Query and returns its answer up to ReadyForQuery.
    async fn query(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&query(sql)).await;
        self.until_ready().await
    }
}

const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    untagged(&body)
}

fn untagged(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn code_packet(code: i32) -> Vec<u8> {
    untagged(&code.to_be_bytes())
}

fn cancel_packet(pid: i32, secret: i32) -> Vec<u8> {
    let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(&secret.to_be_bytes());
    untagged(&body)
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, sql);
    frame(b'Q', &body)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'P', &body)
}

/// Bind with text-format parameters and results.
fn bind(portal: &str, statement: &str, params: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    cstr(&mut body, statement);
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as i32).to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    frame(b'B', &body)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = Vec::new();
    cstr(&mut body, portal);
    body.extend_from_slice(&max_rows.to_be_bytes());
    frame(b'E', &body)
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

/// The (pid, secret) of the BackendKeyData among startup messages.
fn backend_key(msgs: &[Msg]) -> (i32, i32) {
    let k = msgs
        .iter()
        .find(|m| m.tag == b'K')
        .expect("no BackendKeyData in the startup messages");
    (
        i32::from_be_bytes(k.body[0..4].try_into().unwrap()),
        i32::from_be_bytes(k.body[4..8].try_into().unwrap()),
    )
}

/// Sends a CancelRequest on a new connection and waits for it to be closed,
/// as PostgreSQL (and pgward) close it without an answer.
async fn send_cancel_request(addr: SocketAddr, pid: i32, secret: i32) {
    let mut raw = Raw::connect(addr).await;
    raw.send(&cancel_packet(pid, secret)).await;
    let answer = raw.until_closed(Duration::from_secs(10)).await;
    assert!(
        answer.is_empty(),
        "a CancelRequest gets no answer, got {:?}",
        summaries(&answer)
    );
}

// ---------------------------------------------------------------------------
// 1. Authentication relay
//
// pgward never sees a password it could check: PostgreSQL stays the only
// authority, and every method the server asks for must pass through intact.
// ---------------------------------------------------------------------------

const LOGINS: [(&str, &str); 5] = [
    (SUPERUSER, SUPERUSER_PASSWORD),
    (SCRAM_USER, SCRAM_PASSWORD),
    (MD5_USER, MD5_PASSWORD),
    (CLEAR_USER, CLEAR_PASSWORD),
    (TRUST_USER, "unused"),
];

/// SCRAM-SHA-256, MD5, cleartext and trust all log in through pgward, as the
/// same user they are directly, with the same session parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_every_method_is_relayed_tokio_postgres() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let who = "SELECT current_user::text, session_user::text, \
               current_setting('client_encoding'), current_setting('DateStyle')";
    for (user, password) in LOGINS {
        let direct = within(
            T,
            "direct connect",
            pg.connect_as(user, password, "postgres"),
        )
        .await;
        let via = within(
            T,
            "proxy connect",
            proxy.connect(user, password, "postgres"),
        )
        .await;
        let d = direct.query_one(who, &[]).await.unwrap();
        let v = via.query_one(who, &[]).await.unwrap();
        let row = |r: &tokio_postgres::Row| -> Vec<String> { (0..4).map(|i| r.get(i)).collect() };
        assert_eq!(row(&v), row(&d), "{user}: session differs through pgward");
        assert_eq!(row(&v)[0], user);
    }
}

/// psql (libpq) with its defaults (sslmode=prefer, channel_binding=prefer)
/// logs in through pgward with every password method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_every_method_is_relayed_psql() {
    let proxy = plain_proxy();
    for (user, password) in LOGINS {
        let out = psql(
            &conninfo(proxy.port(), user, "postgres"),
            password,
            &["SELECT current_user"],
        )
        .await;
        assert!(
            out.status.success(),
            "psql as {user} through pgward failed: {}\n--- pgward log ---\n{}",
            stderr(&out),
            proxy.log()
        );
        assert_eq!(stdout(&out).trim(), user);
    }
}

/// A wrong password is refused by PostgreSQL with 28P01, and the client sees
/// exactly that error through pgward, for every method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_wrong_password_is_28p01_through_pgward() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    for user in [SUPERUSER, SCRAM_USER, MD5_USER, CLEAR_USER] {
        let direct = within(
            T,
            "direct",
            try_connect(HOST, pg.port(), user, "wrong", "postgres"),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} got in directly with a wrong password"));
        let via = within(
            T,
            "proxy",
            try_connect(HOST, proxy.port(), user, "wrong", "postgres"),
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} got in through pgward with a wrong password"));
        assert_eq!(
            sqlstate(&via),
            Some("28P01"),
            "{user}: {}",
            describe_error(&via)
        );
        assert_eq!(describe_error(&via), describe_error(&direct), "{user}");

        let out = psql(
            &conninfo(proxy.port(), user, "postgres"),
            "wrong",
            &["SELECT 1"],
        )
        .await;
        assert!(
            !out.status.success(),
            "psql as {user} with a wrong password succeeded"
        );
        assert!(
            stderr(&out).contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "psql as {user}: {}",
            stderr(&out)
        );
    }
    // The failures did not hurt the proxy.
    let client = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    client.simple_query("SELECT 1").await.unwrap();
}

// ---------------------------------------------------------------------------
// 2. Simple query
//
// The simple protocol is what psql, migrations and many drivers' "execute
// script" use; multi-statement strings, empty queries and notices all have
// their own message forms that must pass unchanged.
// ---------------------------------------------------------------------------

/// A multi-statement string returns the same results through pgward as
/// directly, including an error that aborts the rest of the string and rolls
/// back its implicit transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_multi_statement_matches_direct() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let direct = pg.connect_superuser("postgres").await;
    let via = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;

    let script = "SELECT 1 AS a, 'x' AS b; \
                  CREATE TEMP TABLE relay_t (id int, v text); \
                  INSERT INTO relay_t SELECT g, 'v' || g FROM generate_series(1, 5) g; \
                  UPDATE relay_t SET v = upper(v) WHERE id > 3; \
                  SELECT * FROM relay_t ORDER BY id; \
                  DELETE FROM relay_t; \
                  SELECT NULL::text AS n, 'ünïcødé 🐘' AS u";
    let d = simple_summary(&direct.simple_query(script).await.unwrap());
    let v = simple_summary(&within(T, "script", via.simple_query(script)).await.unwrap());
    assert_eq!(v, d);
    assert!(v.contains(&"complete 5".to_string()), "{v:?}");
    assert!(
        v.contains(&r#"row [Some("5"), Some("V5")]"#.to_string()),
        "{v:?}"
    );

    // An error in the middle: the statements after it do not run and the
    // whole string's implicit transaction is rolled back.
    let failing = "CREATE TEMP TABLE relay_e (i int); INSERT INTO relay_e VALUES (1); \
                   SELECT 1/0; CREATE TEMP TABLE relay_never (i int)";
    for client in [&direct, &via] {
        let err = client.simple_query(failing).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some("22012"), "{}", describe_error(&err));
        let rows = client
            .query_one(
                "SELECT to_regclass('pg_temp.relay_e') IS NULL, to_regclass('pg_temp.relay_never') IS NULL",
                &[],
            )
            .await
            .unwrap();
        assert!(rows.get::<_, bool>(0) && rows.get::<_, bool>(1));
    }
}

/// "" and ";" are answered with EmptyQueryResponse, in the simple and the
/// extended protocol, exactly as PostgreSQL answers them directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queries_get_empty_query_response() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let mut results = Vec::new();
    for addr in [pg.addr(), proxy.addr()] {
        let (mut raw, _) = Raw::login(addr, "postgres").await;
        let mut seen = Vec::new();
        for sql in ["", ";", " ; ; "] {
            seen.push(summaries(&raw.query(sql).await));
        }
        raw.send(&[parse("", ""), bind("", "", &[]), execute("", 0), sync()].concat())
            .await;
        seen.push(summaries(&raw.until_ready().await));
        results.push(seen);
    }
    assert_eq!(results[1], results[0], "through pgward vs direct");
    for answer in &results[1][..3] {
        assert_eq!(answer, &vec!["I".to_string(), "Z I".to_string()]);
    }
    assert_eq!(results[1][3], vec!["1", "2", "I", "Z I"]);

    // tokio-postgres copes with it too.
    let client = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    let answer = within(T, "simple_query(\"\")", client.simple_query(""))
        .await
        .unwrap();
    assert_eq!(simple_summary(&answer), vec!["complete 0"]);
    client.batch_execute(";").await.unwrap();
}

/// NoticeResponse (RAISE NOTICE/WARNING) reaches the client, to tokio-postgres
/// as an async message and to psql on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_relayed() {
    let proxy = plain_proxy();
    let mut s = session(proxy.port(), SUPERUSER, SUPERUSER_PASSWORD, "postgres").await;
    within(
        T,
        "DO block",
        s.client.batch_execute(
            "DO $$BEGIN RAISE NOTICE 'hi from %', 'pgward'; RAISE WARNING 'careful'; END$$",
        ),
    )
    .await
    .unwrap();
    let mut notices = Vec::new();
    while let Some(message) = s.next_message(Duration::from_secs(5)).await {
        if let AsyncMessage::Notice(n) = message {
            notices.push((n.severity().to_string(), n.message().to_string()));
        }
        if notices.len() == 2 {
            break;
        }
    }
    assert_eq!(
        notices,
        vec![
            ("NOTICE".to_string(), "hi from pgward".to_string()),
            ("WARNING".to_string(), "careful".to_string())
        ]
    );

    let out = psql(
        &conninfo(proxy.port(), SUPERUSER, "postgres"),
        SUPERUSER_PASSWORD,
        &["DO $$BEGIN RAISE NOTICE 'hi from psql'; END$$"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NOTICE:  hi from psql"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// 3. Extended query
//
// Every modern driver uses Parse/Bind/Execute, pipelines messages and relies
// on the server skipping to Sync after an error; pgward must keep that
// bookkeeping byte-for-byte intact.
// ---------------------------------------------------------------------------

/// Parameters of many types round-trip in binary; a named prepared statement
/// is reused many times; an unnamed statement (query_typed) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_parameters_prepared_and_unnamed_statements() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let direct = pg.connect_superuser("postgres").await;
    let via = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;

    let sql =
        "SELECT $1::int4, $2::int8, $3::text, $4::bytea, $5::float8, $6::bool, $7::text IS NULL";
    let bytes: Vec<u8> = vec![0, 1, 2, 255];
    let big: i64 = 1 << 40;
    let text = "héllo 🐘 \"quoted\" \\ back";
    let none: Option<String> = None;
    for client in [&direct, &via] {
        let row = within(
            T,
            "typed params",
            client.query_one(sql, &[&42i32, &big, &text, &bytes, &1.5f64, &true, &none]),
        )
        .await
        .unwrap();
        assert_eq!(row.get::<_, i32>(0), 42);
        assert_eq!(row.get::<_, i64>(1), big);
        assert_eq!(row.get::<_, &str>(2), text);
        assert_eq!(row.get::<_, Vec<u8>>(3), bytes);
        assert_eq!(row.get::<_, f64>(4), 1.5);
        assert!(row.get::<_, bool>(5));
        assert!(row.get::<_, bool>(6));
    }

    // A named statement, prepared once and executed 500 times.
    let stmt = via.prepare("SELECT $1::int4 + 1, $2::text").await.unwrap();
    for i in 0..500i32 {
        let label = format!("n{i}");
        let row = within(T, "execute prepared", via.query_one(&stmt, &[&i, &label]))
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, String>(1)),
            (i + 1, label)
        );
    }
    let named: i64 = via
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement = 'SELECT $1::int4 + 1, $2::text'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(named, 1, "the named statement must live on the server");

    // The unnamed statement: Parse/Bind/Execute in one round trip.
    let row = via
        .query_typed(
            "SELECT $1::text || $2::text",
            &[(&"pg", Type::TEXT), (&"ward", Type::TEXT)],
        )
        .await
        .unwrap();
    assert_eq!(row[0].get::<_, &str>(0), "pgward");
}

/// Portals with a row limit (Execute with max_rows, PortalSuspended) deliver
/// every row once, in order, also with two portals interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_fetch_in_batches() {
    let proxy = plain_proxy();
    let mut client = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    let tx = client.transaction().await.unwrap();
    let sql = "SELECT g FROM generate_series(1, $1::int4) g";
    let a = tx.bind(sql, &[&1000i32]).await.unwrap();
    let b = tx.bind(sql, &[&250i32]).await.unwrap();
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let (mut calls_a, mut done_b) = (0, false);
    loop {
        let rows = within(T, "portal a", tx.query_portal(&a, 100))
            .await
            .unwrap();
        calls_a += 1;
        if !done_b {
            let rows_b = tx.query_portal(&b, 70).await.unwrap();
            done_b = rows_b.len() < 70;
            got_b.extend(rows_b.iter().map(|r| r.get::<_, i32>(0)));
        }
        if rows.is_empty() {
            break;
        }
        assert_eq!(rows.len(), 100, "batch {calls_a}");
        got_a.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(got_a, (1..=1000).collect::<Vec<_>>());
    assert_eq!(got_b, (1..=250).collect::<Vec<_>>());
    assert_eq!(calls_a, 11, "10 full batches, then the empty completion");
    tx.commit().await.unwrap();
}

/// 50 queries in flight at once (tokio-postgres pipelines concurrent
/// requests) each get their own answer; one failing among them fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_each_get_their_answer() {
    let proxy = plain_proxy();
    let client = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    let stmt = client.prepare("SELECT $1::int4 * 2").await.unwrap();
    let client = &client;
    let stmt = &stmt;
    let results = within(
        T,
        "50 pipelined queries",
        futures::future::join_all((0..50i32).map(|i| async move {
            match i {
                25 => client.query_one("SELECT 1/0", &[]).await,
                i if i % 2 == 0 => client.query_one(stmt, &[&i]).await,
                i => client.query_one("SELECT $1::int4 * 2", &[&i]).await,
            }
        })),
    )
    .await;
    for (i, result) in results.into_iter().enumerate() {
        let i = i as i32;
        match result {
            Ok(row) => {
                assert_ne!(i, 25, "SELECT 1/0 succeeded");
                assert_eq!(row.get::<_, i32>(0), i * 2, "query {i}");
            }
            Err(e) => {
                assert_eq!(i, 25, "query {i} failed: {}", describe_error(&e));
                assert_eq!(sqlstate(&e), Some("22012"));
            }
        }
    }
    let row = client
        .query_one("SELECT 'still in sync'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "still in sync");
}

/// Several Parse/Bind/Execute before a single Sync, with an error in the
/// middle: the server skips to Sync, and the next batch works. The exact
/// message sequence through pgward equals the one directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_error_resynchronises_at_sync() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let batch1 = [
        parse("", "SELECT $1::int4 + 1"),
        bind("", "", &["1"]),
        execute("", 0),
        parse("s_gen", "SELECT g FROM generate_series(1, 5) g"),
        bind("p_gen", "s_gen", &[]),
        execute("p_gen", 2), // suspends after two rows
        execute("p_gen", 0), // the rest
        parse("", "SELECT 1/0"),
        bind("", "", &[]),
        execute("", 0),
        parse("", "SELECT 'skipped'"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
    ]
    .concat();
    let batch2 = [bind("", "s_gen", &[]), execute("", 1), sync()].concat();
    let mut results = Vec::new();
    for addr in [pg.addr(), proxy.addr()] {
        let (mut raw, _) = Raw::login(addr, "postgres").await;
        raw.send(&batch1).await;
        let first = raw.until_ready().await;
        raw.send(&batch2).await;
        let second = raw.until_ready().await;
        results.push((first, second));
    }
    let [(d1, d2), (v1, v2)] = &results[..] else {
        unreachable!()
    };
    assert_eq!(
        (summaries(v1), summaries(v2)),
        (summaries(d1), summaries(d2)),
        "through pgward vs direct"
    );
    // The error surfaces at Bind (1/0 is folded while planning); the rest of
    // the batch is skipped up to Sync.
    assert_eq!(tags(v1), "12DC12DDsDDDC1EZ", "{:?}", summaries(v1));
    assert!(summaries(v1).contains(&"E ERROR 22012".to_string()));
    assert_eq!(v1.last().unwrap().summary(), "Z I");
    assert_eq!(tags(v2), "2DsZ", "s_gen survived, the next batch runs");
}

/// 5000 queries before one Sync, written while the answers (5 MB) are read
/// concurrently: neither direction of pgward may block the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipeline_does_not_deadlock() {
    let proxy = plain_proxy();
    let (mut raw, _) = Raw::login(proxy.addr(), "postgres").await;
    let mut batch = parse("rep", "SELECT repeat('x', 1000), $1::int4");
    const N: usize = 5000;
    for i in 0..N {
        batch.extend(bind("", "rep", &[i.to_string().as_str()]));
        batch.extend(execute("", 0));
    }
    batch.extend(sync());
    let mut writer = raw.writer.take().unwrap();
    let write = tokio::spawn(async move {
        writer.write_all(&batch).await.unwrap();
        writer
    });
    let mut rows = 0;
    let mut errors = Vec::new();
    let last = loop {
        let m = raw
            .recv_within(Duration::from_secs(60))
            .await
            .expect("connection closed mid-pipeline");
        match m.tag {
            b'D' => rows += 1,
            b'E' => errors.push(m.summary()),
            b'Z' => break m.summary(),
            _ => {}
        }
    };
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows, N);
    assert_eq!(last, "Z I");
    raw.writer = Some(within(T, "writer", write).await.unwrap());
    assert_eq!(
        first_value(&raw.query("SELECT 'after'").await).as_deref(),
        Some("after")
    );
}

// ---------------------------------------------------------------------------
// 4. COPY
//
// COPY data is streamed through pgward in pieces rather than parsed; bulk
// loads and dumps must arrive byte-identical, and a failed COPY must leave
// the session usable.
// ---------------------------------------------------------------------------

/// 100,000 rows in with copy_in and back out with copy_out give identical
/// tables and identical bytes through pgward and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_match_direct() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_copy");
    let proxy = plain_proxy();
    let direct = pg.connect_superuser(&db).await;
    let via = proxy.connect(SUPERUSER, SUPERUSER_PASSWORD, &db).await;
    direct
        .batch_execute(
            "CREATE TABLE copy_direct (id int PRIMARY KEY, name text, amount numeric, note text);
             CREATE TABLE copy_proxy (LIKE copy_direct INCLUDING ALL);",
        )
        .await
        .unwrap();

    const ROWS: usize = 100_000;
    let mut data = Vec::new();
    for i in 0..ROWS {
        let note = if i % 7 == 0 {
            "\\N"
        } else {
            "tab\\there, ünïcødé"
        };
        data.extend_from_slice(
            format!("{i}\tname {i}\t{}.{:02}\t{note}\n", i * 3, i % 100).as_bytes(),
        );
    }

    for (client, table) in [(&direct, "copy_direct"), (&via, "copy_proxy")] {
        let sink = within(
            T,
            "COPY FROM STDIN",
            client.copy_in(&format!("COPY {table} FROM STDIN")),
        )
        .await
        .unwrap();
        let mut sink = pin!(sink);
        for chunk in data.chunks(50_000) {
            within(T, "copy data", sink.send(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        let n = within(T, "COPY finish", sink.as_mut().finish())
            .await
            .unwrap();
        assert_eq!(n, ROWS as u64, "{table}");
    }
    let digest = |table: &str| {
        format!("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t")
    };
    let d = direct.query_one(&digest("copy_direct"), &[]).await.unwrap();
    let v = direct.query_one(&digest("copy_proxy"), &[]).await.unwrap();
    assert_eq!(d.get::<_, i64>(0), ROWS as i64);
    assert_eq!(
        (v.get::<_, i64>(0), v.get::<_, String>(1)),
        (d.get::<_, i64>(0), d.get::<_, String>(1)),
        "the table loaded through pgward differs"
    );

    let mut outputs = Vec::new();
    for (client, table) in [(&direct, "copy_direct"), (&via, "copy_proxy")] {
        let stream = within(
            T,
            "COPY TO STDOUT",
            client.copy_out(&format!(
                "COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT"
            )),
        )
        .await
        .unwrap();
        let chunks: Vec<Bytes> = within(T, "copy out data", stream.try_collect())
            .await
            .unwrap();
        outputs.push(chunks.concat());
    }
    assert_eq!(outputs[1].len(), outputs[0].len());
    assert!(
        outputs[1] == outputs[0],
        "COPY TO output differs through pgward"
    );
    assert!(
        outputs[1] == data,
        "COPY TO output differs from what was loaded"
    );
}

/// A COPY that fails (bad data from the client, or CopyFail) ends in an
/// error, loads nothing, and the session carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_leaves_session_usable() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_copy_fail");
    let proxy = plain_proxy();
    let via = proxy.connect(SUPERUSER, SUPERUSER_PASSWORD, &db).await;
    via.batch_execute("CREATE TABLE t (i int)").await.unwrap();

    // Bad data: the server refuses it.
    let sink = via.copy_in("COPY t FROM STDIN").await.unwrap();
    let mut sink = pin!(sink);
    sink.send(Bytes::from_static(b"1\n2\nnot-a-number\n3\n"))
        .await
        .unwrap();
    let err = within(T, "COPY finish", sink.as_mut().finish())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("22P02"), "{}", describe_error(&err));

    // CopyFail: the client gives up (tokio-postgres sends it when the sink is
    // dropped unfinished).
    {
        let sink = via.copy_in("COPY t FROM STDIN").await.unwrap();
        let mut sink = pin!(sink);
        sink.send(Bytes::from_static(b"10\n11\n")).await.unwrap();
    }
    let n: i64 = within(
        T,
        "query after COPY",
        via.query_one("SELECT count(*) FROM t", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(n, 0, "failed COPYs must load nothing");
    let row = via.query_one("SELECT 'usable'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "usable");
}

// ---------------------------------------------------------------------------
// 5. LISTEN/NOTIFY
//
// Notifications arrive while the listening client is idle, i.e. the server
// speaks unprompted; the relay's server-to-client half must forward them at
// once, not only when the client next sends something.
// ---------------------------------------------------------------------------

async fn expect_notification(s: &mut Session, channel: &str, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match s.next_message(left).await {
            Some(AsyncMessage::Notification(n)) => {
                assert_eq!((n.channel(), n.payload()), (channel, payload));
                return;
            }
            Some(_) => continue,
            None => panic!("notification {channel}/{payload} not delivered within 10 s"),
        }
    }
}

/// Notifications flow between sessions through pgward, and between pgward
/// sessions and direct ones, and only on commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_across_sessions() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let mut listener = session(proxy.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let notifier = session(proxy.port(), MD5_USER, MD5_PASSWORD, "postgres").await;
    let mut direct_listener = session(pg.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let direct_notifier = pg.connect_as(CLEAR_USER, CLEAR_PASSWORD, "postgres").await;
    listener
        .client
        .batch_execute("LISTEN relay_chan")
        .await
        .unwrap();
    direct_listener
        .client
        .batch_execute("LISTEN relay_back")
        .await
        .unwrap();

    notifier
        .client
        .batch_execute("NOTIFY relay_chan, 'p1'")
        .await
        .unwrap();
    expect_notification(&mut listener, "relay_chan", "p1").await;

    direct_notifier
        .batch_execute("NOTIFY relay_chan, 'p2'")
        .await
        .unwrap();
    expect_notification(&mut listener, "relay_chan", "p2").await;

    notifier
        .client
        .batch_execute("NOTIFY relay_back, 'p3'")
        .await
        .unwrap();
    expect_notification(&mut direct_listener, "relay_back", "p3").await;

    // Delivered on commit only.
    notifier
        .client
        .batch_execute("BEGIN; SELECT pg_notify('relay_chan', 'p4')")
        .await
        .unwrap();
    assert!(
        listener
            .next_message(Duration::from_millis(500))
            .await
            .is_none(),
        "a notification escaped an open transaction"
    );
    notifier.client.batch_execute("COMMIT").await.unwrap();
    expect_notification(&mut listener, "relay_chan", "p4").await;
}

// ---------------------------------------------------------------------------
// 6. Large results with bounded memory
//
// A proxy that buffers whole results (or whole messages) can be made to run
// out of memory by any client with a big SELECT; pgward must stream.
// ---------------------------------------------------------------------------

/// Samples a process's VmRSS in the background; `stop` returns the peak (kB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssSampler { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// ~300 MB of rows, and then one 128 MB value, pass through pgward while its
/// resident memory grows by far less than either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream_with_bounded_memory() {
    const MAX_GROWTH_KB: u64 = 64 * 1024;
    let proxy = plain_proxy();
    let pid = proxy.pid();
    let client = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    client.simple_query("SELECT 1").await.unwrap(); // warm up
    let baseline = proc_status_kb(pid, "VmRSS").expect("pgward's VmRSS");

    // Many rows.
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let (rows, bytes) = within(Duration::from_secs(180), "300 MB result", async {
        let stream = client
            .query_raw(
                "SELECT repeat('x', 1000) FROM generate_series(1, 300000)",
                std::iter::empty::<i32>(),
            )
            .await
            .unwrap();
        let mut stream = pin!(stream);
        let (mut rows, mut bytes) = (0u64, 0u64);
        while let Some(row) = stream.try_next().await.unwrap() {
            rows += 1;
            bytes += row.get::<_, &str>(0).len() as u64;
        }
        (rows, bytes)
    })
    .await;
    let peak_rows = sampler.stop();
    let rows_time = started.elapsed();
    assert_eq!((rows, bytes), (300_000, 300_000_000));

    // One huge message: a single DataRow bigger than the whole bound.
    let sampler = RssSampler::start(pid);
    let len = within(
        Duration::from_secs(120),
        "128 MB value",
        client.query_one("SELECT repeat('y', 128 * 1024 * 1024)", &[]),
    )
    .await
    .unwrap()
    .get::<_, &str>(0)
    .len();
    let peak_value = sampler.stop();
    assert_eq!(len, 128 * 1024 * 1024);

    let hwm = proc_status_kb(pid, "VmHWM").expect("pgward's VmHWM");
    eprintln!(
        "pgward RSS: baseline {baseline} kB, peak during rows {peak_rows} kB ({rows_time:?}), \
         during 128 MB value {peak_value} kB, VmHWM {hwm} kB"
    );
    assert!(
        hwm.saturating_sub(baseline) < MAX_GROWTH_KB,
        "pgward's peak RSS grew by {} kB (baseline {baseline} kB, VmHWM {hwm} kB, \
         sampled peaks {peak_rows}/{peak_value} kB): results are being buffered",
        hwm.saturating_sub(baseline)
    );
}

/// An error quoting a huge input is one message pgward would have to hold
/// whole: past its bound the session ends with a clear FATAL (54000) instead
/// of pgward buffering it (found in review: 300 MB of error grew pgward by
/// 600 MB). pgward and other sessions carry on.
#[tokio::test]
async fn a_huge_error_message_ends_the_session_not_pgward() {
    const MAX_GROWTH_KB: u64 = 64 * 1024;
    let proxy = plain_proxy();
    let pid = proxy.pid();
    let client = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    client.simple_query("SELECT 1").await.unwrap();
    let baseline = proc_status_kb(pid, "VmRSS").expect("pgward's VmRSS");
    let err = within(
        Duration::from_secs(120),
        "64 MB error",
        client.simple_query("SELECT repeat('x', 64 * 1024 * 1024)::int"),
    )
    .await
    .expect_err("the cast fails");
    // (Never print the error: without pgward's bound it is 64 MB long.)
    let db = err.as_db_error().expect("a server error");
    let head: String = db.message().chars().take(200).collect();
    assert_eq!(db.code().code(), "54000", "{head}");
    assert!(db.message().contains("pgward reads whole"), "{head}");
    let hwm = proc_status_kb(pid, "VmHWM").expect("pgward's VmHWM");
    assert!(
        hwm.saturating_sub(baseline) < MAX_GROWTH_KB,
        "pgward's peak RSS grew by {} kB (baseline {baseline} kB, VmHWM {hwm} kB)",
        hwm.saturating_sub(baseline)
    );
    assert_still_serving(&proxy).await;
}

// ---------------------------------------------------------------------------
// 7. Cancel
//
// Clients hold a key pgward issued, never the server's: the cancel must
// still reach exactly the right backend, and no other.
// ---------------------------------------------------------------------------

/// Two sessions sleep; cancelling A through pgward stops A at once (57014)
/// while B keeps running; then B can be cancelled too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_the_targeted_session() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let observer = pg.connect_superuser("postgres").await;
    let a = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let b = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let (pid_a, pid_b) = (backend_pid(&a).await, backend_pid(&b).await);
    let (token_a, token_b) = (a.cancel_token(), b.cancel_token());
    let sleep = |client: Client| {
        tokio::spawn(async move {
            let result = client.batch_execute("SELECT pg_sleep(30)").await;
            (client, result, Instant::now())
        })
    };
    let (task_a, task_b) = (sleep(a), sleep(b));
    wait_running(&observer, pid_a, "pg_sleep").await;
    wait_running(&observer, pid_b, "pg_sleep").await;

    let cancelled_at = Instant::now();
    within(T, "cancel A", token_a.cancel_query(NoTls))
        .await
        .unwrap();
    let (a, result_a, ended_a) = within(Duration::from_secs(10), "A's answer after cancel", task_a)
        .await
        .unwrap();
    let err = result_a.expect_err("A's pg_sleep(30) was not cancelled");
    assert_eq!(sqlstate(&err), Some("57014"), "{}", describe_error(&err));
    assert!(ended_a - cancelled_at < Duration::from_secs(5));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task_b.is_finished(), "cancelling A ended B as well");
    assert_eq!(
        backend_state(&observer, pid_b).await.as_deref(),
        Some("active")
    );

    within(T, "cancel B", token_b.cancel_query(NoTls))
        .await
        .unwrap();
    let (b, result_b, _) = within(Duration::from_secs(10), "B's answer after cancel", task_b)
        .await
        .unwrap();
    assert_eq!(sqlstate(&result_b.unwrap_err()), Some("57014"));

    // Both sessions go on.
    for client in [&a, &b] {
        client.simple_query("SELECT 1").await.unwrap();
    }
}

/// The BackendKeyData a client gets is pgward's, not the server's (pid and
/// secret stay inside pgward); only the issued key cancels, a wrong secret or
/// the server's real pid cancels nothing, and an ended session's key is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_cancel_key_is_pgwards_own() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let observer = pg.connect_superuser("postgres").await;
    let (_, direct_startup) = Raw::login(pg.addr(), "postgres").await;
    let (mut raw, startup) = Raw::login(proxy.addr(), "postgres").await;

    // Startup is otherwise what PostgreSQL sent: same messages, same parameters.
    let without_key = |msgs: &[Msg]| -> Vec<String> {
        msgs.iter()
            .filter(|m| m.tag != b'K')
            .map(Msg::summary)
            .collect()
    };
    assert_eq!(without_key(&startup), without_key(&direct_startup));

    let (pid, secret) = backend_key(&startup);
    let real_pid: i32 = first_value(&raw.query("SELECT pg_backend_pid()").await)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, real_pid, "pgward handed out the server's pid");

    raw.send(&query("SELECT pg_sleep(30)")).await;
    wait_running(&observer, real_pid, "pg_sleep").await;
    send_cancel_request(proxy.addr(), pid, secret.wrapping_add(1)).await;
    send_cancel_request(proxy.addr(), real_pid, secret).await;
    assert!(
        raw.quiet_for(Duration::from_secs(1)).await,
        "a cancel with a wrong key interrupted the query"
    );
    assert_eq!(
        backend_state(&observer, real_pid).await.as_deref(),
        Some("active")
    );

    send_cancel_request(proxy.addr(), pid, secret).await;
    let answer = summaries(&raw.until_ready().await);
    // RowDescription was sent before the sleep started; then the cancel.
    assert!(
        answer.ends_with(&["E ERROR 57014".to_string(), "Z I".to_string()])
            && !answer.iter().any(|m| m.starts_with('D')),
        "{answer:?}"
    );

    // After the session ends, its key cancels nothing (and is logged as unknown).
    raw.send(&frame(b'X', &[])).await;
    assert!(raw.until_closed(Duration::from_secs(10)).await.is_empty());
    let ended = eventually(Duration::from_secs(10), || async {
        backend_state(&observer, real_pid).await.is_none()
    })
    .await;
    assert!(ended);
    send_cancel_request(proxy.addr(), pid, secret).await;
    assert!(
        proxy.wait_for_log("unknown key ignored", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 8. Transaction status
//
// Clients and pools decide what to do next from ReadyForQuery's status byte;
// a failed block must stay failed, and COMMIT of it must roll back.
// ---------------------------------------------------------------------------

/// BEGIN/COMMIT/ROLLBACK/SAVEPOINT give the same messages and status bytes
/// through pgward as directly; COMMIT of a failed block answers ROLLBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_status_matches_direct() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let script = [
        "CREATE TEMP TABLE tx_t (i int)",
        "BEGIN",
        "INSERT INTO tx_t VALUES (1)",
        "SELECT 1/0",
        "SELECT 1",
        "COMMIT",
        "SELECT count(*) FROM tx_t",
        "BEGIN",
        "INSERT INTO tx_t VALUES (2)",
        "COMMIT",
        "BEGIN",
        "INSERT INTO tx_t VALUES (3)",
        "ROLLBACK",
        "BEGIN",
        "INSERT INTO tx_t VALUES (4)",
        "SAVEPOINT s",
        "SELECT 1/0",
        "ROLLBACK TO s",
        "COMMIT",
        "SELECT string_agg(i::text, ',' ORDER BY i) FROM tx_t",
    ];
    let mut results = Vec::new();
    for addr in [pg.addr(), proxy.addr()] {
        let (mut raw, _) = Raw::login(addr, "postgres").await;
        let mut answers = Vec::new();
        for sql in script {
            answers.push(raw.query(sql).await);
        }
        results.push(answers);
    }
    for (i, sql) in script.iter().enumerate() {
        assert_eq!(
            summaries(&results[1][i]),
            summaries(&results[0][i]),
            "{sql:?} through pgward vs direct"
        );
    }
    let via = &results[1];
    let status = |i: usize| via[i].last().unwrap().summary();
    assert_eq!(status(1), "Z T");
    assert_eq!(status(3), "Z E");
    assert_eq!(via[4][0].sqlstate().as_deref(), Some("25P02"));
    assert_eq!(
        via[5][0].summary(),
        "C ROLLBACK",
        "COMMIT of a failed block"
    );
    assert_eq!(status(5), "Z I");
    assert_eq!(first_value(&via[6]).as_deref(), Some("0"));
    assert_eq!(via[9][0].summary(), "C COMMIT");
    assert_eq!(first_value(&via[19]).as_deref(), Some("2,4"));
}

/// The same with tokio-postgres' transaction API on a real table: a row
/// inserted before an error in the block is not there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_rolls_back_through_pgward() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_tx");
    let proxy = plain_proxy();
    let mut client = proxy.connect(SUPERUSER, SUPERUSER_PASSWORD, &db).await;
    client
        .batch_execute("CREATE TABLE t (i int)")
        .await
        .unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    tx.rollback().await.unwrap();

    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    let err = client
        .batch_execute("INSERT INTO t VALUES (4)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("25P02"));
    client.batch_execute("COMMIT").await.unwrap(); // answered ROLLBACK

    let direct = pg.connect_superuser(&db).await;
    let rows: Vec<i32> = direct
        .query("SELECT i FROM t ORDER BY i", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![1]);
}

// ---------------------------------------------------------------------------
// 9. Client disconnects
//
// A client that vanishes (crash, network, killed pod) must not leave its
// backend running a query and holding locks: pgward cancels and closes it.
// ---------------------------------------------------------------------------

/// Kills a session's connection task (the socket closes without a Terminate
/// message, as when a client process dies), then waits for the backend to
/// disappear from pg_stat_activity.
async fn kill_and_assert_released(
    observer: &Client,
    connection: tokio::task::JoinHandle<Option<String>>,
    pid: i32,
    proxy: &ProxyProcess,
) {
    connection.abort();
    let _ = connection.await;
    let vanished_at = Instant::now();
    let gone = eventually(Duration::from_secs(10), || async {
        backend_state(observer, pid).await.is_none()
    })
    .await;
    assert!(
        gone,
        "backend {pid} still present {:?} after its client vanished (state {:?})\n--- pgward log ---\n{}",
        vanished_at.elapsed(),
        backend_state(observer, pid).await,
        proxy.log()
    );
}

/// A client dropped in the middle of `pg_sleep(60)`: its backend is gone
/// within seconds, not after the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_frees_the_backend() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let observer = pg.connect_superuser("postgres").await;
    let Session { client, task, .. } =
        session(proxy.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let pid = backend_pid(&client).await;
    let query = tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(60)").await });
    wait_running(&observer, pid, "pg_sleep").await;
    kill_and_assert_released(&observer, task, pid, &proxy).await;
    let result = within(T, "the abandoned query", query).await.unwrap();
    assert!(
        result.is_err(),
        "pg_sleep(60) completed after its connection died"
    );
}

/// A client dropped while a large result streams to it (pgward is blocked
/// writing to it): the backend is released too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_result_frees_the_backend() {
    let pg = PgCluster::shared();
    let proxy = plain_proxy();
    let observer = pg.connect_superuser("postgres").await;
    let s = session(proxy.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let pid = backend_pid(&s.client).await;
    {
        let stream = within(
            T,
            "start a huge result",
            s.client.query_raw(
                "SELECT repeat('z', 1000) FROM generate_series(1, 10000000)",
                std::iter::empty::<i32>(),
            ),
        )
        .await
        .unwrap();
        let mut stream = pin!(stream);
        for _ in 0..10 {
            within(T, "a row", stream.try_next())
                .await
                .unwrap()
                .unwrap();
        }
    }
    assert_eq!(
        backend_state(&observer, pid).await.as_deref(),
        Some("active")
    );
    let Session { client, task, .. } = s;
    kill_and_assert_released(&observer, task, pid, &proxy).await;
    drop(client);
}

// ---------------------------------------------------------------------------
// 10. Upstream death
//
// When PostgreSQL dies, clients must get an error promptly (not hang), and
// pgward must survive to serve once the server is back.
// ---------------------------------------------------------------------------

/// Stopping the server (immediate shutdown) under a busy and an idle session:
/// both get errors quickly, pgward stays up and answers new connections with
/// a clean 08006 error instead of a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_death_is_reported_and_pgward_survives() {
    let private = PgCluster::start();
    let mut proxy = ProxyProcess::start(private.port(), &relay_policy(" {}", " {}"));
    let observer = private.connect_superuser("postgres").await;
    let idle = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let busy = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let busy_pid = backend_pid(&busy).await;
    let busy_task = tokio::spawn(async move { busy.batch_execute("SELECT pg_sleep(30)").await });
    wait_running(&observer, busy_pid, "pg_sleep").await;
    drop(observer);

    let killed_at = Instant::now();
    tokio::task::spawn_blocking(move || drop(private))
        .await
        .unwrap();

    let busy_result = within(
        Duration::from_secs(15),
        "busy session after upstream death",
        busy_task,
    )
    .await
    .unwrap();
    let err = busy_result.expect_err("the query survived its server");
    assert_eq!(
        sqlstate(&err),
        Some("08006"),
        "busy session: {}",
        describe_error(&err)
    );
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    let idle_result = within(
        Duration::from_secs(15),
        "idle session after upstream death",
        idle.simple_query("SELECT 1"),
    )
    .await;
    assert!(
        idle_result.is_err(),
        "the idle session still answers without a server"
    );

    assert!(
        proxy.wait_exit(Duration::ZERO).is_none(),
        "pgward died with its upstream"
    );
    let Err(err) = within(
        Duration::from_secs(20),
        "connect without upstream",
        try_connect(HOST, proxy.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres"),
    )
    .await
    else {
        panic!("connected without a server");
    };
    assert_eq!(sqlstate(&err), Some("08006"), "{}", describe_error(&err));
    // The same at protocol level: an ErrorResponse, then a clean close.
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(&startup_packet(PROTOCOL_3_0, &[("user", TRUST_USER)]))
        .await;
    let answer = raw.until_closed(Duration::from_secs(20)).await;
    assert_eq!(summaries(&answer), vec!["E FATAL 08006"]);
    assert!(proxy.wait_exit(Duration::ZERO).is_none(), "pgward died");
}

// ---------------------------------------------------------------------------
// 11. Bad input and limits
//
// pgward faces untrusted networks: port scanners, wrong protocols, clients
// that never speak, and oversized messages must each be refused cleanly
// without disturbing other sessions.
// ---------------------------------------------------------------------------

/// Limits used by the bad-input tests. The startup timeout is tight only in
/// the test of it: it also bounds a client's own SCRAM computation, which an
/// unoptimised tokio-postgres on two busy cores can stretch past a second.
const TIGHT_LIMITS: &str = "\n  max_message_bytes: 1024";
const SHORT_STARTUP: &str = "\n  startup_timeout_ms: 1000";

/// A fresh login (trust, so no client-side crypto) and a query still work.
async fn assert_still_serving(proxy: &ProxyProcess) {
    let (mut raw, _) = Raw::login(proxy.addr(), "postgres").await;
    assert_eq!(
        first_value(&raw.query("SELECT 'serving'").await).as_deref(),
        Some("serving")
    );
    let client = within(
        T,
        "connect after bad input",
        proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres"),
    )
    .await;
    let row = client.query_one("SELECT 'serving'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "serving");
}

/// Garbage (an HTTP request) before startup: an error at most, then the
/// connection is closed; pgward keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_startup_is_closed() {
    let proxy = proxy_with_limits(TIGHT_LIMITS);
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = raw.until_closed(Duration::from_secs(5)).await;
    assert!(
        answer.is_empty() || summaries(&answer) == ["E FATAL 08P01"],
        "{:?}",
        summaries(&answer)
    );
    // A huge announced length is refused without waiting for the bytes.
    let mut raw = Raw::connect(proxy.addr()).await;
    raw.send(&i32::MAX.to_be_bytes()).await;
    let answer = raw.until_closed(Duration::from_secs(5)).await;
    assert!(answer.len() <= 1, "{:?}", summaries(&answer));
    assert_still_serving(&proxy).await;
}

/// A startup packet for protocol 4.0 gets 0A000 (feature not supported), as
/// PostgreSQL answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_4_is_refused_with_0a000() {
    let pg = PgCluster::shared();
    let proxy = proxy_with_limits(TIGHT_LIMITS);
    let packet = startup_packet(4 << 16, &[("user", TRUST_USER), ("database", "postgres")]);
    let mut results = Vec::new();
    for addr in [pg.addr(), proxy.addr()] {
        let mut raw = Raw::connect(addr).await;
        raw.send(&packet).await;
        results.push(summaries(&raw.until_closed(Duration::from_secs(5)).await));
    }
    assert_eq!(results[1], vec!["E FATAL 0A000"]);
    assert_eq!(results[1], results[0], "through pgward vs direct");
    assert_still_serving(&proxy).await;
}

/// Without TLS configured, SSLRequest and GSSENCRequest are answered 'N' and
/// the client may go on in plain text on the same connection (libpq's
/// sslmode=prefer and gssencmode=prefer rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_answered_n() {
    let proxy = proxy_with_limits(TIGHT_LIMITS);
    for requests in [
        vec![SSL_REQUEST],
        vec![GSSENC_REQUEST],
        vec![GSSENC_REQUEST, SSL_REQUEST],
    ] {
        let mut raw = Raw::connect(proxy.addr()).await;
        for code in &requests {
            raw.send(&code_packet(*code)).await;
            assert_eq!(raw.read_byte().await, Some(b'N'), "answer to {code}");
        }
        raw.send(&startup_packet(
            PROTOCOL_3_0,
            &[("user", TRUST_USER), ("database", "postgres")],
        ))
        .await;
        let startup = raw.until_ready().await;
        assert_eq!(startup[0].tag, b'R', "{:?}", summaries(&startup));
        assert_eq!(
            first_value(&raw.query("SELECT 'plain'").await).as_deref(),
            Some("plain")
        );
    }
    // psql: sslmode=prefer falls back to plain, sslmode=require fails.
    let base = conninfo(proxy.port(), SCRAM_USER, "postgres");
    let out = psql(
        &format!("{base} sslmode=prefer"),
        SCRAM_PASSWORD,
        &["SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "f");
    let out = psql(
        &format!("{base} sslmode=require"),
        SCRAM_PASSWORD,
        &["SELECT 1"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not support SSL"),
        "{}",
        stderr(&out)
    );
}

/// A client that connects and says nothing is disconnected after
/// limits.startup_timeout_ms (1 s here), and does not hold a server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_startup_timeout() {
    let proxy = proxy_with_limits(SHORT_STARTUP);
    let started = Instant::now();
    let mut silent = Raw::connect(proxy.addr()).await;
    // Also one that stops in the middle of its startup packet.
    let mut halfway = Raw::connect(proxy.addr()).await;
    halfway
        .send(&startup_packet(PROTOCOL_3_0, &[("user", TRUST_USER)])[..6])
        .await;
    let answer = silent.until_closed(Duration::from_secs(10)).await;
    let elapsed = started.elapsed();
    assert!(answer.is_empty(), "{:?}", summaries(&answer));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, startup_timeout_ms is 1000"
    );
    assert!(
        halfway
            .until_closed(Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(
        proxy.wait_for_log("startup timed out", Duration::from_secs(5)),
        "{}",
        proxy.log()
    );
    // Still serving (a trust login: a fast client is well within 1 s).
    let (mut raw, _) = Raw::login(proxy.addr(), "postgres").await;
    assert_eq!(
        first_value(&raw.query("SELECT 'serving'").await).as_deref(),
        Some("serving")
    );
}

/// Statements nested thousands deep (`ARRAY[ARRAY[...]]`) are inspected on
/// threads with stacks big enough for PostgreSQL's parser: the session gets
/// an answer, and pgward, its other sessions and its audit stream live on.
/// (Found by hand: with tokio's default 2 MiB worker stacks, one such Query
/// overflowed the stack and aborted the whole proxy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_statements_do_not_bring_pgward_down() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_deep");
    let proxy = plain_proxy();
    let bystander = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, &db).await;
    for depth in [100i32, 300, 1_000, 3_000, 20_000] {
        let sql = format!(
            "SELECT {}1{}",
            "ARRAY[".repeat(depth as usize),
            "]".repeat(depth as usize)
        );
        let client = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, &db).await;
        // Simple and extended protocol; whether PostgreSQL runs it or says
        // "stack depth limit exceeded" does not matter here, an answer does.
        let simple = within(T, "nested simple Query", client.simple_query(&sql)).await;
        let extended = within(T, "nested Parse", client.query_typed(&sql, &[])).await;
        assert!(
            !client.is_closed(),
            "depth {depth}: the session was dropped ({:?} / {:?})",
            simple.err().map(|e| describe_error(&e)),
            extended.err().map(|e| describe_error(&e))
        );
        let row = within(
            T,
            "bystander",
            bystander.query_one("SELECT $1::int", &[&depth]),
        )
        .await
        .unwrap_or_else(|e| panic!("depth {depth}: pgward died: {}", describe_error(&e)));
        assert_eq!(row.get::<_, i32>(0), depth);
    }
    let records = proxy.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "statement" && r["text_form"] == "withheld"),
        "the 20,000-deep statement is recorded (withheld: not normalizable)"
    );
}

/// A Query, or a Bind, bigger than limits.max_message_bytes (1 KB here) ends
/// that session with 54000; other sessions are untouched; COPY data, which is
/// streamed, is not subject to the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_with_54000() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_limits");
    let proxy = proxy_with_limits(TIGHT_LIMITS);
    let bystander = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let big = "x".repeat(4096);

    let victim = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let err = within(
        T,
        "oversized Query",
        victim.simple_query(&format!("SELECT '{big}'")),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), Some("54000"), "{}", describe_error(&err));
    assert!(
        eventually(Duration::from_secs(5), || async { victim.is_closed() }).await,
        "the session stayed open after an oversized message"
    );

    let victim = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, &db).await;
    let err = within(
        T,
        "oversized Bind",
        victim.query_one("SELECT length($1::text)", &[&big]),
    )
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), Some("54000"), "{}", describe_error(&err));
    assert!(eventually(Duration::from_secs(5), || async { victim.is_closed() }).await);

    let row = bystander
        .query_one("SELECT 'unaffected'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "unaffected");

    // COPY rows of 8 KB each pass.
    let su = proxy.connect(SUPERUSER, SUPERUSER_PASSWORD, &db).await;
    su.batch_execute("CREATE TABLE wide (v text); GRANT ALL ON wide TO PUBLIC")
        .await
        .unwrap();
    let sink = su.copy_in("COPY wide FROM STDIN").await.unwrap();
    let mut sink = pin!(sink);
    let row = format!("{}\n", "w".repeat(8192));
    for _ in 0..10 {
        sink.send(Bytes::from(row.clone())).await.unwrap();
    }
    let n = within(T, "COPY finish", sink.as_mut().finish())
        .await
        .unwrap();
    assert_eq!(n, 10, "COPY data must not be subject to max_message_bytes");
    assert_still_serving(&proxy).await;
}

/// A frame whose length field is below 4 after startup is a protocol
/// violation: pgward answers 08P01 and closes. (PostgreSQL itself closes
/// without a word: it reports "invalid message length" as COMMERROR, to its
/// log only; pgward telling the client why is strictly more helpful.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_frame_length_is_08p01() {
    let pg = PgCluster::shared();
    let proxy = proxy_with_limits(TIGHT_LIMITS);
    let mut results = Vec::new();
    for addr in [pg.addr(), proxy.addr()] {
        let (mut raw, _) = Raw::login(addr, "postgres").await;
        raw.send(&[b'Q', 0, 0, 0, 2]).await;
        results.push(raw.until_closed(Duration::from_secs(10)).await);
    }
    let codes = |msgs: &[Msg]| -> Vec<Option<String>> {
        msgs.iter()
            .filter(|m| m.tag == b'E')
            .map(Msg::sqlstate)
            .collect()
    };
    assert_eq!(
        codes(&results[1]),
        vec![Some("08P01".to_string())],
        "{:?}",
        summaries(&results[1])
    );
    assert!(
        results[0].iter().all(|m| m.tag == b'E'),
        "direct: {:?}",
        summaries(&results[0])
    );
    assert_still_serving(&proxy).await;
}

// ---------------------------------------------------------------------------
// 12. SIGTERM drain
//
// Deployments stop pgward with SIGTERM: it must stop accepting, give
// sessions the drain time, then close them with an error and exit 0.
// ---------------------------------------------------------------------------

/// Sends SIGTERM and waits (off the async threads) for pgward to exit.
async fn terminate(
    mut proxy: ProxyProcess,
    limit: Duration,
) -> (ProxyProcess, std::process::ExitStatus, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let status = proxy.terminate_and_wait(limit);
        (proxy, status, started.elapsed())
    })
    .await
    .unwrap()
}

/// With an idle session open, pgward waits drain_timeout_ms (1 s), then
/// closes the session with 57P01 and exits 0; the server connection goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_closes_idle_sessions() {
    let pg = PgCluster::shared();
    let observer = pg.connect_superuser("postgres").await;
    let proxy = proxy_with_limits("\n  drain_timeout_ms: 1000");
    let client = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let (mut raw, _) = Raw::login(proxy.addr(), "postgres").await;
    let raw_pid: i32 = first_value(&raw.query("SELECT pg_backend_pid()").await)
        .unwrap()
        .parse()
        .unwrap();

    let (proxy, status, elapsed) = terminate(proxy, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}\n{}", proxy.log());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "exited {elapsed:?} after SIGTERM with drain_timeout_ms 1000"
    );
    let farewell = raw.until_closed(Duration::from_secs(5)).await;
    assert_eq!(summaries(&farewell), vec!["E FATAL 57P01"]);
    assert!(
        eventually(Duration::from_secs(5), || async { client.is_closed() }).await,
        "the tokio-postgres session is still open"
    );
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend_state(&observer, raw_pid).await.is_none()
        })
        .await,
        "the server connection outlived pgward"
    );
}

/// Without sessions, SIGTERM exits at once (not after drain_timeout_ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_sessions_exits_promptly() {
    let proxy = proxy_with_limits("\n  drain_timeout_ms: 20000");
    // One finished session, so the exit is not merely "never used".
    drop(proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (proxy, status, elapsed) = terminate(proxy, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}\n{}", proxy.log());
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

/// During the drain a running query finishes normally, new connections are
/// refused, and pgward exits as soon as the last session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_queries_finish() {
    let pg = PgCluster::shared();
    let observer = pg.connect_superuser("postgres").await;
    let proxy = proxy_with_limits("\n  drain_timeout_ms: 20000");
    let client = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let pid = backend_pid(&client).await;
    let task = tokio::spawn(async move {
        let result = client.query_one("SELECT 42 FROM pg_sleep(1.5)", &[]).await;
        (client, result)
    });
    wait_running(&observer, pid, "pg_sleep").await;
    let addr = proxy.addr();
    let started = Instant::now();
    proxy.signal("TERM");
    let refused = eventually(Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "pgward still accepts connections while draining");
    let (client, result) = within(T, "in-flight query", task).await.unwrap();
    assert_eq!(
        result
            .expect("in-flight query failed during the drain")
            .get::<_, i32>(0),
        42
    );
    drop(client);
    let (proxy, status, _) = terminate(proxy, Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}\n{}", proxy.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pgward waited {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// 13. TLS termination
//
// pgward terminates client TLS. SCRAM must keep working with libpq's default
// channel_binding=prefer (pgward withdraws SCRAM-SHA-256-PLUS, whose binding
// would not match the server's end), and a client that insists on channel
// binding must be refused rather than silently downgraded.
// ---------------------------------------------------------------------------

/// A CA and a server certificate for `localhost` / 127.0.0.1, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "pgward test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.use_authority_key_identifier_extension = true;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert_pem = server.signed_by(&key, &issuer).unwrap().pem();
        let key_pem = key.serialize_pem();

        let dir = tempfile::Builder::new()
            .prefix("pgward-relay-tls-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("server.crt"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &key_pem).unwrap();
        Pki {
            dir,
            ca_pem,
            cert_pem,
            key_pem,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `server:` fragment for client-facing TLS (and optionally upstream TLS).
    fn server_yaml(&self, upstream_tls: bool) -> String {
        let mut yaml = format!(
            "\n  tls:\n    cert: '{}'\n    key: '{}'",
            self.path("server.crt").display(),
            self.path("server.key").display()
        );
        if upstream_tls {
            yaml.push_str(&format!(
                "\n  upstream_tls:\n    ca: '{}'",
                self.path("ca.crt").display()
            ));
        }
        yaml
    }

    /// libpq connection string verifying the server as `localhost`.
    fn conninfo(&self, port: u16, user: &str, extra: &str) -> String {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={port} user={user} dbname=postgres \
             sslmode=verify-full sslrootcert={} {extra}",
            self.path("ca.crt").display()
        )
    }

    fn rustls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_postgres_rustls::MakeRustlsConnect::new(config)
    }

    /// tokio-postgres over rustls, verifying `localhost`.
    async fn connect(
        &self,
        port: u16,
        user: &str,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = pg_config("localhost", port, user, password, "postgres");
        config
            .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .ssl_mode(SslMode::Require)
            .channel_binding(binding);
        let (client, connection) = within(T, "TLS connect", config.connect(self.rustls())).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

const SSL_OF_BACKEND: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// psql with sslmode=verify-full and tokio-postgres over rustls reach
/// PostgreSQL through pgward's TLS with SCRAM and the default
/// channel_binding=prefer; channel_binding=require is refused; TLS ends at
/// pgward (the server sees a plain connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_with_scram() {
    let pki = Pki::new();
    let proxy = ProxyProcess::start(
        PgCluster::shared().port(),
        &relay_policy(&pki.server_yaml(false), " {}"),
    );

    for (user, password) in [(SCRAM_USER, SCRAM_PASSWORD), (MD5_USER, MD5_PASSWORD)] {
        let out = psql(
            &pki.conninfo(proxy.port(), user, ""),
            password,
            &["\\conninfo", SSL_OF_BACKEND],
        )
        .await;
        assert!(
            out.status.success(),
            "psql verify-full as {user}: {}\n{}",
            stderr(&out),
            proxy.log()
        );
        let text = stdout(&out);
        assert!(text.contains("SSL connection (protocol: TLSv1.3"), "{text}");
        assert_eq!(
            text.lines().last(),
            Some("f"),
            "TLS must end at pgward: {text}"
        );
    }

    let out = psql(
        &pki.conninfo(proxy.port(), SCRAM_USER, "channel_binding=require"),
        SCRAM_PASSWORD,
        &["SELECT 1"],
    )
    .await;
    assert!(
        !out.status.success(),
        "channel_binding=require succeeded through pgward"
    );
    assert!(stderr(&out).contains("channel binding"), "{}", stderr(&out));

    let client = pki
        .connect(
            proxy.port(),
            SCRAM_USER,
            SCRAM_PASSWORD,
            ChannelBinding::Prefer,
        )
        .await
        .unwrap_or_else(|e| panic!("rustls + SCRAM through pgward: {}", describe_error(&e)));
    let ssl: bool = client.query_one(SSL_OF_BACKEND, &[]).await.unwrap().get(0);
    assert!(!ssl);
    let Err(err) = pki
        .connect(
            proxy.port(),
            SCRAM_USER,
            SCRAM_PASSWORD,
            ChannelBinding::Require,
        )
        .await
    else {
        panic!("channel_binding=require succeeded through pgward");
    };
    assert!(
        describe_error(&err).contains("channel binding"),
        "{}",
        describe_error(&err)
    );

    // A client that does not trust the CA is refused by its own verification.
    let out = psql(
        &format!("host=localhost hostaddr=127.0.0.1 port={} user={SCRAM_USER} dbname=postgres sslmode=verify-full sslrootcert=/dev/null", proxy.port()),
        SCRAM_PASSWORD,
        &["SELECT 1"],
    )
    .await;
    assert!(!out.status.success());
}

/// A private PostgreSQL serving TLS with `pki`'s certificate.
fn tls_cluster(pki: &Pki) -> PgCluster {
    PgCluster::start_with(&PgOptions {
        tls: Some(PemPair {
            cert_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
        }),
        extra_conf: Vec::new(),
    })
}

/// With PostgreSQL also on TLS: directly, channel_binding=require works (so
/// its refusal through pgward is pgward withdrawing PLUS, not the client);
/// pgward with `upstream_tls` reaches PostgreSQL over TLS for a plain client,
/// and MD5 (no channel binding) works with TLS on both legs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_and_direct_channel_binding_control() {
    let pki = Pki::new();
    let private = tls_cluster(&pki);

    let out = psql(
        &pki.conninfo(private.port(), SCRAM_USER, "channel_binding=require"),
        SCRAM_PASSWORD,
        &[SSL_OF_BACKEND],
    )
    .await;
    assert!(
        out.status.success(),
        "direct channel_binding=require: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "t");

    let proxy = ProxyProcess::start(private.port(), &relay_policy(&pki.server_yaml(true), " {}"));
    let out = psql(
        &format!(
            "{} sslmode=disable",
            conninfo(proxy.port(), SCRAM_USER, "postgres")
        ),
        SCRAM_PASSWORD,
        &[SSL_OF_BACKEND],
    )
    .await;
    assert!(
        out.status.success(),
        "plain client, TLS upstream: {}\n{}",
        stderr(&out),
        proxy.log()
    );
    assert_eq!(
        stdout(&out).trim(),
        "t",
        "pgward must reach PostgreSQL over TLS"
    );

    let out = psql(
        &pki.conninfo(proxy.port(), MD5_USER, ""),
        MD5_PASSWORD,
        &[SSL_OF_BACKEND],
    )
    .await;
    assert!(
        out.status.success(),
        "TLS both sides, MD5: {}\n{}",
        stderr(&out),
        proxy.log()
    );
    assert_eq!(stdout(&out).trim(), "t");
}

/// A known limitation, pinned down: with TLS on both legs, SCRAM clients must
/// disable channel binding. pgward withholds SCRAM-SHA-256-PLUS (the binding
/// would be to pgward's certificate), so a TLS client declares "I support
/// binding but the server does not" in its signed first message, and
/// PostgreSQL, which does offer PLUS on its TLS leg, must reject that as a
/// possible downgrade. The refusal is clean (28000, no hang), and
/// `channel_binding=disable` works. README documents it and pgward warns at
/// startup when configured this way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_sides_scram_needs_channel_binding_disabled() {
    let pki = Pki::new();
    let private = tls_cluster(&pki);
    let proxy = ProxyProcess::start(private.port(), &relay_policy(&pki.server_yaml(true), " {}"));

    let refused = pki
        .connect(
            proxy.port(),
            SCRAM_USER,
            SCRAM_PASSWORD,
            ChannelBinding::Prefer,
        )
        .await
        .map(|_| ())
        .expect_err("channel_binding=prefer cannot work with TLS on both legs");
    assert_eq!(
        sqlstate(&refused),
        Some("28000"),
        "{}",
        describe_error(&refused)
    );

    let client = pki
        .connect(
            proxy.port(),
            SCRAM_USER,
            SCRAM_PASSWORD,
            ChannelBinding::Disable,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "channel_binding=disable: {}\n{}",
                describe_error(&e),
                proxy.log()
            )
        });
    let backend_ssl: bool = client.query_one(SSL_OF_BACKEND, &[]).await.unwrap().get(0);
    assert!(backend_ssl, "pgward's leg to PostgreSQL must be TLS here");
    assert!(
        proxy.log().contains("channel binding"),
        "pgward should warn about this configuration at startup:\n{}",
        proxy.log()
    );
}

// ---------------------------------------------------------------------------
// 14. pgbench
//
// A standard load tool in each of its query modes (simple, extended,
// prepared) exercises the relay under concurrency.
// ---------------------------------------------------------------------------

/// `pgbench -S` with 4 clients × 200 transactions in each query mode
/// completes through pgward without a failed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_every_query_mode() {
    let pg = PgCluster::shared();
    let db = pg.create_database("relay_pgbench");
    let proxy = plain_proxy();
    let run = |port: u16, args: Vec<String>| {
        let mut cmd = pg_client_command("pgbench");
        cmd.env("PGPASSWORD", SUPERUSER_PASSWORD)
            .args(["-h", HOST, "-p", &port.to_string(), "-U", SUPERUSER])
            .args(args)
            .arg(&db);
        async move {
            within(Duration::from_secs(180), "pgbench", cmd.output())
                .await
                .expect("cannot run pgbench")
        }
    };
    let init = run(
        pg.port(),
        vec!["-i".into(), "-q".into(), "-s".into(), "1".into()],
    )
    .await;
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));

    for mode in ["simple", "extended", "prepared"] {
        let out = run(
            proxy.port(),
            ["-S", "-M", mode, "-c", "4", "-j", "2", "-t", "200"]
                .map(String::from)
                .to_vec(),
        )
        .await;
        let text = stdout(&out);
        assert!(
            out.status.success(),
            "pgbench -M {mode} through pgward: {}\n{text}\n--- pgward log ---\n{}",
            stderr(&out),
            proxy.log()
        );
        assert!(
            text.contains("number of transactions actually processed: 800/800"),
            "-M {mode}:\n{text}"
        );
        assert!(
            text.contains("number of failed transactions: 0 "),
            "-M {mode}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// 15. FunctionCall
//
// The FunctionCall message names a function by OID and carries no SQL, so
// pgward cannot see what it does: it is relayed for unrestricted identities
// and refused (fail closed) for restricted ones, with the session intact.
// ---------------------------------------------------------------------------

fn function_call(oid: u32) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&0i16.to_be_bytes()); // argument format codes
    body.extend_from_slice(&0i16.to_be_bytes()); // arguments
    body.extend_from_slice(&0i16.to_be_bytes()); // result format: text
    frame(b'F', &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_is_relayed_or_refused_by_class() {
    let pg = PgCluster::shared();
    let su = pg.connect_superuser("postgres").await;
    let oid: u32 = su
        .query_one("SELECT 'pg_backend_pid'::regproc::oid", &[])
        .await
        .unwrap()
        .get(0);

    let open = plain_proxy();
    let (mut raw, _) = Raw::login(open.addr(), "postgres").await;
    raw.send(&function_call(oid)).await;
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "VZ", "{:?}", summaries(&msgs));

    let restricted = ProxyProcess::start(
        pg.port(),
        "identities:\n  default_class: locked\n  classes:\n    locked:\n      restricted: true\n",
    );
    let (mut raw, _) = Raw::login(restricted.addr(), "postgres").await;
    raw.send(&function_call(oid)).await;
    let msgs = raw.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{:?}", summaries(&msgs));
    assert_eq!(
        msgs[0].sqlstate().as_deref(),
        Some("42501"),
        "{:?}",
        summaries(&msgs)
    );
    assert!(
        msgs[0]
            .field(b'M')
            .unwrap_or_default()
            .contains("FunctionCall")
    );
    assert_eq!(msgs[1].body, b"I");
    let msgs = raw.query("SELECT 41 + 1").await;
    assert_eq!(
        first_value(&msgs).as_deref(),
        Some("42"),
        "{:?}",
        summaries(&msgs)
    );
}
