//! The untagged packets a connection opens with: SSLRequest, GSSENCRequest,
//! CancelRequest and StartupMessage.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::fields::Fields;

/// PostgreSQL's own bound on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// Protocol 3.0, the only version pgward speaks.
pub const PROTOCOL_3_0: i32 = 196608;

/// The first packet(s) a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup(StartupMessage),
    /// A startup packet with a protocol version pgward does not speak.
    UnsupportedVersion {
        major: u16,
        minor: u16,
    },
}

/// StartupMessage parameters, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupMessage {
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> &str {
        self.get("user").unwrap_or("")
    }

    /// The database, which defaults to the user name as in PostgreSQL.
    pub fn database(&self) -> &str {
        self.get("database").unwrap_or_else(|| self.user())
    }

    /// Every run-time setting the startup packet asks for: those in `options`
    /// first, then the other parameters, which PostgreSQL applies after them
    /// (so a later one wins). Names are lower-cased as PostgreSQL folds them.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = self
            .get("options")
            .map(crate::startup::options::all_settings)
            .unwrap_or_default();
        for (k, v) in &self.params {
            if !matches!(k.as_str(), "user" | "database" | "options" | "replication") {
                out.push((k.to_ascii_lowercase(), v.clone()));
            }
        }
        out
    }

    /// Encodes a protocol 3.0 StartupMessage with these parameters.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_i32(0);
        buf.put_i32(PROTOCOL_3_0);
        for (k, v) in &self.params {
            put_cstr(buf, k);
            put_cstr(buf, v);
        }
        buf.put_u8(0);
        let len = (buf.len() - start) as i32;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

/// Encodes a CancelRequest packet.
pub fn encode_cancel(pid: i32, secret: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..16].copy_from_slice(&secret.to_be_bytes());
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid startup packet length {0}")]
    BadLength(i32),
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
}

/// Reads one untagged packet. The length is checked before anything is
/// allocated, so a client announcing a huge packet costs nothing.
pub async fn read_initial_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<InitialPacket, StartupError> {
    let len = r.read_i32().await?;
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(StartupError::BadLength(len));
    }
    let mut body = vec![0u8; len as usize - 4];
    r.read_exact(&mut body).await?;
    parse_initial_packet(&body)
}

/// Parses the body (after the length word) of an untagged packet.
pub fn parse_initial_packet(body: &[u8]) -> Result<InitialPacket, StartupError> {
    let mut f = Fields::new(body);
    let code = f.i32().ok_or(StartupError::Malformed("missing code"))?;
    match code {
        SSL_REQUEST_CODE => Ok(InitialPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(InitialPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = f
                .i32()
                .ok_or(StartupError::Malformed("short cancel request"))?;
            let secret = f
                .i32()
                .ok_or(StartupError::Malformed("short cancel request"))?;
            Ok(InitialPacket::Cancel { pid, secret })
        }
        PROTOCOL_3_0 => parse_params(f).map(InitialPacket::Startup),
        other => Ok(InitialPacket::UnsupportedVersion {
            major: (other >> 16) as u16,
            minor: (other & 0xffff) as u16,
        }),
    }
}

fn parse_params(mut f: Fields<'_>) -> Result<StartupMessage, StartupError> {
    let mut params = Vec::new();
    loop {
        let key = f.cstr().ok_or(StartupError::Malformed(
            "unterminated or non-UTF-8 parameter name",
        ))?;
        if key.is_empty() {
            break;
        }
        let value = f.cstr().ok_or(StartupError::Malformed(
            "unterminated or non-UTF-8 parameter value",
        ))?;
        params.push((key.to_string(), value.to_string()));
    }
    if !f.remaining().is_empty() {
        return Err(StartupError::Malformed("bytes after the parameter list"));
    }
    if !params.iter().any(|(k, _)| k == "user") {
        return Err(StartupError::Malformed("no user name in startup packet"));
    }
    Ok(StartupMessage { params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trips() {
        let msg = StartupMessage {
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "db".into()),
            ],
        };
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(
            parse_initial_packet(&buf[4..]).unwrap(),
            InitialPacket::Startup(msg)
        );
    }

    #[test]
    fn database_defaults_to_user() {
        let msg = StartupMessage {
            params: vec![("user".into(), "alice".into())],
        };
        assert_eq!(msg.database(), "alice");
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(parse_initial_packet(b"").is_err());
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice");
        assert!(parse_initial_packet(&body).is_err());
        let mut no_user = PROTOCOL_3_0.to_be_bytes().to_vec();
        no_user.extend_from_slice(b"database\0x\0\0");
        assert!(parse_initial_packet(&no_user).is_err());
    }

    #[test]
    fn other_versions_are_reported() {
        let body = (4i32 << 16).to_be_bytes();
        assert_eq!(
            parse_initial_packet(&body).unwrap(),
            InitialPacket::UnsupportedVersion { major: 4, minor: 0 }
        );
    }

    #[tokio::test]
    async fn huge_announced_length_is_refused_without_allocation() {
        let mut input = &(i32::MAX).to_be_bytes()[..];
        assert!(matches!(
            read_initial_packet(&mut input).await,
            Err(StartupError::BadLength(_))
        ));
    }
}
