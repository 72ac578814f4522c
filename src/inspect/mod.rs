//! Statement inspection: parse SQL with PostgreSQL's own grammar (pg_query) and
//! describe what each statement touches.
//!
//! Why a real parser: pgward sits on a security boundary, and anything short
//! of Postgres' grammar (regexes, keyword scans, a different SQL dialect's
//! parser) disagrees with the server on comments, quoting, `U&` identifiers,
//! dollar quoting or nested statements, and every disagreement is a bypass.
//! The AST is walked once, exhaustively ([`children`] is generated to cover
//! every node type); nothing here ever looks at SQL text.
//!
//! Layout: [`walk`] is the generic walk, which delegates the meaning of nodes
//! to [`dml`] (content changes), [`ddl`] (definition changes) and
//! [`functions`] (function calls); [`utility`] handles session-state
//! statements at the top level; [`kind`] labels statements; [`names`] turns
//! AST names into [`ObjectName`]s.

pub mod cache;
mod children;
mod ddl;
mod dml;
mod functions;
mod kind;
pub mod model;
mod names;
pub mod shape;
mod utility;
mod walk;

#[cfg(test)]
mod tests;

pub use functions::DYNAMIC_SQL_FUNCTIONS;
pub use model::*;
pub use names::WHOLE_SCHEMA;

use pg_query::NodeRef;

/// Why a SQL string could not be inspected. Callers must refuse the text
/// (fail closed): what does not parse cannot be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("syntax error: {0}")]
    Parse(String),
}

/// Stack a thread needs to inspect the deepest statement PostgreSQL's parser
/// accepts (libpg_query stops serialising at about 5,000 levels; measured:
/// 16 MiB overflows there, 32 MiB does not). prost's own 100-level decoding
/// limit is lifted (feature `no-recursion-limit`) because it refused
/// legitimate SQL such as a 50-way join; every thread that calls [`inspect`]
/// must have this much stack instead (the runtime's workers do).
pub const STACK_BYTES: usize = 64 << 20;

/// Parses a (possibly multi-statement) SQL string and describes each
/// statement, in order. An empty string or one holding only comments yields
/// no statements.
///
/// Literals are lexed as Postgres does with `standard_conforming_strings = on`
/// (the server default). With it off, backslashes escape quotes and the server
/// would split the text differently, so a session must refuse to turn it off
/// (it appears in [`StatementInfo::settings_changed`]) or stop trusting this
/// function.
pub fn inspect(sql: &str) -> Result<Vec<StatementInfo>, InspectError> {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT)
        .map_err(|e| InspectError::Parse(e.to_string()))?;
    parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| {
            let node = raw
                .stmt
                .as_deref()
                .and_then(|n| n.node.as_ref())
                .ok_or_else(|| InspectError::Parse("statement without a parse tree".to_owned()))?;
            let mut info = statement(node.to_ref());
            if let NodeRef::ViewStmt(_) = node.to_ref() {
                writable_through_view(&mut info);
            }
            info.location = usize::try_from(raw.stmt_location).unwrap_or(0);
            info.outside_transaction = cannot_run_in_transaction(node.to_ref());
            Ok(info)
        })
        .collect()
}

/// A simple view is updatable: `DELETE FROM v` deletes from the table under
/// it. So creating a view over a relation is DDL on that relation, not a read.
/// A view over `pg_settings` inherits its UPDATE rule (`UPDATE v SET setting
/// = ...` calls `set_config()`): creating one counts as changing settings
/// pgward cannot name, like writing `pg_settings` itself.
fn writable_through_view(info: &mut StatementInfo) {
    let mut over_settings = false;
    for a in &mut info.accesses {
        if a.action == Action::Read {
            a.action = Action::Ddl;
            over_settings |= names::is_pg_settings(&a.object);
        }
    }
    if over_settings {
        walk::push_unique(&mut info.settings_changed, "*".to_owned());
        info.search_path = Some(SearchPathChange::Unknown);
    }
}

/// Statements PostgreSQL refuses to run inside a transaction block
/// (`PreventInTransactionBlock` in its source).
fn cannot_run_in_transaction(n: NodeRef<'_>) -> bool {
    use pg_query::protobuf::{ReindexObjectType, TransactionStmtKind};
    let has_option = |params: &[pg_query::protobuf::Node], name: &str| {
        params.iter().any(|p| {
            matches!(p.node.as_ref(), Some(pg_query::NodeEnum::DefElem(d)) if d.defname == name)
        })
    };
    match n {
        NodeRef::VacuumStmt(v) => v.is_vacuumcmd,
        NodeRef::CreatedbStmt(_)
        | NodeRef::DropdbStmt(_)
        | NodeRef::CreateTableSpaceStmt(_)
        | NodeRef::DropTableSpaceStmt(_)
        | NodeRef::AlterSystemStmt(_)
        | NodeRef::CreateSubscriptionStmt(_)
        | NodeRef::DropSubscriptionStmt(_) => true,
        NodeRef::IndexStmt(i) => i.concurrent,
        NodeRef::DropStmt(d) => d.concurrent,
        NodeRef::ReindexStmt(r) => {
            has_option(&r.params, "concurrently")
                || matches!(
                    ReindexObjectType::try_from(r.kind),
                    Ok(ReindexObjectType::ReindexObjectSystem
                        | ReindexObjectType::ReindexObjectDatabase)
                )
        }
        NodeRef::ClusterStmt(c) => c.relation.is_none(),
        NodeRef::TransactionStmt(t) => matches!(
            TransactionStmtKind::try_from(t.kind),
            Ok(TransactionStmtKind::TransStmtCommitPrepared
                | TransactionStmtKind::TransStmtRollbackPrepared)
        ),
        _ => false,
    }
}

/// Inspects one top-level statement.
fn statement(n: NodeRef<'_>) -> StatementInfo {
    let mut info = StatementInfo::default();
    match kind::statement_kind(n) {
        Some(k) => info.kind = k.name,
        None => {
            info.kind = "UNKNOWN".to_owned();
            info.opaque
                .push(Opaque::UnknownStatement("UNKNOWN".to_owned()));
        }
    }

    // PREPARE name AS <stmt>: inspect the inner statement on its own (the
    // session replays it on EXECUTE), and make the PREPARE itself carry the
    // inner effects so that preparing a forbidden statement is refused up
    // front. The search_path effect is not copied: PREPARE runs nothing.
    if let NodeRef::PrepareStmt(p) = n {
        match p.query.as_deref().and_then(|q| q.node.as_ref()) {
            Some(q) => {
                let inner = statement(q.to_ref());
                info.accesses.clone_from(&inner.accesses);
                info.functions.clone_from(&inner.functions);
                info.settings_changed.clone_from(&inner.settings_changed);
                info.opaque.clone_from(&inner.opaque);
                info.prepares = Some((p.name.clone(), Box::new(inner)));
            }
            None => info.opaque.push(Opaque::UnknownStatement(
                "PREPARE without a statement".to_owned(),
            )),
        }
        // Parameter types can only name types, but walk them anyway for
        // uniformity (they contain no relations or calls).
        let mut c = walk::Collector::default();
        for t in &p.argtypes {
            if let Some(t) = t.node.as_ref() {
                c.walk(t.to_ref());
            }
        }
        c.finish_into(&mut info);
        return info;
    }

    utility::apply(&mut info, n);
    let mut c = walk::Collector::default();
    c.walk(n);
    c.finish_into(&mut info);
    info
}
