//! Setting the tenant LOCAL at the start of every transaction, in the same
//! round trip as the client's own messages.
//!
//! Where a transaction starts is read from the statements themselves (and
//! re-synchronised with the server's ReadyForQuery status whenever nothing
//! is in flight):
//! - a simple Query outside a transaction block is its own (implicit)
//!   transaction: `SET LOCAL ...;` is spliced into its text before the first
//!   statement that may run in a transaction, and again after any COMMIT or
//!   ROLLBACK inside the same text; its CommandComplete is dropped;
//! - `BEGIN` gets the statement just before it, which PostgreSQL folds into
//!   the block it opens ("statements before BEGIN in one Query are
//!   retroactively part of the block"), and so does `BEGIN ISOLATION LEVEL`:
//!   SET takes no snapshot, so isolation can still be chosen after it;
//! - `COMMIT AND CHAIN` starts a block at once: the next statement gets one;
//! - an extended-protocol batch gets Parse/Bind/Execute/Close of the
//!   statement before its first Bind or Execute, answers dropped.
//!
//! Never in front of COMMIT, ROLLBACK or savepoint commands (in a failed
//! block the SET would fail and make the server skip the client's ROLLBACK),
//! nor of statements that cannot run in a transaction block (VACUUM, ...),
//! nor into a block the server reports as failed.

use crate::inspect::{StatementInfo, TxnControl};
use crate::protocol::TxnStatus;

/// The client's text with the tenant statement spliced in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub sql: String,
    /// Ordinals (0-based, in the rewritten text) of the inserted statements,
    /// whose CommandCompletes the client must not see.
    pub inserted: Vec<u32>,
}

/// One session's view of its transactions, for injection.
#[derive(Debug, Clone)]
pub struct TenantInjector {
    /// `SET LOCAL <setting> = '<tenant>'`.
    set_local: String,
    in_block: bool,
    /// The current transaction already has the tenant.
    tenant_set: bool,
}

impl TenantInjector {
    pub fn new(set_local: String) -> Self {
        TenantInjector {
            set_local,
            in_block: false,
            tenant_set: false,
        }
    }

    pub fn set_local(&self) -> &str {
        &self.set_local
    }

    /// Adopts the server's word on the transaction state; call only when no
    /// answer is outstanding, so the status is current.
    pub fn sync_with_server(&mut self, status: TxnStatus) {
        let in_block = status != TxnStatus::Idle;
        if !in_block {
            self.tenant_set = false;
        }
        self.in_block = in_block;
    }

    /// Plans a simple Query's injections. `failed`: the server reported a
    /// failed block with nothing in flight. `None`: send the text unchanged.
    pub fn plan_query(
        &mut self,
        sql: &str,
        statements: &[StatementInfo],
        failed: bool,
    ) -> Option<Rewrite> {
        if failed {
            return None;
        }
        let mut before = Vec::new();
        for (i, stmt) in statements.iter().enumerate() {
            if !self.tenant_set && may_follow_set_local(stmt) {
                before.push(i);
                self.tenant_set = true;
            }
            self.apply(stmt);
        }
        // The implicit transaction of this Query ends with it.
        if !self.in_block {
            self.tenant_set = false;
        }
        if before.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(sql.len() + before.len() * (self.set_local.len() + 2));
        let mut copied = 0;
        for &i in &before {
            let at = statements[i].location.min(sql.len());
            if !sql.is_char_boundary(at) {
                return None;
            }
            out.push_str(&sql[copied..at]);
            if at > 0 {
                out.push(' ');
            }
            out.push_str(&self.set_local);
            out.push(';');
            copied = at;
        }
        out.push_str(&sql[copied..]);
        let inserted = before
            .iter()
            .enumerate()
            .map(|(k, &i)| (i + k) as u32)
            .collect();
        Some(Rewrite { sql: out, inserted })
    }

    /// Before an extended-protocol Bind or Execute: whether the tenant
    /// statement must be sent first. Marks it as sent.
    pub fn before_execution(&mut self, failed: bool) -> bool {
        if failed || self.tenant_set {
            return false;
        }
        self.tenant_set = true;
        true
    }

    /// An extended-protocol Execute of `stmt` (its transaction effects).
    pub fn executed(&mut self, stmt: &StatementInfo) {
        self.apply(stmt);
    }

    /// Sync ends the implicit transaction of an extended-protocol batch.
    pub fn synced(&mut self) {
        if !self.in_block {
            self.tenant_set = false;
        }
    }

    fn apply(&mut self, stmt: &StatementInfo) {
        match stmt.txn {
            Some(TxnControl::Begin) => self.in_block = true,
            Some(TxnControl::Commit | TxnControl::Rollback | TxnControl::Prepare) => {
                self.in_block = stmt.txn_chain;
                self.tenant_set = false;
            }
            _ => {}
        }
    }
}

/// Whether the tenant statement may be placed right before `stmt`.
fn may_follow_set_local(stmt: &StatementInfo) -> bool {
    !stmt.outside_transaction && matches!(stmt.txn, None | Some(TxnControl::Begin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::inspect;

    fn injector() -> TenantInjector {
        TenantInjector::new("SET LOCAL app.current_tenant = 'acme'".into())
    }

    fn plan(inj: &mut TenantInjector, sql: &str) -> Option<Rewrite> {
        inj.plan_query(sql, &inspect(sql).unwrap(), false)
    }

    #[test]
    fn a_lone_statement_gets_the_tenant_every_time() {
        let mut inj = injector();
        for _ in 0..2 {
            let r = plan(&mut inj, "SELECT * FROM public.judgments").unwrap();
            assert_eq!(
                r.sql,
                "SET LOCAL app.current_tenant = 'acme';SELECT * FROM public.judgments"
            );
            assert_eq!(r.inserted, vec![0]);
            assert_eq!(inspect(&r.sql).unwrap().len(), 2);
        }
    }

    #[test]
    fn a_block_gets_it_once_before_begin() {
        let mut inj = injector();
        let r = plan(&mut inj, "BEGIN ISOLATION LEVEL SERIALIZABLE").unwrap();
        assert!(r.sql.starts_with("SET LOCAL"));
        assert_eq!(plan(&mut inj, "SELECT 1"), None);
        assert_eq!(plan(&mut inj, "COMMIT"), None);
        assert!(plan(&mut inj, "SELECT 1").is_some());
    }

    #[test]
    fn commit_inside_a_text_starts_a_new_transaction() {
        let mut inj = injector();
        let r = plan(&mut inj, "BEGIN; SELECT 1; COMMIT; SELECT 2").unwrap();
        assert_eq!(r.inserted, vec![0, 4]);
        let stmts = inspect(&r.sql).unwrap();
        assert_eq!(stmts.len(), 6);
        assert_eq!(stmts[4].settings_changed, vec!["app.current_tenant"]);
    }

    #[test]
    fn never_before_rollback_or_vacuum() {
        let mut inj = injector();
        assert_eq!(plan(&mut inj, "ROLLBACK"), None);
        assert_eq!(plan(&mut inj, "VACUUM"), None);
        assert_eq!(plan(&mut inj, "COMMIT PREPARED 'x'"), None);
    }

    #[test]
    fn commit_and_chain_needs_a_new_one() {
        let mut inj = injector();
        plan(&mut inj, "BEGIN").unwrap();
        assert_eq!(plan(&mut inj, "COMMIT AND CHAIN"), None);
        let r = plan(&mut inj, "SELECT 1").unwrap();
        assert_eq!(r.inserted, vec![0]);
        assert_eq!(plan(&mut inj, "SELECT 2"), None);
    }

    #[test]
    fn a_failed_block_gets_nothing() {
        let mut inj = injector();
        plan(&mut inj, "BEGIN").unwrap();
        inj.sync_with_server(TxnStatus::Failed);
        let sql = "ROLLBACK";
        assert_eq!(inj.plan_query(sql, &inspect(sql).unwrap(), true), None);
    }

    #[test]
    fn extended_batches_get_it_before_the_first_execution() {
        let mut inj = injector();
        assert!(inj.before_execution(false));
        assert!(!inj.before_execution(false));
        inj.synced();
        assert!(inj.before_execution(false));
        inj.executed(&inspect("BEGIN").unwrap()[0]);
        inj.synced();
        assert!(!inj.before_execution(false), "the block already has it");
        inj.executed(&inspect("COMMIT").unwrap()[0]);
        assert!(
            inj.before_execution(false),
            "a statement after COMMIT starts a new transaction"
        );
    }
}
