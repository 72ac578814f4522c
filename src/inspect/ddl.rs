//! Statements that change the *definition*, ownership or privileges of
//! schema-resident objects: everything here is [`Action::Ddl`].
//!
//! Objects that do not live in a schema (roles, databases, extensions,
//! tablespaces, ...) are not modelled; their statements are reported as
//! [`super::Opaque::UnknownStatement`] by the walk so a restricted identity is
//! refused (fail closed).

use pg_query::protobuf::{AlterTableType, GrantTargetType, Node, ObjectType, RoleSpecType};
use pg_query::{NodeEnum, NodeRef};

use super::model::{Action, ObjectName};
use super::names::{self, object_targets, object_type_label, qualified, whole_schema};
use super::walk::Collector;

/// Handles `n` if it is a definition-changing node; `true` when handled.
pub(super) fn visit(c: &mut Collector, n: NodeRef<'_>) -> bool {
    match n {
        // A foreign key adds triggers to the referenced table and lets its
        // owner block deletes there: DDL on the referenced table.
        NodeRef::Constraint(con) if con.pktable.is_some() => {
            c.rel(Action::Ddl, con.pktable.as_ref());
        }
        NodeRef::CreateStmt(s) => {
            c.rel(Action::Ddl, s.relation.as_ref());
            // INHERITS (p) / PARTITION OF p attach the new table to p, which
            // changes what queries on p return: Ddl on the parent too.
            for p in &s.inh_relations {
                ddl_range_var(c, p, "CREATE TABLE");
            }
        }
        NodeRef::AlterTableStmt(s) => {
            c.rel(Action::Ddl, s.relation.as_ref());
            for cmd in &s.cmds {
                let Some(NodeEnum::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                    continue;
                };
                let inherit = cmd.subtype == AlterTableType::AtAddInherit as i32
                    || cmd.subtype == AlterTableType::AtDropInherit as i32;
                if inherit && let Some(def) = cmd.def.as_deref() {
                    ddl_range_var(c, def, "ALTER TABLE INHERIT");
                }
            }
        }
        // ALTER TABLE t ATTACH/DETACH PARTITION p changes p as well.
        NodeRef::PartitionCmd(p) => c.rel(Action::Ddl, p.name.as_ref()),
        NodeRef::DropStmt(s) => {
            let ty = object_type(s.remove_type);
            for o in &s.objects {
                targets(c, ty, Some(o), "DROP");
            }
        }
        NodeRef::GrantStmt(s) => grant(c, s),
        NodeRef::AlterDefaultPrivilegesStmt(s) => {
            let mut any = false;
            for o in &s.options {
                if let Some(NodeEnum::DefElem(d)) = o.node.as_ref()
                    && d.defname == "schemas"
                {
                    let items = d.arg.as_deref().and_then(names::list_node).unwrap_or(&[]);
                    for it in items {
                        if let Some(schema) = names::str_node(it) {
                            c.access(Action::Ddl, whole_schema(schema));
                            any = true;
                        }
                    }
                }
            }
            if !any {
                // Without IN SCHEMA the change applies to every schema.
                c.unknown("ALTER DEFAULT PRIVILEGES (all schemas)");
            }
        }
        NodeRef::CreateSchemaStmt(s) => {
            let name = if !s.schemaname.is_empty() {
                Some(s.schemaname.as_str())
            } else {
                // CREATE SCHEMA AUTHORIZATION bob names the schema after the role.
                s.authrole
                    .as_ref()
                    .filter(|r| r.roletype == RoleSpecType::RolespecCstring as i32)
                    .map(|r| r.rolename.as_str())
            };
            match name {
                Some(n) => c.access(Action::Ddl, whole_schema(n)),
                None => c.unknown("CREATE SCHEMA AUTHORIZATION CURRENT_USER"),
            }
        }
        NodeRef::ImportForeignSchemaStmt(s) => c.access(Action::Ddl, whole_schema(&s.local_schema)),
        NodeRef::IndexStmt(s) => c.rel(Action::Ddl, s.relation.as_ref()),
        NodeRef::CreateTrigStmt(s) => c.rel(Action::Ddl, s.relation.as_ref()),
        NodeRef::RuleStmt(s) => c.rel(Action::Ddl, s.relation.as_ref()),
        NodeRef::CreatePolicyStmt(s) => c.rel(Action::Ddl, s.table.as_ref()),
        NodeRef::AlterPolicyStmt(s) => c.rel(Action::Ddl, s.table.as_ref()),
        NodeRef::ViewStmt(s) => c.rel(Action::Ddl, s.view.as_ref()),
        NodeRef::CreateSeqStmt(s) => c.rel(Action::Ddl, s.sequence.as_ref()),
        NodeRef::AlterSeqStmt(s) => c.rel(Action::Ddl, s.sequence.as_ref()),
        NodeRef::CompositeTypeStmt(s) => c.rel(Action::Ddl, s.typevar.as_ref()),
        NodeRef::CreateStatsStmt(s) => {
            for r in &s.relations {
                ddl_range_var(c, r, "CREATE STATISTICS");
            }
            if !s.defnames.is_empty() {
                ddl_name(c, &s.defnames, "CREATE STATISTICS");
            }
        }
        NodeRef::AlterStatsStmt(s) => ddl_name(c, &s.defnames, "ALTER STATISTICS"),
        NodeRef::CreateFunctionStmt(s) => {
            let kind = if s.is_procedure {
                "CREATE PROCEDURE"
            } else {
                "CREATE FUNCTION"
            };
            ddl_name(c, &s.funcname, kind);
            c.opaque(super::model::Opaque::CodeBlock(kind.to_owned()));
        }
        NodeRef::AlterFunctionStmt(s) => match s.func.as_ref() {
            Some(f) => ddl_name(c, &f.objname, "ALTER FUNCTION"),
            None => c.unknown("ALTER FUNCTION"),
        },
        NodeRef::CreateDomainStmt(s) => ddl_name(c, &s.domainname, "CREATE DOMAIN"),
        NodeRef::AlterDomainStmt(s) => ddl_name(c, &s.type_name, "ALTER DOMAIN"),
        NodeRef::CreateEnumStmt(s) => ddl_name(c, &s.type_name, "CREATE TYPE"),
        NodeRef::CreateRangeStmt(s) => ddl_name(c, &s.type_name, "CREATE TYPE"),
        NodeRef::AlterEnumStmt(s) => ddl_name(c, &s.type_name, "ALTER TYPE"),
        NodeRef::AlterTypeStmt(s) => ddl_name(c, &s.type_name, "ALTER TYPE"),
        NodeRef::DefineStmt(s) => ddl_name(c, &s.defnames, "CREATE"),
        NodeRef::AlterOperatorStmt(s) => match s.opername.as_ref() {
            Some(o) => ddl_name(c, &o.objname, "ALTER OPERATOR"),
            None => c.unknown("ALTER OPERATOR"),
        },
        NodeRef::AlterCollationStmt(s) => ddl_name(c, &s.collname, "ALTER COLLATION"),
        NodeRef::CommentStmt(s) => {
            targets(c, object_type(s.objtype), s.object.as_deref(), "COMMENT ON")
        }
        NodeRef::SecLabelStmt(s) => targets(
            c,
            object_type(s.objtype),
            s.object.as_deref(),
            "SECURITY LABEL ON",
        ),
        NodeRef::RenameStmt(s) => rename(c, s),
        NodeRef::AlterObjectSchemaStmt(s) => {
            // ALTER ... SET SCHEMA: Ddl on the object where it is and on the
            // name it gets in the new schema.
            let mut objs = Vec::new();
            if let Some(rv) = s.relation.as_ref() {
                objs.push(names::range_var(rv));
            } else {
                match s
                    .object
                    .as_deref()
                    .and_then(|o| object_targets(object_type(s.object_type), o))
                {
                    Some(t) => objs.extend(t),
                    None => {
                        c.unknown(format!(
                            "ALTER {} SET SCHEMA",
                            object_type_label(object_type(s.object_type))
                        ));
                    }
                }
            }
            for o in objs {
                let moved = ObjectName {
                    schema: Some(s.newschema.clone()),
                    name: o.name.clone(),
                };
                c.access(Action::Ddl, o);
                c.access(Action::Ddl, moved);
            }
        }
        NodeRef::AlterOwnerStmt(s) => {
            if s.relation.is_some() {
                c.rel(Action::Ddl, s.relation.as_ref());
            } else {
                targets(
                    c,
                    object_type(s.object_type),
                    s.object.as_deref(),
                    "ALTER OWNER OF",
                );
            }
        }
        NodeRef::AlterObjectDependsStmt(s) => {
            if s.relation.is_some() {
                c.rel(Action::Ddl, s.relation.as_ref());
            } else {
                targets(
                    c,
                    object_type(s.object_type),
                    s.object.as_deref(),
                    "ALTER DEPENDS ON",
                );
            }
        }
        _ => return false,
    }
    true
}

fn object_type(raw: i32) -> ObjectType {
    ObjectType::try_from(raw).unwrap_or(ObjectType::Undefined)
}

/// Ddl on every object `obj` designates, or UnknownStatement when it is not a
/// schema-resident object we can name.
fn targets(c: &mut Collector, ty: ObjectType, obj: Option<&Node>, verb: &str) {
    match obj.and_then(|o| object_targets(ty, o)) {
        Some(list) => {
            for o in list {
                c.access(Action::Ddl, o);
            }
        }
        None => c.unknown(format!("{verb} {}", object_type_label(ty))),
    }
}

fn ddl_name(c: &mut Collector, parts: &[Node], what: &str) {
    match qualified(parts) {
        Some(n) => c.access(Action::Ddl, n),
        None => c.unknown(what.to_owned()),
    }
}

fn ddl_range_var(c: &mut Collector, n: &Node, what: &str) {
    match n.node.as_ref() {
        Some(NodeEnum::RangeVar(rv)) => c.access(Action::Ddl, names::range_var(rv)),
        _ => c.unknown(what.to_owned()),
    }
}

/// GRANT / REVOKE privileges. Role membership (GRANT role TO role) is a
/// different node (GrantRoleStmt), left unmodelled.
fn grant(c: &mut Collector, s: &pg_query::protobuf::GrantStmt) {
    let verb = if s.is_grant { "GRANT ON" } else { "REVOKE ON" };
    let ty = object_type(s.objtype);
    match GrantTargetType::try_from(s.targtype) {
        // The privileges are attached by ALTER DEFAULT PRIVILEGES, which
        // records the schemas itself.
        Ok(GrantTargetType::AclTargetDefaults) => {}
        // ON ALL TABLES/SEQUENCES/FUNCTIONS IN SCHEMA s: objects are schema names.
        Ok(GrantTargetType::AclTargetAllInSchema) => {
            for o in &s.objects {
                match names::str_node(o) {
                    Some(schema) => c.access(Action::Ddl, whole_schema(schema)),
                    None => c.unknown(format!("{verb} ALL IN SCHEMA")),
                }
            }
        }
        Ok(GrantTargetType::AclTargetObject) => {
            for o in &s.objects {
                targets(c, ty, Some(o), verb);
            }
        }
        _ => c.unknown(verb.to_owned()),
    }
}

/// ALTER ... RENAME. Ddl on the object and, when the object itself is renamed,
/// on its new name too (renaming *into* a protected name is as sensitive as
/// renaming the protected object).
fn rename(c: &mut Collector, s: &pg_query::protobuf::RenameStmt) {
    use ObjectType as O;
    let ty = object_type(s.rename_type);
    if ty == O::ObjectSchema {
        c.access(Action::Ddl, whole_schema(&s.subname));
        c.access(Action::Ddl, whole_schema(&s.newname));
        return;
    }
    let renames_relation = matches!(
        ty,
        O::ObjectTable
            | O::ObjectView
            | O::ObjectMatview
            | O::ObjectIndex
            | O::ObjectSequence
            | O::ObjectForeignTable
    );
    let objs: Vec<ObjectName> = if let Some(rv) = s.relation.as_ref() {
        vec![names::range_var(rv)]
    } else {
        match s.object.as_deref().and_then(|o| object_targets(ty, o)) {
            Some(t) => t,
            None => {
                c.unknown(format!("ALTER {} RENAME", object_type_label(ty)));
                return;
            }
        }
    };
    // Renames of columns, constraints, triggers, rules and policies only
    // change a member of the table.
    let member = matches!(
        ty,
        O::ObjectColumn
            | O::ObjectAttribute
            | O::ObjectTabconstraint
            | O::ObjectDomconstraint
            | O::ObjectTrigger
            | O::ObjectRule
            | O::ObjectPolicy
    );
    for o in objs {
        if (renames_relation || (!member && s.relation.is_none())) && !s.newname.is_empty() {
            c.access(
                Action::Ddl,
                ObjectName {
                    schema: o.schema.clone(),
                    name: s.newname.clone(),
                },
            );
        }
        c.access(Action::Ddl, o);
    }
}
