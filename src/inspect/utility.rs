//! Session-state statements: SET/RESET, transaction control, DISCARD,
//! DEALLOCATE, ALTER ROLE/DATABASE ... SET.
//!
//! These effects only exist at the top level of a statement: a
//! `VariableSetStmt` nested in CREATE FUNCTION ... SET or ALTER ROLE ... SET
//! does not change the *current* session, so the walk ignores nested ones and
//! this module is called once per top-level statement.

use pg_query::NodeRef;
use pg_query::protobuf::{
    DiscardMode, Node, TransactionStmtKind, VariableSetKind, VariableSetStmt, a_const,
};

use super::model::{SearchPathChange, StatementInfo, TxnControl};

/// Wildcard setting name: "every setting may have changed".
const ALL_SETTINGS: &str = "*";

/// Applies the session-state effects of top-level statement `n` to `info`.
pub(super) fn apply(info: &mut StatementInfo, n: NodeRef<'_>) {
    match n {
        NodeRef::VariableSetStmt(s) => variable_set(info, s),
        NodeRef::TransactionStmt(s) => {
            info.txn = Some(txn(s.kind));
            info.txn_chain = s.chain;
        }
        // DISCARD ALL = RESET ALL + DEALLOCATE ALL + CLOSE ALL + ...
        NodeRef::DiscardStmt(s) if s.target == DiscardMode::DiscardAll as i32 => {
            info.settings_changed.push(ALL_SETTINGS.to_owned());
            info.search_path = Some(SearchPathChange::Reset { local: false });
            info.deallocates = Some(None);
        }
        NodeRef::DeallocateStmt(s) => {
            info.deallocates = Some(if s.isall || s.name.is_empty() {
                None
            } else {
                Some(s.name.clone())
            });
        }
        // These change the defaults of future sessions, not this one.
        NodeRef::AlterRoleSetStmt(s) => persistent_setting(info, s.setstmt.as_ref()),
        NodeRef::AlterDatabaseSetStmt(s) => persistent_setting(info, s.setstmt.as_ref()),
        NodeRef::AlterSystemStmt(s) => persistent_setting(info, s.setstmt.as_ref()),
        _ => {}
    }
}

fn txn(kind: i32) -> TxnControl {
    use TransactionStmtKind as T;
    match T::try_from(kind) {
        Ok(T::TransStmtBegin | T::TransStmtStart) => TxnControl::Begin,
        Ok(T::TransStmtCommit) => TxnControl::Commit,
        Ok(T::TransStmtRollback) => TxnControl::Rollback,
        Ok(T::TransStmtSavepoint) => TxnControl::Savepoint,
        Ok(T::TransStmtRollbackTo) => TxnControl::RollbackToSavepoint,
        Ok(T::TransStmtRelease) => TxnControl::ReleaseSavepoint,
        Ok(T::TransStmtPrepare) => TxnControl::Prepare,
        _ => TxnControl::Other,
    }
}

/// Setting names are case-insensitive in Postgres (`SET "Search_Path" = x`
/// sets search_path), so they are lower-cased before anyone compares them.
fn setting_name(s: &VariableSetStmt) -> String {
    s.name.to_lowercase()
}

fn variable_set(info: &mut StatementInfo, s: &VariableSetStmt) {
    use VariableSetKind as K;
    let name = setting_name(s);
    let is_path = name == "search_path";
    match K::try_from(s.kind) {
        Ok(K::VarSetValue) => {
            if is_path {
                info.search_path = Some(search_path_value(&s.args, s.is_local));
            }
            info.settings_changed.push(name);
        }
        Ok(K::VarSetDefault | K::VarReset) => {
            if is_path {
                info.search_path = Some(SearchPathChange::Reset { local: s.is_local });
            }
            info.settings_changed.push(name);
        }
        Ok(K::VarResetAll) => {
            info.settings_changed.push(ALL_SETTINGS.to_owned());
            info.search_path = Some(SearchPathChange::Reset { local: false });
        }
        // SET TRANSACTION / SET SESSION CHARACTERISTICS: transaction modes only.
        Ok(K::VarSetMulti) => {}
        // FROM CURRENT (or an unknown kind): not followed.
        Ok(K::VarSetCurrent) => {
            if is_path {
                info.search_path = Some(SearchPathChange::Unknown);
            }
            info.settings_changed.push(name);
        }
        Ok(K::Undefined) | Err(_) => {
            info.settings_changed.push(ALL_SETTINGS.to_owned());
            info.search_path = Some(SearchPathChange::Unknown);
        }
    }
}

/// `SET search_path = a, "B", 'c d'`: Postgres quotes each list element as an
/// identifier (GUC_LIST_QUOTE), so every element is one schema name exactly
/// as the grammar produced it: `'A'` is the schema "A", `'a, b'` is one schema
/// named "a, b", and `"$user"` stays `$user`. Anything that is not a plain
/// constant makes the path unknown.
fn search_path_value(args: &[Node], local: bool) -> SearchPathChange {
    let mut schemas = Vec::with_capacity(args.len());
    for a in args {
        let Some(pg_query::NodeEnum::AConst(k)) = a.node.as_ref() else {
            return SearchPathChange::Unknown;
        };
        match k.val.as_ref() {
            Some(a_const::Val::Sval(s)) => schemas.push(s.sval.clone()),
            Some(a_const::Val::Ival(i)) => schemas.push(i.ival.to_string()),
            Some(a_const::Val::Fval(f)) => schemas.push(f.fval.clone()),
            _ => return SearchPathChange::Unknown,
        }
    }
    SearchPathChange::Set { schemas, local }
}

fn persistent_setting(info: &mut StatementInfo, s: Option<&VariableSetStmt>) {
    let name = match s {
        Some(s) if s.kind != VariableSetKind::VarResetAll as i32 => setting_name(s),
        _ => ALL_SETTINGS.to_owned(),
    };
    info.settings_changed.push(name);
    info.persists_settings = true;
}
