//! Drafts of audit records, written while statements are judged and
//! completed when the server answers (see `backend`): one per statement run
//! or refused.

use std::time::Instant;

use smallvec::SmallVec;

use crate::audit::{Outcome, Protocol, StatementRecord};
use crate::inspect::StatementInfo;
use crate::policy::Decision;

/// A statement's record, waiting for its outcome.
#[derive(Debug, Clone)]
pub struct Draft {
    pub record: StatementRecord,
    pub received: Instant,
}

impl Draft {
    /// Sets the outcome from a CommandComplete tag (`INSERT 0 5`: 5 rows).
    pub fn completed(&mut self, tag: &str) {
        self.record.rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
        self.record.outcome = Some(Outcome::Tag(tag.into()));
    }

    pub fn failed(&mut self, sqlstate: &str) {
        self.record.outcome = Some(Outcome::Error(sqlstate.into()));
    }

    /// The finished record (duration measured now).
    pub fn finish(mut self) -> StatementRecord {
        self.record.duration_us =
            u64::try_from(self.received.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.record
    }
}

/// The drafts of one message: nearly always one statement, kept inline so
/// that handing them to the backend half allocates nothing.
pub type Drafts = SmallVec<[Draft; 1]>;

/// The session's part of every record, and the drafts of the message being judged.
#[derive(Debug)]
pub struct Notes {
    base: StatementRecord,
    drafts: Drafts,
}

impl Notes {
    pub fn new(base: StatementRecord) -> Self {
        Notes {
            base,
            drafts: Drafts::new(),
        }
    }

    /// A draft for one statement and its decision.
    pub fn draft(
        &self,
        protocol: Protocol,
        text: &str,
        stmt: Option<&StatementInfo>,
        decision: &Decision,
    ) -> Draft {
        let mut record = self.base.clone();
        record.protocol = protocol;
        record.statement_text = text.trim().into();
        record.statement_kind = stmt.map_or("UNKNOWN", |s| s.kind.as_str()).into();
        record.set_decision(decision);
        Draft {
            record,
            received: Instant::now(),
        }
    }

    /// The draft pushed last.
    pub fn last(&self) -> Option<&Draft> {
        self.drafts.last()
    }

    pub fn push(&mut self, draft: Draft) {
        self.drafts.push(draft);
    }

    /// A refusal refuses the whole message: only its own record remains.
    pub fn replace_all(&mut self, draft: Draft) {
        self.drafts.clear();
        self.drafts.push(draft);
    }

    pub fn take(&mut self) -> Drafts {
        std::mem::take(&mut self.drafts)
    }
}

/// The text of statement `i` of a multi-statement string, by the locations
/// PostgreSQL's parser reported.
pub fn statement_text<'a>(sql: &'a str, statements: &[StatementInfo], i: usize) -> &'a str {
    let start = statements[i].location.min(sql.len());
    let end = statements
        .get(i + 1)
        .map_or(sql.len(), |s| s.location.min(sql.len()));
    sql.get(start..end.max(start)).unwrap_or(sql)
}
