//! The single recursive walk over a statement's AST.
//!
//! Every node of the statement is visited (see [`super::children`], generated
//! to be exhaustive), so nothing nested can hide: data-modifying CTEs,
//! `COPY (query)`, EXPLAIN, sub-selects, LATERAL, set operations, rule actions,
//! SQL-standard function bodies, ... are all seen by the same code.
//!
//! The collection rule is deliberately simple so that it is easy to trust:
//! * every `RangeVar` anywhere is a [`Action::Read`] (unless it names a CTE
//!   in scope);
//! * statement nodes then *upgrade* the relations they modify to
//!   [`Action::Write`] / [`Action::Ddl`] ([`super::dml`], [`super::ddl`]),
//!   wherever they are nested;
//! * every `FuncCall` is recorded ([`super::functions`]).

use pg_query::NodeRef;
use pg_query::protobuf::{RangeVar, WithClause};

use super::children::children;
use super::kind::statement_kind;
use super::model::{Access, Action, ObjectName, Opaque, SearchPathChange, StatementInfo};
use super::names;
use super::{ddl, dml, functions};

/// Defensive bound on recursion. prost already refuses to decode protobuf
/// nested deeper than 100 messages (the parse then fails closed), so this is
/// never expected to trigger.
const MAX_DEPTH: usize = 2_000;

/// What the walk has learned so far about one statement.
#[derive(Debug, Default)]
pub(super) struct Collector {
    accesses: Vec<Access>,
    functions: Vec<ObjectName>,
    settings: Vec<String>,
    search_path_unknown: bool,
    opaque: Vec<Opaque>,
    /// Names of the CTEs visible at the current point of the walk.
    ctes: Vec<String>,
    depth: usize,
}

impl Collector {
    pub(super) fn access(&mut self, action: Action, object: ObjectName) {
        self.accesses.push(Access { action, object });
    }

    pub(super) fn rel(&mut self, action: Action, rv: Option<&RangeVar>) {
        if let Some(rv) = rv {
            self.access(action, names::range_var(rv));
        }
    }

    pub(super) fn function(&mut self, name: ObjectName) {
        self.functions.push(name);
    }

    pub(super) fn setting(&mut self, name: String) {
        self.settings.push(name);
    }

    pub(super) fn search_path_unknown(&mut self) {
        self.search_path_unknown = true;
    }

    pub(super) fn opaque(&mut self, o: Opaque) {
        self.opaque.push(o);
    }

    pub(super) fn unknown(&mut self, what: impl Into<String>) {
        self.opaque(Opaque::UnknownStatement(what.into()));
    }

    /// Walks `n` and everything below it.
    pub(super) fn walk(&mut self, n: NodeRef<'_>) {
        if self.depth >= MAX_DEPTH {
            self.unknown("statement nested too deeply");
            return;
        }
        self.depth += 1;
        self.visit(n);
        match with_clause(n) {
            Some(w) => self.walk_with_scope(n, w),
            None => self.walk_children(n),
        }
        self.depth -= 1;
    }

    fn walk_children(&mut self, n: NodeRef<'_>) {
        let mut kids = Vec::new();
        children(n, &mut kids);
        for k in kids {
            self.walk(k);
        }
    }

    /// Walks a statement that carries a WITH clause, keeping track of which
    /// CTE names are visible where, so that `FROM d` after `WITH d AS (...)`
    /// is not reported as a read of a real relation `d`.
    ///
    /// Scoping follows Postgres: a non-recursive CTE sees only the CTEs listed
    /// before it (so `WITH a AS (SELECT * FROM a)` reads the real table `a`),
    /// a `WITH RECURSIVE` list sees all of them, and the statement body sees
    /// all. Only unqualified reads are ever suppressed; write and DDL targets
    /// are recorded regardless (a DML target never resolves to a CTE).
    fn walk_with_scope(&mut self, n: NodeRef<'_>, w: &WithClause) {
        let base = self.ctes.len();
        let cte_names: Vec<String> = w
            .ctes
            .iter()
            .filter_map(|c| match c.node.as_ref() {
                Some(pg_query::NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.clone()),
                _ => None,
            })
            .collect();
        if w.recursive {
            self.ctes.extend(cte_names.iter().cloned());
        }
        for c in &w.ctes {
            if let Some(e) = c.node.as_ref() {
                self.walk(e.to_ref());
                if let (false, pg_query::NodeEnum::CommonTableExpr(cte)) = (w.recursive, e) {
                    self.ctes.push(cte.ctename.clone());
                }
            }
        }
        self.ctes.truncate(base);
        self.ctes.extend(cte_names);
        let mut kids = Vec::new();
        children(n, &mut kids);
        for k in kids {
            if !matches!(k, NodeRef::WithClause(_)) {
                self.walk(k);
            }
        }
        self.ctes.truncate(base);
    }

    /// The per-node hook: what this node itself means, children aside.
    fn visit(&mut self, n: NodeRef<'_>) {
        match n {
            NodeRef::RangeVar(rv) => {
                let is_cte = rv.schemaname.is_empty()
                    && rv.catalogname.is_empty()
                    && self.ctes.contains(&rv.relname);
                if !is_cte {
                    self.access(Action::Read, names::range_var(rv));
                }
            }
            NodeRef::FuncCall(fc) => functions::func_call(self, fc),
            NodeRef::ExecuteStmt(s) => self.opaque(Opaque::ExecutePrepared(s.name.clone())),
            NodeRef::DoStmt(_) => self.opaque(Opaque::CodeBlock("DO".to_owned())),
            _ => {
                if dml::visit(self, n) || ddl::visit(self, n) {
                    return;
                }
                if let Some(k) = statement_kind(n)
                    && !k.modeled
                {
                    self.unknown(k.name);
                }
            }
        }
    }

    /// Moves what was collected into `info`, deduplicating.
    ///
    /// Accesses: one entry per (object, action), in first-seen order, except
    /// that a Read of an object is dropped when the same statement also Writes
    /// or Ddl's it (the stronger action subsumes it: `DELETE FROM t` is a Write
    /// on `t`, not Read+Write). Write and Ddl on the same object are both kept,
    /// since neither implies the other in a policy.
    pub(super) fn finish_into(self, info: &mut StatementInfo) {
        let strong: Vec<&ObjectName> = self
            .accesses
            .iter()
            .filter(|a| a.action != Action::Read)
            .map(|a| &a.object)
            .collect();
        let mut out: Vec<Access> = Vec::new();
        for a in &self.accesses {
            if a.action == Action::Read && strong.contains(&&a.object) {
                continue;
            }
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        for a in out {
            push_unique(&mut info.accesses, a);
        }
        for f in self.functions {
            push_unique(&mut info.functions, f);
        }
        for s in self.settings {
            push_unique(&mut info.settings_changed, s);
        }
        for o in self.opaque {
            push_unique(&mut info.opaque, o);
        }
        if self.search_path_unknown {
            info.search_path = Some(SearchPathChange::Unknown);
        }
    }
}

pub(super) fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The WITH clause of a statement node that can carry one.
fn with_clause(n: NodeRef<'_>) -> Option<&WithClause> {
    match n {
        NodeRef::SelectStmt(s) => s.with_clause.as_ref(),
        NodeRef::InsertStmt(s) => s.with_clause.as_ref(),
        NodeRef::UpdateStmt(s) => s.with_clause.as_ref(),
        NodeRef::DeleteStmt(s) => s.with_clause.as_ref(),
        NodeRef::MergeStmt(s) => s.with_clause.as_ref(),
        _ => None,
    }
}
