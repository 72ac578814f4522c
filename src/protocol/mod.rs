//! The PostgreSQL wire protocol as pgward needs it: frame boundaries, the few
//! message fields it reads, and the messages it writes itself.
//!
//! pgward forwards the bytes it receives, never a re-encoding of them: decoding
//! and re-encoding would be slower and would silently change text that is not
//! valid UTF-8. Messages pgward *writes* (errors, ReadyForQuery, its own
//! BackendKeyData) are built with the `pgwire` crate's message types.

pub mod fields;
pub mod frame;
pub mod reply;
pub mod startup;

/// Frontend (client → server) message tags pgward acts on.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const PASSWORD: u8 = b'p';
}

/// Backend (server → client) message tags pgward acts on.
pub mod backend_tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Transaction status as reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// 'I': not in a transaction block.
    Idle,
    /// 'T': in a transaction block.
    InBlock,
    /// 'E': in a failed transaction block; statements are refused until it ends.
    Failed,
}

impl TxnStatus {
    pub fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b'I' => Some(TxnStatus::Idle),
            b'T' => Some(TxnStatus::InBlock),
            b'E' => Some(TxnStatus::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            TxnStatus::Idle => b'I',
            TxnStatus::InBlock => b'T',
            TxnStatus::Failed => b'E',
        }
    }
}
