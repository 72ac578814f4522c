//! Function calls: recorded by name for the policy's function allow-list, plus
//! the few built-ins whose *meaning* the inspector must understand itself.

use pg_query::NodeEnum;
use pg_query::protobuf::{FuncCall, Node, a_const};

use super::model::Opaque;
use super::names;
use super::walk::Collector;

/// Functions that run SQL (or touch data) the inspector cannot see from the
/// call site: the statement text they execute is a run-time value, or the
/// relation they read/write is named by a string. Matched on the unqualified
/// name, case-insensitively and in any schema, because extensions such as
/// dblink can be installed in any schema; a false positive only costs a
/// refusal.
pub const DYNAMIC_SQL_FUNCTIONS: &[&str] = &[
    // dblink runs arbitrary SQL, possibly against this very database.
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_send_query",
    // The *_to_xml family executes a query string / reads a table by regclass.
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    // ts_stat(sqlquery) executes its argument.
    "ts_stat",
    // Large objects: writes to pg_largeobject and server-side file access that
    // never appear as a relation in the statement.
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_create",
    "lo_creat",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
];

/// Records one `FuncCall` node.
pub(super) fn func_call(c: &mut Collector, fc: &FuncCall) {
    let Some(name) = names::qualified(&fc.funcname) else {
        // The grammar only produces String parts; anything else is a shape we
        // do not understand.
        c.unknown("function call with an unreadable name");
        return;
    };
    if DYNAMIC_SQL_FUNCTIONS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&name.name))
    {
        c.opaque(Opaque::DynamicSql(name.name.clone()));
    }
    if name.name.eq_ignore_ascii_case("set_config") {
        set_config(c, fc);
    }
    if is_builtin(&name, &["nextval", "setval"]) {
        sequence_write(c, fc);
    }
    c.function(name);
}

fn is_builtin(name: &super::model::ObjectName, names: &[&str]) -> bool {
    matches!(name.schema.as_deref(), None | Some("pg_catalog"))
        && names.iter().any(|n| n.eq_ignore_ascii_case(&name.name))
}

/// `nextval('s')` / `setval('s', n)` advance a sequence: a write to the
/// relation named by the string. A name only known at run time cannot be
/// judged.
fn sequence_write(c: &mut Collector, fc: &FuncCall) {
    let target = argument(fc, 0, "regclass")
        .and_then(const_str)
        .and_then(names::regclass_literal);
    match target {
        Some(seq) => c.access(super::model::Action::Write, seq),
        None => c.opaque(Opaque::DynamicSql(
            "nextval/setval of a sequence named at run time".to_owned(),
        )),
    }
}

/// `set_config(setting_name, new_value, is_local)` changes a setting exactly
/// like SET does. Any schema's `set_config` is treated as the built-in one
/// (conservative). The value is never interpreted: a search_path changed this
/// way becomes [`super::SearchPathChange::Unknown`].
fn set_config(c: &mut Collector, fc: &FuncCall) {
    let name = if fc.func_variadic {
        None
    } else {
        argument(fc, 0, "setting_name").and_then(const_str)
    };
    match name {
        Some(n) => {
            let n = n.to_lowercase();
            if n == "search_path" {
                c.search_path_unknown();
            }
            c.setting(n);
        }
        None => {
            c.setting("*".to_owned());
            c.search_path_unknown();
        }
    }
}

/// The argument at `position`, or the one passed by name as `name => ...`.
fn argument<'a>(fc: &'a FuncCall, position: usize, name: &str) -> Option<&'a Node> {
    for a in &fc.args {
        if let Some(NodeEnum::NamedArgExpr(na)) = a.node.as_ref()
            && na.name.eq_ignore_ascii_case(name)
        {
            return na.arg.as_deref();
        }
    }
    let a = fc.args.get(position)?;
    match a.node.as_ref()? {
        NodeEnum::NamedArgExpr(_) => None,
        _ => Some(a),
    }
}

/// A string constant, possibly behind casts (`'search_path'::text`).
fn const_str(n: &Node) -> Option<&str> {
    match n.node.as_ref()? {
        NodeEnum::AConst(k) => match k.val.as_ref()? {
            a_const::Val::Sval(s) => Some(&s.sval),
            _ => None,
        },
        NodeEnum::TypeCast(t) => const_str(t.arg.as_deref()?),
        _ => None,
    }
}
