//! Turning the AST's name shapes (RangeVar, lists of String nodes, TypeName,
//! ObjectWithArgs) into [`ObjectName`]s.
//!
//! Postgres' grammar has already folded unquoted identifiers to lower case and
//! decoded quoted / `U&"..."` identifiers, so the strings in the AST are the
//! exact catalog names: we never re-fold or re-quote anything here.

use pg_query::NodeEnum;
use pg_query::protobuf::{Node, ObjectType, RangeVar};

use super::model::ObjectName;

/// The `name` used for "every object in this schema" (DROP SCHEMA, GRANT ... ON
/// ALL TABLES IN SCHEMA, ALTER DEFAULT PRIVILEGES IN SCHEMA, ...).
pub const WHOLE_SCHEMA: &str = "*";

/// Name of the relation a RangeVar denotes. The catalog part of
/// `db.schema.table` is dropped: Postgres rejects any database but the current
/// one. An unqualified temporary relation (CREATE TEMP TABLE t) lives in the
/// session's temporary schema, which `pg_temp` always designates.
pub(super) fn range_var(rv: &RangeVar) -> ObjectName {
    let schema = if !rv.schemaname.is_empty() {
        Some(rv.schemaname.clone())
    } else if rv.relpersistence == "t" {
        Some("pg_temp".to_owned())
    } else {
        None
    };
    ObjectName {
        schema,
        name: rv.relname.clone(),
    }
}

/// `{schema, "*"}`: the whole schema.
/// `pg_settings` (unqualified or in `pg_catalog`): the system view whose
/// UPDATE rule calls `set_config()`, so writing it, directly or through a
/// view over it, changes session settings.
pub(super) fn is_pg_settings(name: &ObjectName) -> bool {
    name.name == "pg_settings" && name.schema.as_deref().is_none_or(|s| s == "pg_catalog")
}

pub(super) fn whole_schema(schema: &str) -> ObjectName {
    ObjectName {
        schema: Some(schema.to_owned()),
        name: WHOLE_SCHEMA.to_owned(),
    }
}

/// The text of a `String` node.
pub(super) fn str_node(n: &Node) -> Option<&str> {
    match n.node.as_ref()? {
        NodeEnum::String(s) => Some(&s.sval),
        _ => None,
    }
}

/// The items of a `List` node.
pub(super) fn list_node(n: &Node) -> Option<&[Node]> {
    match n.node.as_ref()? {
        NodeEnum::List(l) => Some(&l.items),
        _ => None,
    }
}

/// A possibly qualified name given as a list of String nodes (`any_name` in
/// the grammar): `[name]`, `[schema, name]` or `[catalog, schema, name]`.
/// `None` when the list is empty or holds anything but strings, so callers can
/// fail closed.
pub(super) fn qualified(parts: &[Node]) -> Option<ObjectName> {
    let strs: Option<Vec<&str>> = parts.iter().map(str_node).collect();
    let strs = strs?;
    let (name, rest) = strs.split_last()?;
    Some(ObjectName {
        schema: rest.last().map(|s| (*s).to_owned()),
        name: (*name).to_owned(),
    })
}

/// Name carried by a single object node of a DROP / COMMENT / GRANT / ALTER
/// statement, whatever its shape.
fn object_node_name(n: &Node) -> Option<ObjectName> {
    match n.node.as_ref()? {
        NodeEnum::RangeVar(rv) => Some(range_var(rv)),
        NodeEnum::List(l) => qualified(&l.items),
        NodeEnum::TypeName(t) => qualified(&t.names),
        NodeEnum::ObjectWithArgs(o) => qualified(&o.objname),
        _ => None,
    }
}

/// The schema-resident objects a DROP/COMMENT/SECURITY LABEL/RENAME/ALTER ...
/// of `objtype` on `obj` affects, mirroring Postgres' `get_object_address`.
///
/// For sub-objects of a table (columns, constraints, triggers, rules,
/// policies) the affected object is the table: the name list is
/// `[schema?, table, member]`. `None` for object types that do not live in a
/// schema (databases, roles, extensions, languages, ...) or an unexpected
/// shape: the caller reports the statement as not understood.
pub(super) fn object_targets(objtype: ObjectType, obj: &Node) -> Option<Vec<ObjectName>> {
    use ObjectType as O;
    match objtype {
        O::ObjectTable
        | O::ObjectView
        | O::ObjectMatview
        | O::ObjectIndex
        | O::ObjectSequence
        | O::ObjectForeignTable
        | O::ObjectCollation
        | O::ObjectConversion
        | O::ObjectStatisticExt
        | O::ObjectTsparser
        | O::ObjectTsdictionary
        | O::ObjectTstemplate
        | O::ObjectTsconfiguration
        | O::ObjectType
        | O::ObjectDomain
        | O::ObjectFunction
        | O::ObjectProcedure
        | O::ObjectRoutine
        | O::ObjectAggregate
        | O::ObjectOperator => object_node_name(obj).map(|n| vec![n]),
        O::ObjectColumn
        | O::ObjectTabconstraint
        | O::ObjectTrigger
        | O::ObjectRule
        | O::ObjectPolicy => {
            let items = list_node(obj)?;
            let (_member, table) = items.split_last()?;
            qualified(table).map(|n| vec![n])
        }
        // COMMENT ON CONSTRAINT c ON DOMAIN d: [TypeName, String].
        O::ObjectDomconstraint => {
            let first = list_node(obj)?.first()?;
            object_node_name(first).map(|n| vec![n])
        }
        O::ObjectSchema => str_node(obj).map(|s| vec![whole_schema(s)]),
        _ => None,
    }
}

/// `OBJECT_FOREIGN_TABLE` -> `"FOREIGN TABLE"`, for statement kinds and
/// UnknownStatement labels.
pub(super) fn object_type_label(objtype: ObjectType) -> String {
    objtype
        .as_str_name()
        .trim_start_matches("OBJECT_")
        .replace('_', " ")
}

/// The relation a regclass literal (`'ops.seq'`, `'"Ops"."Seq"'`) names, read
/// with PostgreSQL's own identifier rules by parsing it as a FROM item.
/// `None` unless it is exactly one plain relation name.
pub(super) fn regclass_literal(text: &str) -> Option<ObjectName> {
    let parsed = pg_query::parse(
        &format!("SELECT FROM {text}"),
        pg_query::ParserOptions::DEFAULT,
    )
    .ok()?;
    let [stmt] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let Some(pg_query::NodeEnum::SelectStmt(select)) = stmt.stmt.as_ref()?.node.as_ref() else {
        return None;
    };
    let [from] = select.from_clause.as_slice() else {
        return None;
    };
    match from.node.as_ref()? {
        pg_query::NodeEnum::RangeVar(rv) => Some(range_var(rv)),
        _ => None,
    }
}
