//! Following the session's search_path, so that unqualified names can be
//! resolved the way PostgreSQL will resolve them.
//!
//! The rule is: believe a path only when pgward is certain the server has it.
//! Whenever a change might not have taken effect (it ran in a multi-statement
//! string or an extended-protocol batch that could still fail, in a
//! transaction that might roll back, before a `ROLLBACK TO SAVEPOINT`, or
//! through `set_config()`), the path becomes [`SearchPath::Unknown`], and a
//! restricted identity's unqualified writes are refused until a plain `SET
//! search_path` makes it certain again. Being wrong in the other direction
//! would let `DELETE FROM job_queue` slip past as a write to `public`.

use crate::inspect::{SearchPathChange, StatementInfo, TxnControl};
use crate::policy::SearchPath;
use crate::startup::options;

/// PostgreSQL's default search_path.
pub fn default_path() -> Vec<String> {
    vec!["$user".to_string(), "public".to_string()]
}

#[derive(Debug, Clone)]
pub struct PathTracker {
    /// The value RESET returns to: the startup `options` value, or PostgreSQL's default.
    initial: SearchPath,
    /// Session-level value outside any transaction block.
    session: SearchPath,
    /// Session-level value set inside the open transaction block; applies at COMMIT.
    in_txn: Option<SearchPath>,
    /// `SET LOCAL` value; ends with the transaction block.
    local: Option<SearchPath>,
    /// Inside BEGIN ... COMMIT/ROLLBACK, as far as the client's statements say.
    in_block: bool,
}

/// How certain the execution of a statement is when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certainty {
    /// A single-statement Query: it runs alone and its effect is final unless
    /// a transaction block rolls it back.
    Alone,
    /// Part of a multi-statement Query or an extended-protocol batch: a later
    /// error can roll it back.
    Batched,
}

impl PathTracker {
    pub fn new(initial: SearchPath) -> Self {
        PathTracker {
            session: initial.clone(),
            initial,
            in_txn: None,
            local: None,
            in_block: false,
        }
    }

    /// The path statements are resolved with right now.
    pub fn current(&self) -> &SearchPath {
        self.local
            .as_ref()
            .or(self.in_txn.as_ref())
            .unwrap_or(&self.session)
    }

    /// Whether `stmt` could change anything tracked here (lets callers skip
    /// copying the tracker for the common statement).
    pub fn affected_by(stmt: &StatementInfo) -> bool {
        stmt.search_path.is_some() || stmt.txn.is_some()
    }

    /// Applies the effect `stmt` will have once the server runs it.
    /// `committed_cleanly`: for COMMIT, whether pgward knows the transaction
    /// had not failed (ReadyForQuery said 'T' with nothing in flight).
    pub fn apply(&mut self, stmt: &StatementInfo, certainty: Certainty, committed_cleanly: bool) {
        if let Some(txn) = stmt.txn {
            self.apply_txn(txn, committed_cleanly);
        }
        let Some(change) = &stmt.search_path else {
            return;
        };
        let (value, local) = match change {
            SearchPathChange::Set { schemas, local } => {
                (SearchPath::Known(schemas.clone()), *local)
            }
            SearchPathChange::Reset { local } => (self.initial.clone(), *local),
            SearchPathChange::Unknown => (SearchPath::Unknown, false),
        };
        match (self.in_block, local) {
            // SET LOCAL outside a block only raises a warning.
            (false, true) => {}
            (false, false) => {
                self.session = if certainty == Certainty::Alone {
                    value
                } else {
                    SearchPath::Unknown
                };
            }
            (true, true) => self.local = Some(value),
            (true, false) => {
                self.local = None;
                self.in_txn = Some(value);
            }
        }
    }

    fn apply_txn(&mut self, txn: TxnControl, committed_cleanly: bool) {
        match txn {
            TxnControl::Begin => self.in_block = true,
            TxnControl::Commit => {
                if let Some(value) = self.in_txn.take() {
                    self.session = if committed_cleanly {
                        value
                    } else {
                        SearchPath::Unknown
                    };
                }
                self.end_block();
            }
            TxnControl::Rollback => {
                self.in_txn = None;
                self.end_block();
            }
            TxnControl::Prepare => {
                // PREPARE TRANSACTION: the settings' fate is decided elsewhere.
                if self.in_txn.take().is_some() {
                    self.session = SearchPath::Unknown;
                }
                self.end_block();
            }
            TxnControl::RollbackToSavepoint => {
                // The savepoint may predate the change or not: not knowable here.
                if self.in_txn.is_some() || self.local.is_some() {
                    self.local = Some(SearchPath::Unknown);
                }
            }
            TxnControl::Savepoint | TxnControl::ReleaseSavepoint | TxnControl::Other => {}
        }
    }

    fn end_block(&mut self) {
        self.in_block = false;
        self.local = None;
    }

    pub fn in_block(&self) -> bool {
        self.in_block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(schemas: &[&str], local: bool) -> StatementInfo {
        StatementInfo {
            search_path: Some(SearchPathChange::Set {
                schemas: schemas.iter().map(|s| s.to_string()).collect(),
                local,
            }),
            ..Default::default()
        }
    }

    fn txn(t: TxnControl) -> StatementInfo {
        StatementInfo {
            txn: Some(t),
            ..Default::default()
        }
    }

    fn known(schemas: &[&str]) -> SearchPath {
        SearchPath::Known(schemas.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn plain_set_is_followed() {
        let mut p = PathTracker::new(SearchPath::Known(default_path()));
        p.apply(&set(&["ops"], false), Certainty::Alone, false);
        assert_eq!(p.current(), &known(&["ops"]));
    }

    #[test]
    fn batched_set_makes_the_path_unknown() {
        let mut p = PathTracker::new(SearchPath::Known(default_path()));
        p.apply(&set(&["public"], false), Certainty::Batched, false);
        assert_eq!(p.current(), &SearchPath::Unknown);
    }

    #[test]
    fn set_local_ends_with_the_block() {
        let mut p = PathTracker::new(known(&["public"]));
        p.apply(&txn(TxnControl::Begin), Certainty::Alone, false);
        p.apply(&set(&["ops"], true), Certainty::Alone, false);
        assert_eq!(p.current(), &known(&["ops"]));
        p.apply(&txn(TxnControl::Commit), Certainty::Alone, true);
        assert_eq!(p.current(), &known(&["public"]));
    }

    #[test]
    fn rollback_discards_a_set_made_in_the_block() {
        let mut p = PathTracker::new(known(&["ops"]));
        p.apply(&txn(TxnControl::Begin), Certainty::Alone, false);
        p.apply(&set(&["public"], false), Certainty::Alone, false);
        assert_eq!(p.current(), &known(&["public"]));
        p.apply(&txn(TxnControl::Rollback), Certainty::Alone, false);
        assert_eq!(p.current(), &known(&["ops"]));
    }

    #[test]
    fn commit_of_a_possibly_failed_block_makes_the_path_unknown() {
        let mut p = PathTracker::new(known(&["ops"]));
        p.apply(&txn(TxnControl::Begin), Certainty::Alone, false);
        p.apply(&set(&["public"], false), Certainty::Alone, false);
        p.apply(&txn(TxnControl::Commit), Certainty::Alone, false);
        assert_eq!(p.current(), &SearchPath::Unknown);
    }

    #[test]
    fn rollback_to_savepoint_after_a_change_is_unknown() {
        let mut p = PathTracker::new(known(&["ops"]));
        p.apply(&txn(TxnControl::Begin), Certainty::Alone, false);
        p.apply(&txn(TxnControl::Savepoint), Certainty::Alone, false);
        p.apply(&set(&["public"], true), Certainty::Alone, false);
        p.apply(
            &txn(TxnControl::RollbackToSavepoint),
            Certainty::Alone,
            false,
        );
        assert_eq!(p.current(), &SearchPath::Unknown);
    }
}

/// The search_path a session starts with: the startup `options` value
/// (`-c search_path=...`, as libpq's `options` parameter sends it), else
/// PostgreSQL's default. The value is parsed with PostgreSQL's grammar so
/// quoting and case folding match the server's. Role- or database-level
/// defaults (`ALTER ROLE ... SET search_path`) are not visible here: see README.
pub fn initial_path(options: Option<&str>) -> SearchPath {
    let Some(value) = options.and_then(|o| options::setting(o, "search_path")) else {
        return SearchPath::Known(default_path());
    };
    let sql = format!("SET search_path = {value}");
    match crate::inspect::inspect(&sql).as_deref() {
        Ok([stmt]) => match &stmt.search_path {
            Some(SearchPathChange::Set { schemas, .. }) => SearchPath::Known(schemas.clone()),
            _ => SearchPath::Unknown,
        },
        _ => SearchPath::Unknown,
    }
}

#[cfg(test)]
mod initial_path_tests {
    use super::*;

    #[test]
    fn initial_path_folds_like_postgres() {
        assert_eq!(
            initial_path(Some("-c search_path=Ops,\"Mixed\"")),
            SearchPath::Known(vec!["ops".into(), "Mixed".into()])
        );
        assert_eq!(initial_path(None), SearchPath::Known(default_path()));
    }
}
