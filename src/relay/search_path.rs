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
    /// Bumped whenever the current path may have changed, so that a
    /// statement judged earlier can tell it must be judged again.
    generation: u64,
}

/// How certain the execution of a statement is when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Certainty {
    /// A single-statement Query: it runs alone and its effect is final unless
    /// a transaction block rolls it back.
    Alone,
    /// Part of a multi-statement Query: it runs before the statements after
    /// it (an error stops them all), but a later error can roll it back.
    Batched,
    /// Parsed in the extended protocol: it runs when (and if) the client
    /// executes it, which pgward does not assume.
    Deferred,
}

impl PathTracker {
    pub fn new(initial: SearchPath) -> Self {
        PathTracker {
            session: initial.clone(),
            initial,
            in_txn: None,
            local: None,
            in_block: false,
            generation: 0,
        }
    }

    /// Changes whenever [`current`](Self::current) may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
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
        if Self::affected_by(stmt) {
            self.generation += 1;
        }
        if let Some(txn) = stmt.txn {
            self.apply_txn(txn, stmt.txn_chain, committed_cleanly);
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
        if certainty == Certainty::Deferred {
            // When it will run is not known: unknown from now on, at the
            // level it would act on.
            if local {
                self.local = Some(SearchPath::Unknown);
            } else if self.in_block {
                self.local = None;
                self.in_txn = Some(SearchPath::Unknown);
            } else {
                self.session = SearchPath::Unknown;
            }
            return;
        }
        match (self.in_block, local) {
            // SET LOCAL outside a block: a lone statement only warns, but in
            // a multi-statement Query (an implicit block) it holds for the
            // rest of the text (see `end_of_implicit_transaction`).
            (false, true) => {
                if certainty == Certainty::Batched {
                    self.local = Some(value);
                }
            }
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

    /// The end of a Query message or an extended-protocol batch: outside a
    /// block, that ends the implicit transaction and its SET LOCALs.
    pub fn end_of_implicit_transaction(&mut self) {
        if !self.in_block && (self.local.is_some() || self.in_txn.is_some()) {
            self.generation += 1;
            self.local = None;
            self.in_txn = None;
        }
    }

    fn apply_txn(&mut self, txn: TxnControl, chain: bool, committed_cleanly: bool) {
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
                self.end_block(chain);
            }
            TxnControl::Rollback => {
                self.in_txn = None;
                self.end_block(chain);
            }
            TxnControl::Prepare => {
                // PREPARE TRANSACTION: the settings' fate is decided elsewhere.
                if self.in_txn.take().is_some() {
                    self.session = SearchPath::Unknown;
                }
                self.end_block(false);
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

    /// `chain`: COMMIT/ROLLBACK AND CHAIN, which opens a new block at once.
    fn end_block(&mut self, chain: bool) {
        self.in_block = chain;
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
    fn set_local_in_a_multi_statement_text_holds_for_the_rest_of_it() {
        let mut p = PathTracker::new(known(&["public"]));
        p.apply(&set(&["ops"], true), Certainty::Batched, false);
        assert_eq!(p.current(), &known(&["ops"]));
        p.end_of_implicit_transaction();
        assert_eq!(p.current(), &known(&["public"]));
        p.apply(&set(&["ops"], true), Certainty::Alone, false);
        assert_eq!(
            p.current(),
            &known(&["public"]),
            "a lone SET LOCAL only warns"
        );
    }

    #[test]
    fn parsed_changes_make_the_path_unknown_until_the_batch_ends() {
        let mut p = PathTracker::new(known(&["ops"]));
        p.apply(&set(&["public"], true), Certainty::Deferred, false);
        assert_eq!(p.current(), &SearchPath::Unknown);
        p.end_of_implicit_transaction();
        assert_eq!(p.current(), &known(&["ops"]));
        p.apply(&set(&["public"], false), Certainty::Deferred, false);
        assert_eq!(p.current(), &SearchPath::Unknown);
    }

    #[test]
    fn commit_and_chain_keeps_the_block_open() {
        let mut p = PathTracker::new(known(&["ops"]));
        p.apply(&txn(TxnControl::Begin), Certainty::Alone, false);
        let mut chain = txn(TxnControl::Commit);
        chain.txn_chain = true;
        p.apply(&chain, Certainty::Alone, true);
        p.apply(&set(&["public"], false), Certainty::Alone, false);
        p.apply(&txn(TxnControl::Rollback), Certainty::Alone, false);
        assert_eq!(
            p.current(),
            &known(&["ops"]),
            "the chained block's SET was rolled back"
        );
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
pub fn initial_path(startup: &crate::protocol::startup::StartupMessage) -> SearchPath {
    // The last one wins: a `search_path` parameter (pgjdbc's currentSchema)
    // is applied after the `options` ones.
    let Some(value) = startup
        .settings()
        .into_iter()
        .rev()
        .find(|(k, _)| k == "search_path")
        .map(|(_, v)| v)
    else {
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

    fn startup(params: &[(&str, &str)]) -> crate::protocol::startup::StartupMessage {
        crate::protocol::startup::StartupMessage {
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn initial_path_folds_like_postgres() {
        assert_eq!(
            initial_path(&startup(&[
                ("user", "u"),
                ("options", "-c search_path=Ops,\"Mixed\"")
            ])),
            SearchPath::Known(vec!["ops".into(), "Mixed".into()])
        );
        assert_eq!(
            initial_path(&startup(&[("user", "u")])),
            SearchPath::Known(default_path())
        );
    }

    #[test]
    fn a_search_path_parameter_overrides_options() {
        assert_eq!(
            initial_path(&startup(&[
                ("user", "u"),
                ("options", "-c search_path=public"),
                ("search_path", "ops"),
            ])),
            SearchPath::Known(vec!["ops".into()])
        );
    }
}
