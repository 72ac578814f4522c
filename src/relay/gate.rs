//! The per-session checkpoint where statements are judged before they reach
//! the server.

use crate::protocol::reply::PgError;

/// What happens to one client message.
#[derive(Debug)]
pub enum Verdict {
    Forward,
    Refuse(PgError),
}

/// Judges a session's statements. (Relay-only for now: forwards everything.)
#[derive(Debug, Default)]
pub struct Gate {}

impl Gate {
    pub fn on_query(&mut self, _sql: Option<&str>) -> Verdict {
        Verdict::Forward
    }

    pub fn on_parse(&mut self, _name: Option<&str>, _sql: Option<&str>) -> Verdict {
        Verdict::Forward
    }

    pub fn on_function_call(&mut self) -> Verdict {
        Verdict::Forward
    }
}
