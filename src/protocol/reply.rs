//! Messages pgward writes to a client itself, built with pgwire's message types.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{BackendKeyData, SecretKey};

use super::TxnStatus;

/// Severity of an error pgward reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection is about to be closed.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub sqlstate: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(severity: Severity, sqlstate: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity,
            sqlstate,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, sqlstate, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Appends the ErrorResponse frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let severity = self.severity.as_str().to_string();
        let mut fields = vec![
            (b'S', severity.clone()),
            (b'V', severity),
            (b'C', self.sqlstate.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(detail) = &self.detail {
            fields.push((b'D', detail.clone()));
        }
        if let Some(hint) = &self.hint {
            fields.push((b'H', hint.clone()));
        }
        encode_infallible(&ErrorResponse::new(fields), buf);
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf
    }
}

/// Appends a ReadyForQuery frame.
pub fn ready_for_query(status: TxnStatus, buf: &mut BytesMut) {
    let status = match status {
        TxnStatus::Idle => TransactionStatus::Idle,
        TxnStatus::InBlock => TransactionStatus::Transaction,
        TxnStatus::Failed => TransactionStatus::Error,
    };
    encode_infallible(&ReadyForQuery::new(status), buf);
}

/// Appends a BackendKeyData frame carrying pgward's own cancel key.
pub fn backend_key_data(pid: i32, secret: i32, buf: &mut BytesMut) {
    encode_infallible(&BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

/// pgwire's encoders only fail for values that cannot be represented on the
/// wire (e.g. a string with an interior NUL). pgward's messages never contain
/// one: strip NULs defensively rather than panic if a caller passes one in.
fn encode_infallible<M: Message>(msg: &M, buf: &mut BytesMut) {
    let start = buf.len();
    if msg.encode(buf).is_err() {
        buf.truncate(start);
        tracing::error!("failed to encode an outgoing protocol message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fields::error_field;
    use crate::protocol::frame::body;

    #[test]
    fn error_response_round_trips_through_our_reader() {
        let err = PgError::new(Severity::Error, "42501", "denied").with_hint("use f()");
        let bytes = err.to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        assert_eq!(error_field(body(&bytes), b'C'), Some(&b"42501"[..]));
        assert_eq!(error_field(body(&bytes), b'H'), Some(&b"use f()"[..]));
    }

    #[test]
    fn ready_for_query_carries_status() {
        let mut buf = BytesMut::new();
        ready_for_query(TxnStatus::Failed, &mut buf);
        assert_eq!(&buf[..], b"Z\0\0\0\x05E");
    }
}
