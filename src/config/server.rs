//! The `server:` and `limits:` sections of policy.yaml: where pgward listens,
//! which PostgreSQL it fronts, TLS on either side, and resource limits.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `server:` — network endpoints and TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address clients connect to, e.g. `127.0.0.1:6432`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The PostgreSQL server pgward relays to, `host:port`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// Client-facing TLS termination. Absent: SSLRequest is answered 'N'.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// TLS from pgward to PostgreSQL, verified against `ca`. Absent: plain TCP.
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTls>,
    /// Address of the admin HTTP listener (/metrics, /healthz, /readyz); absent: off
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Threads that run sessions; absent: one per CPU core. Every extra
    /// thread costs wake-ups between threads; on a machine shared with the
    /// database and the clients, fewer can mean more throughput.
    #[serde(default)]
    pub worker_threads: Option<NonZeroUsize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            upstream: default_upstream(),
            tls: None,
            upstream_tls: None,
            admin_listen: None,
            worker_threads: None,
        }
    }
}

/// Certificate chain and private key, PEM files, and optionally the CA that
/// signs client certificates (mutual TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA for client certificates. Set: clients may present a certificate,
    /// which is verified against it (a wrong CA or an expired certificate
    /// fails the handshake); classes with `require_client_cert` must.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Upstream TLS: the CA that signs PostgreSQL's certificate, and the name to verify.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    pub ca: PathBuf,
    /// Name expected in the server certificate; defaults to the upstream host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// `limits:` — every bound that protects pgward from a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest frontend message pgward buffers (Query, Parse, Bind, ...). Bigger
    /// ones get SQLSTATE 54000 and the connection is closed. COPY data is streamed
    /// and not subject to this bound.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time a new connection has to complete TLS, startup and authentication.
    #[serde(default = "default_startup_timeout_ms")]
    pub startup_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long sessions may keep running before they are closed.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Time allowed to open the TCP (and TLS) connection to PostgreSQL.
    #[serde(default = "default_upstream_connect_timeout_ms")]
    pub upstream_connect_timeout_ms: u64,
    /// Client connections open at once, all classes together; more are
    /// refused with SQLSTATE 53300 (too_many_connections).
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// A session sending nothing for this long is closed (SQLSTATE 57P05);
    /// 0: never.
    #[serde(default)]
    pub idle_client_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message_bytes(),
            startup_timeout_ms: default_startup_timeout_ms(),
            drain_timeout_ms: default_drain_timeout_ms(),
            upstream_connect_timeout_ms: default_upstream_connect_timeout_ms(),
            max_client_connections: default_max_client_connections(),
            idle_client_timeout_ms: 0,
        }
    }
}

impl Limits {
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    pub fn idle_client_timeout(&self) -> Option<Duration> {
        (self.idle_client_timeout_ms > 0)
            .then(|| Duration::from_millis(self.idle_client_timeout_ms))
    }
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_upstream() -> String {
    "127.0.0.1:5432".into()
}
fn default_max_message_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_startup_timeout_ms() -> u64 {
    10_000
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}
fn default_upstream_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_client_connections() -> usize {
    10_000
}
