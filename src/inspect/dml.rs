//! Statements that change table *contents* (and the relations they create
//! from a query). Called for every node of the walk, so a DML statement nested
//! anywhere (CTE, COPY (...), EXPLAIN, PREPARE, rule action, SQL function
//! body) upgrades its target to a Write exactly like a top-level one.

use pg_query::protobuf::{RangeVar, ReindexObjectType};
use pg_query::{NodeEnum, NodeRef};

use super::model::Action;
use super::names;
use super::walk::Collector;

/// PostgreSQL's `AccessShareLock` (lockdefs.h): LockStmt.mode is that number.
const ACCESS_SHARE_LOCK: i32 = 1;

/// Handles `n` if it is a data-modifying node; `true` when handled.
pub(super) fn visit(c: &mut Collector, n: NodeRef<'_>) -> bool {
    match n {
        // `DELETE FROM ONLY t` is the RangeVar t with inh = false: still t.
        NodeRef::InsertStmt(s) => write_target(c, s.relation.as_ref()),
        NodeRef::UpdateStmt(s) => write_target(c, s.relation.as_ref()),
        NodeRef::DeleteStmt(s) => write_target(c, s.relation.as_ref()),
        NodeRef::MergeStmt(s) => write_target(c, s.relation.as_ref()),
        NodeRef::TruncateStmt(s) => {
            for r in &s.relations {
                if let Some(NodeEnum::RangeVar(rv)) = r.node.as_ref() {
                    write_target(c, Some(rv));
                } else {
                    c.unknown("TRUNCATE of an unreadable relation");
                }
            }
        }
        // COPY FROM loads rows into the table; COPY TO only reads it (the
        // generic RangeVar rule already says so). `COPY (query) TO` needs
        // nothing here: the query is walked like any other subtree.
        NodeRef::CopyStmt(s) => {
            if s.is_from {
                write_target(c, s.relation.as_ref());
            }
        }
        // Rewrites the materialized view's contents.
        NodeRef::RefreshMatViewStmt(s) => c.rel(Action::Write, s.relation.as_ref()),
        // Maintenance commands rewrite or re-derive the table's storage; treat
        // them as writes so only identities allowed to write may run them.
        NodeRef::ClusterStmt(s) => c.rel(Action::Write, s.relation.as_ref()),
        NodeRef::VacuumRelation(r) => c.rel(Action::Write, r.relation.as_ref()),
        NodeRef::ReindexStmt(s) => {
            c.rel(Action::Write, s.relation.as_ref());
            if s.kind == ReindexObjectType::ReindexObjectSchema as i32 && !s.name.is_empty() {
                c.access(Action::Write, names::whole_schema(&s.name));
            }
        }
        // PostgreSQL lets a role with only SELECT take ACCESS SHARE; every
        // stronger mode needs INSERT, UPDATE, DELETE or TRUNCATE on the table
        // (LockTableAclCheck), and ACCESS EXCLUSIVE on a protected table would
        // stall every approved function that touches it: a write, as the
        // server itself counts it.
        NodeRef::LockStmt(s) if s.mode > ACCESS_SHARE_LOCK => {
            for r in &s.relations {
                if let Some(NodeEnum::RangeVar(rv)) = r.node.as_ref() {
                    c.rel(Action::Write, Some(rv));
                } else {
                    c.unknown("LOCK of an unreadable relation");
                }
            }
        }
        // SELECT INTO / CREATE TABLE AS / CREATE MATERIALIZED VIEW create the
        // relation named here; its sources are read by the walked query.
        NodeRef::IntoClause(i) => c.rel(Action::Ddl, i.rel.as_ref()),
        _ => return false,
    }
    true
}

/// Records a Write on a DML target. Writing `pg_settings` (`UPDATE pg_settings
/// SET setting = ...`) is Postgres' documented alternative to SET: its rule
/// calls set_config, so the settings become unknown.
fn write_target(c: &mut Collector, rv: Option<&RangeVar>) {
    let Some(rv) = rv else { return };
    let name = names::range_var(rv);
    if names::is_pg_settings(&name) {
        c.setting("*".to_owned());
        c.search_path_unknown();
    }
    c.access(Action::Write, name);
}
