//! From a freshly accepted socket to an authenticated session: TLS
//! negotiation, the startup message, cancel requests, and the authentication
//! exchange relayed between client and PostgreSQL.

pub mod auth;
pub mod client_cert;
pub mod identity;
pub mod options;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::cancel::{BackendKey, CancelKeyGuard};
use crate::context::ProxyContext;
use crate::metrics::ClassSlot;
use crate::net::Stream;
use crate::policy::{ClassId, Policy};
use crate::protocol::frame::FrameReader;
use crate::protocol::reply::PgError;
use crate::protocol::startup::{
    InitialPacket, StartupError, StartupMessage, encode_cancel, read_initial_packet,
};
use client_cert::ClientCertificate;
use identity::Identity;

/// Largest message accepted during authentication (SASL messages are small).
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Both ends of an authenticated session, ready for the relay.
pub struct Established {
    pub client_reader: FrameReader<ReadHalf<Stream>>,
    pub client_writer: WriteHalf<Stream>,
    pub server_reader: FrameReader<ReadHalf<Stream>>,
    pub server_writer: WriteHalf<Stream>,
    pub startup: StartupMessage,
    /// The server's own cancel key (used to cancel on client disconnect).
    pub backend_key: Option<BackendKey>,
    /// Keeps pgward's client-facing cancel key registered for the session's life.
    pub cancel_key: Option<CancelKeyGuard>,
    pub client_tls: Option<&'static str>,
    /// The tenant pgward sets in every transaction, when the class has one.
    pub tenant: Option<String>,
    pub identity: Identity,
    /// Counts the session against its class's limit while alive.
    pub class_slot: ClassSlot,
}

/// Why a connection ended before becoming a session. Each variant has already
/// been reported to the client where the protocol allows it.
#[derive(Debug, thiserror::Error)]
pub enum StartupFailure {
    #[error("invalid startup packet: {0}")]
    BadPacket(#[from] StartupError),
    #[error("unsupported frontend protocol {0}.{1}")]
    UnsupportedProtocol(u16, u16),
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(std::io::Error),
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("authentication: {0}")]
    Auth(#[from] auth::AuthError),
    /// PostgreSQL refused the credentials (its error was relayed).
    #[error("authentication failed for {identity} to database {database}: {message}")]
    AuthRefused {
        identity: String,
        class: String,
        database: String,
        message: String,
    },
    #[error("{0}")]
    Tenant(#[from] crate::tenant::source::TenantError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    TooMany(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl StartupFailure {
    /// The SQLSTATE the client was given (or would have been), for the audit.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupFailure::BadPacket(_) | StartupFailure::TlsHandshake(_) => "08P01",
            StartupFailure::UnsupportedProtocol(..) => "0A000",
            StartupFailure::Upstream(_) | StartupFailure::Io(_) => "08006",
            StartupFailure::Auth(e) if e.is_connection_loss() => "08006",
            StartupFailure::Auth(_) | StartupFailure::Tenant(_) => "28000",
            StartupFailure::AuthRefused { .. } => "28P01",
            StartupFailure::Refused(_) => "42501",
            StartupFailure::TooMany(_) => "53300",
        }
    }
}

/// What a new connection turned out to be.
pub enum Opened {
    Session(Box<Established>),
    /// A CancelRequest, already forwarded (or ignored if its key is unknown).
    Cancel,
}

/// Runs the opening of one client connection.
pub async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<ProxyContext>,
) -> Result<Opened, StartupFailure> {
    let _ = tcp.set_nodelay(true);
    let mut client = Stream::Plain(tcp);
    let startup = loop {
        let packet = match read_initial_packet(&mut client).await {
            Ok(p) => p,
            Err(e) => {
                let _ = send_fatal(
                    &mut client,
                    &PgError::fatal("08P01", "invalid startup packet"),
                )
                .await;
                return Err(e.into());
            }
        };
        match packet {
            InitialPacket::SslRequest if !client.is_tls() => {
                client = negotiate_tls(client, ctx).await?;
            }
            InitialPacket::GssEncRequest if !client.is_tls() => {
                client.write_all(b"N").await?;
            }
            InitialPacket::SslRequest | InitialPacket::GssEncRequest => {
                let err = PgError::fatal("08P01", "encryption requested twice");
                send_fatal(&mut client, &err).await?;
                return Err(StartupError::Malformed("encryption requested twice").into());
            }
            InitialPacket::Cancel { pid, secret } => {
                forward_cancel(ctx, pid, secret, peer).await;
                return Ok(Opened::Cancel);
            }
            InitialPacket::UnsupportedVersion { major, minor } => {
                let err = PgError::fatal(
                    "0A000",
                    format!("unsupported frontend protocol {major}.{minor}: pgward supports 3.0"),
                );
                send_fatal(&mut client, &err).await?;
                return Err(StartupFailure::UnsupportedProtocol(major, minor));
            }
            InitialPacket::Startup(msg) => break msg,
        }
    };
    let mut startup = startup;
    let certificate = client
        .peer_certificate()
        .and_then(ClientCertificate::from_der);
    // One policy snapshot decides the whole startup: a reload halfway
    // through cannot put the session in two classes.
    let policy = ctx.policy.load_full();
    let identity = Identity::new(startup.user().to_string(), certificate, &policy);
    let class = identity.class(&policy);
    let credentials = match upstream_credentials(&policy, class, &identity, &mut startup) {
        Ok(c) => c,
        Err(err) => {
            let _ = send_fatal(&mut client, &err).await;
            return Err(StartupFailure::Refused(err.message));
        }
    };
    let tenant = match resolve_tenant(&policy, class, &mut startup, &identity) {
        Ok(t) => t,
        Err(e) => {
            let _ = send_fatal(&mut client, &e.to_pg_error()).await;
            return Err(e.into());
        }
    };
    if let Some(reason) = policy.judge_startup(class, &startup.settings()) {
        let _ = send_fatal(&mut client, &PgError::fatal("42501", reason.clone())).await;
        return Err(StartupFailure::Refused(reason));
    }
    let class_slot = {
        let name = policy.class_name(class).to_string();
        match ClassSlot::take(ctx, &name, policy.max_connections(class)) {
            Some(slot) => slot,
            None => {
                ctx.metrics.refused("class_limit");
                let err = PgError::fatal(
                    "53300",
                    format!("pgward: too many connections for class {name}"),
                );
                let _ = send_fatal(&mut client, &err).await;
                return Err(StartupFailure::TooMany(err.message));
            }
        }
    };

    let client_tls = client.tls_version();
    let mut server = match ctx.upstream.connect().await {
        Ok(s) => s,
        Err(e) => {
            let err = PgError::fatal("08006", format!("pgward: {e}"));
            let _ = send_fatal(&mut client, &err).await;
            return Err(e.into());
        }
    };
    let mut startup_bytes = bytes::BytesMut::new();
    startup.encode(&mut startup_bytes);
    if let Err(e) = server.write_all(&startup_bytes).await {
        let _ = send_fatal(&mut client, &upstream_lost()).await;
        return Err(e.into());
    }

    let (client_read, mut client_writer) = tokio::io::split(client);
    let (server_read, mut server_writer) = tokio::io::split(server);
    let mut client_reader = FrameReader::new(client_read, MAX_AUTH_MESSAGE);
    let mut server_reader = FrameReader::new(server_read, MAX_AUTH_MESSAGE);

    let relayed = auth::relay(
        &mut client_reader,
        &mut client_writer,
        &mut server_reader,
        &mut server_writer,
        ctx,
        credentials.as_ref(),
    )
    .await;
    let keys = match relayed {
        Ok(keys) => keys,
        Err(e) => {
            // PostgreSQL's own refusals were relayed; a lost connection was not.
            if e.is_connection_loss() {
                let _ = client_writer.write_all(&upstream_lost().to_bytes()).await;
            }
            if let auth::AuthError::Refused(message) = e {
                return Err(StartupFailure::AuthRefused {
                    identity: identity.name().to_string(),
                    class: policy.class_name(class).to_string(),
                    database: startup.database().to_string(),
                    message,
                });
            }
            return Err(e.into());
        }
    };

    client_reader.set_max_whole(ctx.limits.max_message_bytes);
    // pgward reads whole only the server's small messages (DataRow and
    // CopyData stream through): a larger one is refused, not buffered.
    server_reader.set_max_whole(crate::relay::backend::MAX_WHOLE_SERVER_MESSAGE);
    Ok(Opened::Session(Box::new(Established {
        client_reader,
        client_writer,
        server_reader,
        server_writer,
        startup,
        backend_key: keys.backend,
        cancel_key: keys.issued,
        client_tls,
        tenant,
        identity,
        class_slot,
    })))
}

/// For a certificate-identified member of a class with an `upstream` login,
/// pgward logs in to PostgreSQL itself: the startup user becomes that role
/// and the client is never asked for a password. Also refuses members of
/// classes that require a certificate and presented none.
fn upstream_credentials(
    policy: &Policy,
    class: ClassId,
    identity: &Identity,
    startup: &mut StartupMessage,
) -> Result<Option<auth::Credentials>, PgError> {
    if policy.requires_client_cert(class) && identity.certificate.is_none() {
        return Err(PgError::fatal(
            "28000",
            format!(
                "pgward: class {} requires a client certificate: connect with sslmode=verify-full sslcert=... sslkey=...",
                policy.class_name(class)
            ),
        ));
    }
    let (Some(login), Some(_)) = (policy.upstream_login(class), &identity.certificate_name) else {
        return Ok(None);
    };
    let password = login.password().map_err(|e| {
        tracing::error!("upstream login for class {}: {e}", policy.class_name(class));
        PgError::fatal(
            "28000",
            "pgward: cannot log in to PostgreSQL for this identity (see pgward's log)",
        )
    })?;
    match startup.params.iter_mut().find(|(k, _)| k == "user") {
        Some((_, user)) => *user = login.user.clone(),
        None => startup.params.push(("user".into(), login.user.clone())),
    }
    Ok(Some(auth::Credentials {
        user: login.user.clone(),
        password,
    }))
}

/// The session's tenant, when its class has one; takes the tenant setting
/// out of the startup options either way (see `tenant::source`).
fn resolve_tenant(
    policy: &Policy,
    class: ClassId,
    startup: &mut StartupMessage,
    identity: &Identity,
) -> Result<Option<String>, crate::tenant::source::TenantError> {
    let Some(spec) = policy.tenant_spec(class) else {
        return Ok(None);
    };
    let certificate = identity.certificate.as_ref().map(ClientCertificate::tenant);
    crate::tenant::source::resolve(
        spec,
        policy.tenant_setting(),
        identity.name(),
        policy.class_name(class),
        startup,
        certificate.as_ref(),
    )
}

async fn negotiate_tls(mut client: Stream, ctx: &ProxyContext) -> Result<Stream, StartupFailure> {
    let Some(acceptor) = &ctx.tls else {
        client.write_all(b"N").await?;
        return Ok(client);
    };
    let Stream::Plain(tcp) = client else {
        unreachable!("TLS is negotiated only on a plain connection");
    };
    let mut tcp = tcp;
    tcp.write_all(b"S").await?;
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(StartupFailure::TlsHandshake)?;
    Ok(Stream::Tls(Box::new(tls.into())))
}

/// What a client is told when PostgreSQL goes away during startup.
fn upstream_lost() -> PgError {
    PgError::fatal(
        "08006",
        "pgward: PostgreSQL closed the connection during startup",
    )
}

async fn send_fatal(client: &mut Stream, err: &PgError) -> std::io::Result<()> {
    client.write_all(&err.to_bytes()).await?;
    client.flush().await
}

/// Forwards a cancel with the server's real key. Unknown keys are ignored
/// silently, as PostgreSQL does, so a client learns nothing by guessing.
async fn forward_cancel(ctx: &ProxyContext, pid: i32, secret: i32, peer: SocketAddr) {
    let Some(backend) = ctx.cancels.lookup(pid, secret) else {
        tracing::info!(%peer, "cancel request with an unknown key ignored");
        return;
    };
    send_cancel(ctx, backend).await;
}

/// Sends a CancelRequest for `backend` on a new upstream connection.
pub async fn send_cancel(ctx: &ProxyContext, backend: BackendKey) {
    match ctx.upstream.connect().await {
        Ok(mut server) => {
            let packet = encode_cancel(backend.pid, backend.secret);
            if let Err(e) = server.write_all(&packet).await {
                tracing::warn!("cancel request not delivered: {e}");
            }
            let _ = server.shutdown().await;
        }
        Err(e) => tracing::warn!("cancel request not delivered: {e}"),
    }
}
