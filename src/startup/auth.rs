//! The authentication exchange, relayed message by message so that
//! PostgreSQL stays the only authority on passwords.
//!
//! pgward changes exactly two things on the way:
//! - SCRAM-SHA-256-PLUS is removed from the mechanisms offered to the client.
//!   Channel binding ties SCRAM to the TLS connection the *client* sees, which
//!   ends at pgward; the server would verify it against a different TLS
//!   connection and fail. Without PLUS on offer, libpq's default
//!   `channel_binding=prefer` settles on plain SCRAM-SHA-256.
//! - BackendKeyData is replaced with a key pgward issues (see [`crate::cancel`]).

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::cancel::{BackendKey, CancelKeyGuard};
use crate::context::ProxyContext;
use crate::protocol::backend_tag;
use crate::protocol::fields::Fields;
use crate::protocol::frame::{FrameError, FrameReader, Piece, Want, body};
use crate::protocol::reply::{PgError, backend_key_data};
use crate::protocol::tag;

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("PostgreSQL refused the connection: {0}")]
    Refused(String),
    #[error("PostgreSQL asked for unsupported authentication method {0}")]
    UnsupportedMethod(i32),
    #[error("client sent message type {0:?} where a password message was expected")]
    UnexpectedClientMessage(char),
    #[error("PostgreSQL sent message type {0:?} during authentication")]
    UnexpectedServerMessage(char),
    #[error("connection closed during authentication")]
    Closed,
    #[error("malformed authentication message")]
    Malformed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl AuthError {
    /// The connection broke (rather than PostgreSQL or the client refusing).
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            AuthError::Io(_) | AuthError::Closed | AuthError::Frame(_)
        )
    }
}

/// The role and password pgward logs in with itself (see
/// `identities.classes.X.upstream`); the client is then never asked.
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Cancel keys learned during startup.
pub struct SessionKeys {
    pub backend: Option<BackendKey>,
    pub issued: Option<CancelKeyGuard>,
}

/// Relays authentication and the post-authentication parameters up to the
/// first ReadyForQuery, which is forwarded too.
pub async fn relay<CR, CW, SR, SW>(
    client_reader: &mut FrameReader<CR>,
    client: &mut CW,
    server_reader: &mut FrameReader<SR>,
    server: &mut SW,
    ctx: &ProxyContext,
    credentials: Option<&Credentials>,
) -> Result<SessionKeys, AuthError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let mut keys = SessionKeys {
        backend: None,
        issued: None,
    };
    let mut own = credentials.map(OwnLogin::new);
    loop {
        let (tag, frame) = next_whole(server_reader).await?;
        match tag {
            backend_tag::AUTHENTICATION if own.is_some() => {
                let mut f = Fields::new(body(&frame));
                let code = f.i32().ok_or(AuthError::Malformed)?;
                if code == AUTH_OK {
                    client.write_all(&frame).await?;
                } else if let Some(login) = own.as_mut() {
                    let reply = login.answer(code, f.remaining())?;
                    if !reply.is_empty() {
                        server.write_all(&reply).await?;
                    }
                }
            }
            backend_tag::AUTHENTICATION => {
                let mut f = Fields::new(body(&frame));
                let code = f.i32().ok_or(AuthError::Malformed)?;
                match code {
                    AUTH_OK | AUTH_SASL_FINAL => client.write_all(&frame).await?,
                    AUTH_CLEARTEXT | AUTH_MD5 | AUTH_SASL_CONTINUE => {
                        client.write_all(&frame).await?;
                        relay_password(client_reader, server).await?;
                    }
                    AUTH_SASL => {
                        client.write_all(&without_channel_binding(f)?).await?;
                        relay_password(client_reader, server).await?;
                    }
                    other => {
                        let err = PgError::fatal(
                            "08P01",
                            format!("pgward does not relay authentication method {other}"),
                        );
                        client.write_all(&err.to_bytes()).await?;
                        return Err(AuthError::UnsupportedMethod(other));
                    }
                }
            }
            backend_tag::BACKEND_KEY_DATA => {
                let mut f = Fields::new(body(&frame));
                let backend = f
                    .i32()
                    .zip(f.i32())
                    .map(|(pid, secret)| BackendKey { pid, secret })
                    .ok_or(AuthError::Malformed)?;
                let issued = ctx.cancels.register(backend);
                let mut out = BytesMut::new();
                backend_key_data(issued.issued.pid, issued.issued.secret, &mut out);
                client.write_all(&out).await?;
                keys = SessionKeys {
                    backend: Some(backend),
                    issued: Some(issued),
                };
            }
            backend_tag::ERROR_RESPONSE => {
                client.write_all(&frame).await?;
                client.flush().await?;
                let message = crate::protocol::fields::error_field(body(&frame), b'M')
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                return Err(AuthError::Refused(message));
            }
            backend_tag::READY_FOR_QUERY => {
                client.write_all(&frame).await?;
                client.flush().await?;
                return Ok(keys);
            }
            // ParameterStatus, NoticeResponse, NegotiateProtocolVersion.
            b'S' | b'N' | backend_tag::NEGOTIATE_PROTOCOL_VERSION => {
                client.write_all(&frame).await?
            }
            other => return Err(AuthError::UnexpectedServerMessage(other as char)),
        }
    }
}

/// pgward's own side of an authentication exchange, as a client.
struct OwnLogin<'a> {
    credentials: &'a Credentials,
    scram: Option<postgres_protocol::authentication::sasl::ScramSha256>,
}

impl<'a> OwnLogin<'a> {
    fn new(credentials: &'a Credentials) -> Self {
        OwnLogin {
            credentials,
            scram: None,
        }
    }

    /// The message answering authentication request `code` (empty: none).
    fn answer(&mut self, code: i32, data: &[u8]) -> Result<BytesMut, AuthError> {
        use postgres_protocol::authentication::{md5_hash, sasl};
        use postgres_protocol::message::frontend;
        let mut out = BytesMut::new();
        let password = self.credentials.password.as_bytes();
        let io = |_| AuthError::Malformed;
        match code {
            AUTH_CLEARTEXT => frontend::password_message(password, &mut out).map_err(io)?,
            AUTH_MD5 => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(AuthError::Malformed)?;
                let hash = md5_hash(self.credentials.user.as_bytes(), password, salt);
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
            }
            AUTH_SASL => {
                let offers_scram = data
                    .split(|&b| b == 0)
                    .any(|m| m == sasl::SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(AuthError::UnsupportedMethod(code));
                }
                let scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut out)
                    .map_err(io)?;
                self.scram = Some(scram);
            }
            AUTH_SASL_CONTINUE => {
                let scram = self.scram.as_mut().ok_or(AuthError::Malformed)?;
                scram
                    .update(data)
                    .map_err(|e| AuthError::Refused(e.to_string()))?;
                frontend::sasl_response(scram.message(), &mut out).map_err(io)?;
            }
            AUTH_SASL_FINAL => {
                let scram = self.scram.as_mut().ok_or(AuthError::Malformed)?;
                // Verifies the server's signature: PostgreSQL proves it knows
                // the password too.
                scram
                    .finish(data)
                    .map_err(|e| AuthError::Refused(e.to_string()))?;
            }
            other => return Err(AuthError::UnsupportedMethod(other)),
        }
        Ok(out)
    }
}

/// Forwards the client's answer to an authentication request.
async fn relay_password<CR, SW>(
    client_reader: &mut FrameReader<CR>,
    server: &mut SW,
) -> Result<(), AuthError>
where
    CR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let (t, frame) = next_whole(client_reader).await?;
    if t != tag::PASSWORD {
        return Err(AuthError::UnexpectedClientMessage(t as char));
    }
    server.write_all(&frame).await?;
    Ok(())
}

async fn next_whole<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<(u8, BytesMut), AuthError> {
    match reader.next(|_| Want::Whole).await? {
        Some(Piece::Frame { tag, bytes }) => Ok((tag, bytes)),
        Some(Piece::PassThrough(_)) => Err(AuthError::Malformed),
        None => Err(AuthError::Closed),
    }
}

/// Rebuilds an AuthenticationSASL message without `-PLUS` mechanisms.
fn without_channel_binding(mut f: Fields<'_>) -> Result<BytesMut, AuthError> {
    let mut body = BytesMut::new();
    body.put_i32(AUTH_SASL);
    loop {
        let mechanism = f.cstr_bytes().ok_or(AuthError::Malformed)?;
        if mechanism.is_empty() {
            break;
        }
        if !mechanism.ends_with(b"-PLUS") {
            body.put_slice(mechanism);
            body.put_u8(0);
        }
    }
    body.put_u8(0);
    let mut frame = BytesMut::with_capacity(body.len() + 5);
    frame.put_u8(backend_tag::AUTHENTICATION);
    frame.put_i32(body.len() as i32 + 4);
    frame.put_slice(&body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_mechanisms_are_not_offered() {
        let body = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
        let frame = without_channel_binding(Fields::new(body)).unwrap();
        assert_eq!(&frame[5..9], &AUTH_SASL.to_be_bytes());
        assert_eq!(&frame[9..], b"SCRAM-SHA-256\0\0");
        let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len + 1, frame.len());
    }
}
