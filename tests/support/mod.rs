//! Test rig shared by every integration test (`mod support;`).
//!
//! It gives a test a real PostgreSQL server ([`PgCluster`]), the real pgward
//! binary in front of it ([`ProxyProcess`]) and client connections
//! ([`connect`] and friends). Everything runs on loopback, in temporary
//! directories, and is torn down even when the test process dies abruptly.
//!
//! # One cluster per test binary
//!
//! `initdb` plus server start costs about a second of the two CI cores, so the
//! tests of one binary share a cluster, [`PgCluster::shared`], and isolate
//! themselves with a database each ([`PgCluster::create_database`],
//! [`PgCluster::demo_database`]). Roles are cluster-wide, which is why the
//! auth-test roles are made once at cluster start and `sql/demo.sql` tolerates
//! being loaded into several databases at once. A test that must stop or
//! break its server starts a private one with [`PgCluster::start`].
//!
//! # Cleanup: a watchdog per server and per proxy
//!
//! A shared cluster lives in a `static`, and Rust never drops statics, so
//! `Drop` cannot be what stops it; a test binary can also be killed
//! (timeout, Ctrl-C, SIGKILL) before any destructor runs. So every cluster
//! and every proxy gets a tiny `/bin/sh` watchdog whose stdin is a pipe from
//! the test process. The test process never writes to it; it only holds the
//! write end. When the process exits, however it exits, the kernel closes
//! that end, the watchdog's `read` sees end-of-file, and it stops what it
//! guards: postgres gets SIGQUIT (immediate shutdown), then SIGKILL, and the
//! temporary directory is removed; a proxy gets SIGTERM, then SIGKILL, and
//! its directory (policy file, log) is removed. The
//! watchdog ignores SIGINT/SIGTERM/SIGHUP/SIGQUIT so that the Ctrl-C or
//! `timeout` that killed the tests does not kill it before it has cleaned up,
//! and it checks `/proc/PID/comm` before signalling so that a recycled PID is
//! left alone. Rust opens its pipes close-on-exec, so no other child process
//! inherits the write end and keeps the watchdog waiting.
//!
//! `Drop` of a private [`PgCluster`] closes the pipe and waits for the
//! watchdog, so cleanup is synchronous there. [`ProxyProcess`] stops its
//! child itself in `Drop` (it can wait for it, the watchdog cannot) and then
//! disarms the watchdog by writing a line to it.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root
//! (CI does), the server side runs as the `postgres` OS user through
//! `runuser`, and its directory is created under `/tmp` (a `TMPDIR` under
//! `/root` would not be reachable by that user) and chowned to it. As any
//! other user everything runs as that user.
//!
//! # Authentication
//!
//! TCP (`127.0.0.1`) requires a password, with the method fixed per role so
//! the auth relay can be tested against each: `md5_user` MD5, `clear_user`
//! cleartext, `trust_user` none, everyone else (the `postgres` superuser,
//! `scram_user`, `dragonfly_app`) SCRAM-SHA-256. The Unix socket trusts
//! everyone: it is the rig's own back door for setup through `psql`; whatever
//! is under test goes over TCP.

#![allow(dead_code)] // each test binary uses a different part of the rig

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config, NoTls};

/// Loopback address everything listens on.
pub const HOST: &str = "127.0.0.1";

/// Name of the audit file in a [`ProxyProcess`]'s directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// Superuser, authenticated with SCRAM over TCP.
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "postgres";
/// Non-superuser whose password is stored as SCRAM and checked with SCRAM.
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASSWORD: &str = "scram_password";
/// Non-superuser whose password is stored as MD5 and checked with MD5.
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5_password";
/// Non-superuser checked with cleartext `password` authentication.
pub const CLEAR_USER: &str = "clear_user";
pub const CLEAR_PASSWORD: &str = "clear_password";
/// Non-superuser let in without any password (`trust`).
pub const TRUST_USER: &str = "trust_user";
/// The worker role of `sql/demo.sql`.
pub const WORKER_USER: &str = "dragonfly_app";
pub const WORKER_PASSWORD: &str = "dragonfly";

/// How long a server may take to start before the test fails. Generous: CI
/// has two cores and may be compiling or running other test threads.
const PG_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long pgward may take to accept TCP connections.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Between SIGTERM and SIGKILL when a proxy is dropped. Short on purpose:
/// `Drop` blocks the test's runtime, so the test's own open sessions cannot
/// close and pgward would drain them for its whole drain timeout; a test
/// that cares about graceful exit calls `terminate_and_wait*` itself.
const PROXY_KILL_GRACE: Duration = Duration::from_secs(1);
/// Every client connection attempt gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a file in the crate, e.g. `repo_path("sql/demo.sql")`.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// Options for a private cluster; [`PgCluster::shared`] uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Serve TLS with this certificate chain and key (PEM text). `host` lines
    /// in pg_hba match both TLS and plain connections, so plain TCP keeps
    /// working; clients choose with their sslmode.
    pub tls: Option<PemPair>,
    /// Extra `postgresql.conf` lines, appended last (so they win).
    pub extra_conf: Vec<String>,
}

/// A certificate chain and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A throwaway PostgreSQL cluster on a free loopback port. See the module
/// documentation for how it is shared and cleaned up.
pub struct PgCluster {
    port: u16,
    /// Temporary directory holding everything: `data/`, `sock/`, `server.log`.
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    bin: PathBuf,
    version: String,
    /// `Some` while the watchdog is armed; dropping it triggers cleanup.
    watchdog: Option<Watchdog>,
    /// Serialises loading of `sql/demo.sql` within this process: its role
    /// creation tolerates races, but there is no point in racing.
    demo_lock: Mutex<()>,
}

impl PgCluster {
    /// The cluster shared by all tests of this test binary, started on first
    /// use. If starting it failed, every test that asks for it fails with the
    /// same message (instead of each retrying a slow start).
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        match SHARED.get_or_init(|| PgCluster::try_start(&PgOptions::default())) {
            Ok(cluster) => cluster,
            Err(message) => panic!("the shared PostgreSQL cluster could not start:\n{message}"),
        }
    }

    /// A private cluster with default options, stopped and deleted on drop.
    pub fn start() -> PgCluster {
        PgCluster::start_with(&PgOptions::default())
    }

    /// A private cluster, stopped and deleted on drop.
    pub fn start_with(options: &PgOptions) -> PgCluster {
        PgCluster::try_start(options).unwrap_or_else(|message| panic!("{message}"))
    }

    fn try_start(options: &PgOptions) -> Result<PgCluster, String> {
        let bin = find_pg_bin()?;
        let as_root = running_as_root();
        let tmp = if as_root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = tempfile::Builder::new()
            .prefix("pgward-pg-")
            .tempdir_in(&tmp)
            .map_err(|e| {
                format!(
                    "cannot create a temporary directory in {}: {e}",
                    tmp.display()
                )
            })?
            // From here on the watchdog, not TempDir, owns removal.
            .keep();
        let data = root.join("data");
        let socket_dir = root.join("sock");
        let log_file = root.join("server.log");

        // Armed before anything is started so that nothing can outlive us.
        let watchdog = Watchdog::spawn(PG_WATCHDOG, &[root.as_os_str(), data.as_os_str()])
            .map_err(|e| format!("cannot start the cleanup watchdog (/bin/sh): {e}"))?;
        let mut cluster = PgCluster {
            port: 0,
            root,
            data,
            socket_dir,
            log_file,
            bin,
            version: String::new(),
            watchdog: Some(watchdog),
            demo_lock: Mutex::new(()),
        };
        // On error `cluster` drops here, which runs the watchdog's cleanup.
        cluster.init(as_root, options)?;
        cluster.start_server(options)?;
        cluster.bootstrap_roles()?;
        Ok(cluster)
    }

    fn init(&mut self, as_root: bool, options: &PgOptions) -> Result<(), String> {
        fs::create_dir(&self.socket_dir).map_err(|e| format!("mkdir sock: {e}"))?;
        if as_root {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.root)
                .output()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "chown -R postgres {} failed (is the postgresql package installed, \
                     which creates the `postgres` user?): {}",
                    self.root.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.version = fs::read_to_string(self.data.join("PG_VERSION"))
            .unwrap_or_default()
            .trim()
            .to_string();

        // Per-user lines first: pg_hba.conf is first match wins.
        let hba = format!(
            "# written by tests/support/mod.rs\n\
             local all all trust\n\
             host all {MD5_USER} 127.0.0.1/32 md5\n\
             host all {CLEAR_USER} 127.0.0.1/32 password\n\
             host all {TRUST_USER} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
        );
        // Rewriting files that exist keeps their owner (postgres) and mode.
        fs::write(self.data.join("pg_hba.conf"), hba).map_err(|e| format!("pg_hba.conf: {e}"))?;

        if let Some(tls) = &options.tls {
            for (name, pem) in [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)] {
                let path = self.data.join(name);
                fs::write(&path, pem).map_err(|e| format!("{name}: {e}"))?;
                // postgres refuses a key readable by others.
                run_quiet("chmod", &[OsStr::new("0600"), path.as_os_str()])?;
                if as_root {
                    run_quiet(
                        "chown",
                        &[OsStr::new("postgres:postgres"), path.as_os_str()],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Picks a free port and starts the server, retrying with another port if
    /// the one picked was taken in between (parallel tests pick ports too).
    fn start_server(&mut self, options: &PgOptions) -> Result<(), String> {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            self.port = free_port();
            self.write_port_conf(options)?;
            let out = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", &PG_START_TIMEOUT.as_secs().to_string(), "start"])
                .output()
                .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
            if out.status.success() && self.wait_accepting(Duration::from_secs(10)) {
                return Ok(());
            }
            last_error = format!(
                "pg_ctl start failed ({}):\n{}{}\n--- server log ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail(60)
            );
            if !self.log_tail(20).contains("could not bind") {
                break;
            }
        }
        Err(last_error)
    }

    fn write_port_conf(&self, options: &PgOptions) -> Result<(), String> {
        // postgresql.conf: the last setting of a name wins, so rewriting the
        // rig's block at each attempt means keeping initdb's part intact.
        let path = self.data.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).map_err(|e| format!("postgresql.conf: {e}"))?;
        const MARK: &str = "\n# --- pgward test rig ---\n";
        if let Some(at) = text.find(MARK) {
            text.truncate(at);
        }
        text.push_str(MARK);
        let mut lines = vec![
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", self.socket_dir.display()),
            // Durability is worthless for a throwaway cluster; speed is not.
            "fsync = off".to_string(),
            "synchronous_commit = off".to_string(),
            "full_page_writes = off".to_string(),
            "shared_buffers = 32MB".to_string(),
            "max_connections = 200".to_string(),
            "timezone = 'UTC'".to_string(),
            "log_timezone = 'UTC'".to_string(),
            "log_connections = on".to_string(),
            "log_line_prefix = '%m [%p] %q%u@%d '".to_string(),
        ];
        if options.tls.is_some() {
            lines.push("ssl = on".to_string());
        }
        lines.extend(options.extra_conf.iter().cloned());
        text.push_str(&lines.join("\n"));
        text.push('\n');
        fs::write(&path, text).map_err(|e| format!("postgresql.conf: {e}"))
    }

    fn wait_accepting(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The auth-test roles; see the module documentation.
    fn bootstrap_roles(&self) -> Result<(), String> {
        let sql = format!(
            "ALTER ROLE {SUPERUSER} PASSWORD '{SUPERUSER_PASSWORD}';\n\
             SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}';\n\
             CREATE ROLE {CLEAR_USER} LOGIN PASSWORD '{CLEAR_PASSWORD}';\n\
             CREATE ROLE {TRUST_USER} LOGIN;\n\
             SET password_encryption = 'md5';\n\
             CREATE ROLE {MD5_USER} LOGIN PASSWORD '{MD5_PASSWORD}';\n"
        );
        let out = self.psql_stdin("postgres", SUPERUSER, &sql);
        if out.status.success() {
            Ok(())
        } else {
            Err(self.describe_failure("creating the test roles", &out))
        }
    }

    /// A command for the server-side tools (initdb, pg_ctl), run as the
    /// `postgres` OS user when we are root.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        clear_pg_env(&mut cmd);
        // The postgres user may not be able to enter our working directory
        // (initdb complains); the temporary root is its own.
        cmd.current_dir(&self.root).stdin(Stdio::null());
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `host:port`, the form pgward's `--upstream` takes.
    pub fn upstream(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// Major version, e.g. "15".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The temporary directory holding everything; removed at cleanup.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// PID of the postmaster, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Directory of the Unix socket (trust auth for everyone).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Directory of the PostgreSQL binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// `postgres://postgres:postgres@127.0.0.1:PORT/db` (SCRAM over TCP).
    pub fn superuser_url(&self, db: &str) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, db)
    }

    /// A TCP URL for any role. Credentials are used verbatim: the rig's own
    /// names and passwords need no percent-encoding.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{HOST}:{}/{db}", self.port)
    }

    /// Superuser client over TCP (SCRAM), straight to PostgreSQL.
    pub async fn connect_superuser(&self, db: &str) -> Client {
        connect(HOST, self.port, SUPERUSER, SUPERUSER_PASSWORD, db).await
    }

    /// Client for any role over TCP, straight to PostgreSQL.
    pub async fn connect_as(&self, user: &str, password: &str, db: &str) -> Client {
        connect(HOST, self.port, user, password, db).await
    }

    /// Runs `sql` with `psql` over the Unix socket (trust) as `user`. Several
    /// statements may be given; they run in one implicit transaction unless
    /// they manage their own. `ON_ERROR_STOP` is on, so a failure is a
    /// non-zero exit status. The output is unaligned, tuples only, `|`
    /// separated, for easy assertions.
    pub fn psql(&self, db: &str, user: &str, sql: &str) -> Output {
        self.psql_command(db, user)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("cannot run psql")
    }

    /// Like [`PgCluster::psql`], but panics (showing psql's stderr and the
    /// server log) unless it succeeds, and returns stdout.
    pub fn psql_ok(&self, db: &str, user: &str, sql: &str) -> String {
        let out = self.psql(db, user, sql);
        if !out.status.success() {
            panic!(
                "{}",
                self.describe_failure(&format!("psql -c {sql:?}"), &out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a script given on stdin (so `psql` meta-commands work).
    fn psql_stdin(&self, db: &str, user: &str, script: &str) -> Output {
        let mut child = self
            .psql_command(db, user)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        stdin
            .write_all(script.as_bytes())
            .expect("cannot write to psql");
        drop(stdin);
        child.wait_with_output().expect("psql did not finish")
    }

    fn psql_command(&self, db: &str, user: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        clear_pg_env(&mut cmd);
        cmd.arg("-X") // ignore ~/.psqlrc
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-F", "|"])
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", user, "-d", db])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs an SQL file as the superuser with `ON_ERROR_STOP`; panics with
    /// psql's stderr and the server log on failure. Returns stdout.
    pub fn run_sql_file(&self, db: &str, path: &Path) -> String {
        let out = self
            .psql_command(db, SUPERUSER)
            .arg("-f")
            .arg(path)
            .output()
            .expect("cannot run psql");
        if !out.status.success() {
            panic!(
                "{}",
                self.describe_failure(&format!("loading {}", path.display()), &out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an empty database `name` (dropping any leftover of that name),
    /// owned by the superuser. Names are limited to `[a-z0-9_]` so they never
    /// need quoting. Returns the name, for chaining.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() < 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?} must be 1-63 characters of [a-z0-9_]"
        );
        // Two -c: CREATE DATABASE cannot share a transaction with anything.
        let out = self
            .psql_command("postgres", SUPERUSER)
            .arg("-c")
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("cannot run psql");
        if !out.status.success() {
            panic!(
                "{}",
                self.describe_failure(&format!("creating database {name}"), &out)
            );
        }
        name.to_string()
    }

    /// A fresh database `name` loaded with `sql/demo.sql`: roles
    /// `dragonfly_app`/`service_role`, schemas ops/intake/enforcement/public,
    /// forced RLS keyed on `app.current_tenant`, tenants `acme` and `globex`.
    pub fn demo_database(&self, name: &str) -> String {
        self.create_database(name);
        let _serial = self.demo_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.run_sql_file(name, &repo_path("sql/demo.sql"));
        name.to_string()
    }

    /// Loads `sql/test_grants.sql` into `db`: the worker may now write
    /// everything, as far as PostgreSQL is concerned.
    pub fn grant_worker_writes(&self, db: &str) {
        self.run_sql_file(db, &repo_path("sql/test_grants.sql"));
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    fn describe_failure(&self, what: &str, out: &Output) -> String {
        format!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}\n--- server log (last 40 lines, {}) ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_file.display(),
            self.log_tail(40)
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- PostgreSQL server log (last 40 lines) ---\n{}",
                self.log_tail(40)
            );
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.fire_and_wait();
        }
    }
}

/// Watchdog for a cluster: $1 is the temporary root, $2 the data directory.
const PG_WATCHDOG: &str = r#"
trap '' HUP INT QUIT TERM PIPE
if read -r _; then exit 0; fi
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    # A zombie is as good as dead (init may be slow to reap it).
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null)
    [ "$state" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = postgres ]
}
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
case "$pid" in ''|*[!0-9]*) pid= ;; esac
if [ -n "$pid" ] && alive "$pid"; then
    kill -QUIT "$pid" 2>/dev/null
    n=0
    while alive "$pid" && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
fi
rm -rf "$1"
"#;

/// Watchdog for a proxy: $1 is its PID, $2 its temporary directory.
const PROXY_WATCHDOG: &str = r#"
trap '' HUP INT QUIT TERM PIPE
if read -r _; then exit 0; fi
alive() {
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null)
    [ "$state" != Z ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = pgward ]
}
if alive "$1"; then
    kill -TERM "$1" 2>/dev/null
    n=0
    while alive "$1" && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    if alive "$1"; then kill -KILL "$1" 2>/dev/null; fi
fi
rm -rf "$2"
"#;

/// A `/bin/sh` script that acts when our end of its stdin closes: see the
/// module documentation.
struct Watchdog {
    stdin: ChildStdin,
    child: Child,
}

impl Watchdog {
    fn spawn(script: &str, args: &[&OsStr]) -> std::io::Result<Watchdog> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("pgward-test-watchdog") // $0
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("watchdog stdin is piped");
        Ok(Watchdog { stdin, child })
    }

    /// Close the pipe (the watchdog does its job) and wait until it is done.
    fn fire_and_wait(self) {
        let Watchdog { stdin, mut child } = self;
        drop(stdin);
        let _ = child.wait();
    }

    /// Tell the watchdog there is nothing left to do, and reap it.
    fn disarm(self) {
        let Watchdog {
            mut stdin,
            mut child,
        } = self;
        let _ = stdin.write_all(b"disarm\n");
        drop(stdin);
        let _ = child.wait();
    }
}

/// Finds the PostgreSQL server binaries: `$PGWARD_PG_BIN`, else the directory
/// of `initdb` on `PATH` (symlinks resolved), else the newest
/// `/usr/lib/postgresql/N/bin` (Debian keeps them off `PATH`).
pub fn find_pg_bin() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(dir) = std::env::var_os("PGWARD_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PGWARD_PG_BIN={} lacks initdb, pg_ctl, postgres or psql",
                dir.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if let Ok(real) = fs::canonicalize(&initdb)
                && let Some(real_dir) = real.parent()
                && complete(real_dir)
            {
                return Ok(real_dir.to_path_buf());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries not found (no initdb on PATH, nothing in \
         /usr/lib/postgresql/*/bin). Install them: \
         apt-get install -y postgresql postgresql-contrib (scripts/test.sh does)"
            .to_string()
    })
}

/// True when our effective uid is 0. Read from /proc to avoid a libc
/// dependency for one call.
pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago. Another process may take it
/// before we bind it again; [`PgCluster`] retries on that, and for pgward the
/// window is small enough in practice.
pub fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// libpq honours PG* environment variables; a developer's PGHOST or
/// PGSSLMODE must not redirect the rig's own psql and pg_ctl calls.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
}

fn run_quiet(program: &str, args: &[&OsStr]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// pgward
// ---------------------------------------------------------------------------

/// The pgward binary of this crate, run as
/// `pgward serve --config <file> --listen 127.0.0.1:<port> --upstream <addr>`
/// with `RUST_LOG=info` and its stdout/stderr in a log file.
///
/// Starting it blocks the calling thread (up to 10 s). That is fine inside
/// `#[tokio::test]`: pgward runs in its own process, not on the test's
/// runtime.
pub struct ProxyProcess {
    port: u16,
    child: Child,
    exited: Option<ExitStatus>,
    log_file: PathBuf,
    watchdog: Option<Watchdog>,
    /// Holds the policy file and the log; removed on drop.
    dir: tempfile::TempDir,
}

/// Options for [`ProxyProcess`]; [`ProxyProcess::start`] covers the usual case.
pub struct ProxyBuilder {
    upstream: String,
    policy_yaml: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wait_ready: bool,
}

impl ProxyBuilder {
    /// The policy file's text (default `server: {}`).
    pub fn policy(mut self, yaml: &str) -> Self {
        self.policy_yaml = yaml.to_string();
        self
    }

    /// An extra command-line argument, after the standard ones.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// An environment variable (e.g. `RUST_LOG=debug` overrides the default).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Don't wait for the port to accept connections (for tests of startup
    /// failures: then use [`ProxyProcess::wait_exit`]).
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    pub fn start(self) -> ProxyProcess {
        let dir = tempfile::Builder::new()
            .prefix("pgward-proxy-")
            .tempdir()
            .expect("cannot create a temporary directory for pgward");
        let config = dir.path().join("policy.yaml");
        fs::write(&config, &self.policy_yaml).expect("cannot write policy.yaml");
        let log_file = dir.path().join("pgward.log");
        let log = File::create(&log_file).expect("cannot create pgward.log");
        let log_err = log.try_clone().expect("cannot clone the log handle");
        let port = free_port();
        let listen = format!("{HOST}:{port}");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgward"));
        cmd.arg("serve").arg("--config").arg(&config).args([
            "--listen",
            &listen,
            "--upstream",
            &self.upstream,
        ]);
        // Every proxy audits into its own directory, never the checkout's.
        if !self.args.iter().any(|a| a == "--audit-file") {
            cmd.arg("--audit-file").arg(dir.path().join(AUDIT_FILE));
        }
        cmd.args(&self.args)
            .env("RUST_LOG", "info")
            // The log is read by tests and people, not a terminal: no ANSI
            // colour codes (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_pgward")));
        let pid = child.id().to_string();
        let watchdog = Watchdog::spawn(PROXY_WATCHDOG, &[OsStr::new(&pid), dir.path().as_os_str()])
            .expect("cannot start the cleanup watchdog (/bin/sh)");
        let mut proxy = ProxyProcess {
            port,
            child,
            exited: None,
            log_file,
            watchdog: Some(watchdog),
            dir,
        };
        if self.wait_ready {
            proxy.wait_ready(PROXY_START_TIMEOUT);
        }
        proxy
    }
}

impl ProxyProcess {
    /// pgward in front of `127.0.0.1:<upstream_port>` with this policy.
    pub fn start(upstream_port: u16, policy_yaml: &str) -> ProxyProcess {
        ProxyProcess::builder(&format!("{HOST}:{upstream_port}"))
            .policy(policy_yaml)
            .start()
    }

    /// Full control: any upstream address (even one nobody listens on),
    /// extra arguments and environment.
    pub fn builder(upstream: &str) -> ProxyBuilder {
        ProxyBuilder {
            upstream: upstream.to_string(),
            policy_yaml: "server: {}\n".to_string(),
            args: Vec::new(),
            env: Vec::new(),
            wait_ready: true,
        }
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let addr = self.addr();
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot poll pgward") {
                self.exited = Some(status);
                panic!(
                    "pgward exited ({status}) before accepting connections on {addr}\n\
                     --- pgward log ---\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "pgward did not accept connections on {addr} within {timeout:?}\n\
                     --- pgward log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A URL through pgward.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@{HOST}:{}/{db}", self.port)
    }

    /// Client through pgward.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> Client {
        connect(HOST, self.port, user, password, db).await
    }

    /// Everything pgward has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_file) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Path of the log file (inside a directory removed on drop).
    pub fn log_path(&self) -> &Path {
        &self.log_file
    }

    /// The audit file this proxy writes (unless the test chose its own).
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join(AUDIT_FILE)
    }

    /// The audit records written so far, one JSON value per line (a torn
    /// last line is skipped).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Directory holding policy.yaml and the log, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the log contains `needle`; false on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut offset = 0u64;
        let mut seen = String::new();
        loop {
            // Read only what is new, so long logs stay cheap to poll.
            if let Ok(mut file) = File::open(&self.log_file)
                && file.seek(SeekFrom::Start(offset)).is_ok()
            {
                let mut chunk = Vec::new();
                if let Ok(n) = file.read_to_end(&mut chunk) {
                    offset += n as u64;
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
            if seen.contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGTERM and waits for the exit, blocking the thread. Panics,
    /// with the log, if pgward is still running after `timeout` (it is then
    /// killed by `Drop`).
    ///
    /// Blocking matters in `#[tokio::test]` (a current-thread runtime):
    /// while this waits, no client task of the test runs, so open sessions
    /// neither finish nor close and pgward drains them until its
    /// `limits.drain_timeout_ms`. Graceful-shutdown tests with live sessions
    /// want [`ProxyProcess::terminate_and_wait_async`].
    pub fn terminate_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal("TERM");
        match self.wait_exit(timeout) {
            Some(status) => status,
            None => self.panic_still_running(timeout),
        }
    }

    /// [`ProxyProcess::terminate_and_wait`] that lets the test's other tasks
    /// (its client connections) run meanwhile.
    pub async fn terminate_and_wait_async(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal("TERM");
        match self.wait_exit_async(timeout).await {
            Some(status) => status,
            None => self.panic_still_running(timeout),
        }
    }

    fn panic_still_running(&self, timeout: Duration) -> ! {
        panic!(
            "pgward did not exit within {timeout:?} of SIGTERM\n--- pgward log ---\n{}",
            self.log()
        )
    }

    /// Waits up to `timeout` for pgward to exit by itself (blocking).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`ProxyProcess::wait_exit`] without blocking the runtime.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status if pgward has exited (reaping it).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("cannot poll pgward");
        }
        self.exited
    }

    /// Sends a signal by name ("TERM", "INT", "HUP", ...) via kill(1).
    pub fn signal(&self, name: &str) {
        if self.exited.is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.signal("TERM");
            if self.wait_exit(PROXY_KILL_GRACE).is_none() {
                let _ = self.child.kill();
                self.exited = self.child.wait().ok();
            }
        }
        // Our child is reaped: its PID may be reused now, so the watchdog
        // must not signal it any more.
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.disarm();
        }
        if std::thread::panicking() {
            eprintln!("--- pgward log ({}) ---\n{}", self.port, self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Connection settings with the rig's defaults (no TLS, 10 s connect
/// timeout). Adjust before [`try_connect_config`], e.g. add
/// `.options("-c app.current_tenant=acme")`.
pub fn pg_config(host: &str, port: u16, user: &str, password: &str, db: &str) -> Config {
    let mut config = Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .application_name("pgward-tests")
        .connect_timeout(CONNECT_TIMEOUT);
    config
}

/// Connects (no TLS) and spawns the connection task on the current tokio
/// runtime. Panics with the error, including any SQLSTATE, on failure.
pub async fn connect(host: &str, port: u16, user: &str, password: &str, db: &str) -> Client {
    try_connect(host, port, user, password, db)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {host}:{port} as {user} to {db}: {} (SQLSTATE {:?})",
                describe_error(&e),
                sqlstate(&e)
            )
        })
}

/// Like [`connect`], with `options` as the startup `options` parameter (e.g.
/// `-c app.current_tenant=acme`).
pub async fn connect_with_options(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    options: &str,
) -> Client {
    let mut config = pg_config(host, port, user, password, db);
    config.options(options);
    try_connect_config(&config).await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to {host}:{port} as {user} to {db} with options {options:?}: {}",
            describe_error(&e)
        )
    })
}

/// For tests that expect the connection to be refused.
pub async fn try_connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<Client, tokio_postgres::Error> {
    try_connect_config(&pg_config(host, port, user, password, db)).await
}

/// Connects with any settings; the connection task logs its end to stderr
/// (shown by the test harness only when the test fails).
pub async fn try_connect_config(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection ended with an error: {}", describe_error(&e));
        }
    });
    Ok(client)
}

/// The SQLSTATE of a server error, e.g. `Some("42501")`.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|code| code.code())
}

/// The server's message when there is one (tokio-postgres' Display says
/// only "db error"), else the client-side error with its causes.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {} [{}]", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" DETAIL: {detail}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Stopping and restarting a private cluster (tests/reliability.rs)
// ---------------------------------------------------------------------------

impl PgCluster {
    /// Stops the server with `pg_ctl stop -m fast` (open sessions are
    /// terminated, SQLSTATE 57P01), keeping the data directory and port for
    /// [`PgCluster::start_again`]. Panics, with the server log, on failure.
    /// Only for a private cluster: the shared one serves other tests.
    pub fn stop_fast(&self) {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .expect("cannot run pg_ctl");
        if !out.status.success() {
            panic!("{}", self.describe_failure("pg_ctl stop -m fast", &out));
        }
    }

    /// Starts a server stopped by [`PgCluster::stop_fast`] again, on the same
    /// port, and waits until it accepts TCP connections.
    pub fn start_again(&self) {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", &PG_START_TIMEOUT.as_secs().to_string(), "start"])
            .output()
            .expect("cannot run pg_ctl");
        if !out.status.success() || !self.wait_accepting(Duration::from_secs(10)) {
            panic!("{}", self.describe_failure("pg_ctl start (again)", &out));
        }
    }

    /// [`PgCluster::stop_fast`], `down_for` of downtime, [`PgCluster::start_again`].
    pub fn restart(&self, down_for: Duration) {
        self.stop_fast();
        std::thread::sleep(down_for);
        self.start_again();
    }
}
