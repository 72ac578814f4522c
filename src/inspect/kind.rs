//! Statement kinds: the short label used for audit/metrics, and whether the
//! inspector models the statement's effects.
//!
//! Every statement node pg_query can produce is listed here explicitly. A
//! statement the inspector does not model is reported as
//! [`super::Opaque::UnknownStatement`] wherever it appears, so adding a kind
//! to the "modelled" side must come with a handler in `dml`/`ddl`/`utility`.

use pg_query::NodeRef;
use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};

use super::names::object_type_label;

/// Label and modelling status of a statement node.
pub(super) struct StmtKind {
    pub name: String,
    /// `false`: the inspector does not understand this statement's effects.
    pub modeled: bool,
}

fn modeled(name: impl Into<String>) -> Option<StmtKind> {
    Some(StmtKind {
        name: name.into(),
        modeled: true,
    })
}

fn unmodeled(name: &str) -> Option<StmtKind> {
    Some(StmtKind {
        name: name.to_owned(),
        modeled: false,
    })
}

/// `None` for nodes that are not statements (expressions, clauses, ...).
pub(super) fn statement_kind(n: NodeRef<'_>) -> Option<StmtKind> {
    use NodeRef as N;
    match n {
        // ---- queries and DML (dml.rs + the generic walk)
        N::SelectStmt(s) => modeled(if s.into_clause.is_some() {
            "SELECT INTO"
        } else {
            "SELECT"
        }),
        N::InsertStmt(_) => modeled("INSERT"),
        N::UpdateStmt(_) => modeled("UPDATE"),
        N::DeleteStmt(_) => modeled("DELETE"),
        N::MergeStmt(_) => modeled("MERGE"),
        N::TruncateStmt(_) => modeled("TRUNCATE"),
        N::CopyStmt(s) => modeled(if s.is_from { "COPY FROM" } else { "COPY TO" }),
        N::CreateTableAsStmt(s) => modeled(if s.objtype == ObjectType::ObjectMatview as i32 {
            "CREATE MATERIALIZED VIEW"
        } else if s.is_select_into {
            "SELECT INTO"
        } else {
            "CREATE TABLE AS"
        }),
        N::RefreshMatViewStmt(_) => modeled("REFRESH MATERIALIZED VIEW"),
        N::ExplainStmt(_) => modeled("EXPLAIN"),
        N::DeclareCursorStmt(_) => modeled("DECLARE CURSOR"),
        N::LockStmt(_) => modeled("LOCK"),
        N::ClusterStmt(_) => modeled("CLUSTER"),
        N::VacuumStmt(s) => modeled(if s.is_vacuumcmd { "VACUUM" } else { "ANALYZE" }),
        N::ReindexStmt(_) => modeled("REINDEX"),
        N::CallStmt(_) => modeled("CALL"),
        N::DoStmt(_) => modeled("DO"),

        // ---- session state (utility.rs)
        N::PrepareStmt(_) => modeled("PREPARE"),
        N::ExecuteStmt(_) => modeled("EXECUTE"),
        N::DeallocateStmt(_) => modeled("DEALLOCATE"),
        N::VariableSetStmt(s) => modeled(match VariableSetKind::try_from(s.kind) {
            Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
            Ok(VariableSetKind::VarSetMulti) => "SET TRANSACTION",
            _ => "SET",
        }),
        N::VariableShowStmt(_) => modeled("SHOW"),
        N::TransactionStmt(s) => {
            use TransactionStmtKind as T;
            modeled(match T::try_from(s.kind) {
                Ok(T::TransStmtBegin) => "BEGIN",
                Ok(T::TransStmtStart) => "START TRANSACTION",
                Ok(T::TransStmtCommit) => "COMMIT",
                Ok(T::TransStmtRollback) => "ROLLBACK",
                Ok(T::TransStmtSavepoint) => "SAVEPOINT",
                Ok(T::TransStmtRelease) => "RELEASE",
                Ok(T::TransStmtRollbackTo) => "ROLLBACK TO",
                Ok(T::TransStmtPrepare) => "PREPARE TRANSACTION",
                Ok(T::TransStmtCommitPrepared) => "COMMIT PREPARED",
                Ok(T::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
                Ok(T::Undefined) | Err(_) => "TRANSACTION",
            })
        }
        N::DiscardStmt(_) => modeled("DISCARD"),
        N::ListenStmt(_) => modeled("LISTEN"),
        N::UnlistenStmt(_) => modeled("UNLISTEN"),
        N::NotifyStmt(_) => modeled("NOTIFY"),
        N::FetchStmt(s) => modeled(if s.ismove { "MOVE" } else { "FETCH" }),
        N::ClosePortalStmt(_) => modeled("CLOSE"),
        N::CheckPointStmt(_) => modeled("CHECKPOINT"),
        N::ConstraintsSetStmt(_) => modeled("SET CONSTRAINTS"),
        N::AlterRoleSetStmt(_) => modeled("ALTER ROLE SET"),
        N::AlterDatabaseSetStmt(_) => modeled("ALTER DATABASE SET"),

        // ---- DDL on schema-resident objects (ddl.rs)
        N::CreateStmt(_) => modeled("CREATE TABLE"),
        N::CreateForeignTableStmt(_) => modeled("CREATE FOREIGN TABLE"),
        N::AlterTableStmt(s) => modeled(format!(
            "ALTER {}",
            object_type_label(ObjectType::try_from(s.objtype).unwrap_or(ObjectType::ObjectTable))
        )),
        N::DropStmt(_) => modeled("DROP"),
        N::GrantStmt(s) => modeled(if s.is_grant { "GRANT" } else { "REVOKE" }),
        N::AlterDefaultPrivilegesStmt(_) => modeled("ALTER DEFAULT PRIVILEGES"),
        N::CreateSchemaStmt(_) => modeled("CREATE SCHEMA"),
        N::ImportForeignSchemaStmt(_) => modeled("IMPORT FOREIGN SCHEMA"),
        N::IndexStmt(_) => modeled("CREATE INDEX"),
        N::CreateTrigStmt(_) => modeled("CREATE TRIGGER"),
        N::RuleStmt(_) => modeled("CREATE RULE"),
        N::CreatePolicyStmt(_) => modeled("CREATE POLICY"),
        N::AlterPolicyStmt(_) => modeled("ALTER POLICY"),
        N::ViewStmt(_) => modeled("CREATE VIEW"),
        N::CreateSeqStmt(_) => modeled("CREATE SEQUENCE"),
        N::AlterSeqStmt(_) => modeled("ALTER SEQUENCE"),
        N::CompositeTypeStmt(_) => modeled("CREATE TYPE"),
        N::CreateStatsStmt(_) => modeled("CREATE STATISTICS"),
        N::AlterStatsStmt(_) => modeled("ALTER STATISTICS"),
        N::CreateFunctionStmt(s) => modeled(if s.is_procedure {
            "CREATE PROCEDURE"
        } else {
            "CREATE FUNCTION"
        }),
        N::AlterFunctionStmt(s) => modeled(format!(
            "ALTER {}",
            object_type_label(
                ObjectType::try_from(s.objtype).unwrap_or(ObjectType::ObjectFunction)
            )
        )),
        N::CreateDomainStmt(_) => modeled("CREATE DOMAIN"),
        N::AlterDomainStmt(_) => modeled("ALTER DOMAIN"),
        N::CreateEnumStmt(_) | N::CreateRangeStmt(_) => modeled("CREATE TYPE"),
        N::AlterEnumStmt(_) | N::AlterTypeStmt(_) => modeled("ALTER TYPE"),
        N::DefineStmt(s) => modeled(format!(
            "CREATE {}",
            object_type_label(ObjectType::try_from(s.kind).unwrap_or(ObjectType::Undefined))
        )),
        N::AlterOperatorStmt(_) => modeled("ALTER OPERATOR"),
        N::AlterCollationStmt(_) => modeled("ALTER COLLATION"),
        N::CommentStmt(_) => modeled("COMMENT"),
        N::SecLabelStmt(_) => modeled("SECURITY LABEL"),
        N::RenameStmt(_) => modeled("RENAME"),
        N::AlterObjectSchemaStmt(_) => modeled("ALTER SET SCHEMA"),
        N::AlterOwnerStmt(_) => modeled("ALTER OWNER"),
        N::AlterObjectDependsStmt(_) => modeled("ALTER DEPENDS ON EXTENSION"),

        // ---- not modelled: cluster-wide objects, roles, extensions, ...
        N::AlterSystemStmt(_) => unmodeled("ALTER SYSTEM"),
        N::LoadStmt(_) => unmodeled("LOAD"),
        N::CreateRoleStmt(_) => unmodeled("CREATE ROLE"),
        N::AlterRoleStmt(_) => unmodeled("ALTER ROLE"),
        N::DropRoleStmt(_) => unmodeled("DROP ROLE"),
        N::GrantRoleStmt(s) => unmodeled(if s.is_grant {
            "GRANT ROLE"
        } else {
            "REVOKE ROLE"
        }),
        N::CreatedbStmt(_) => unmodeled("CREATE DATABASE"),
        N::AlterDatabaseStmt(_) => unmodeled("ALTER DATABASE"),
        N::AlterDatabaseRefreshCollStmt(_) => unmodeled("ALTER DATABASE REFRESH COLLATION VERSION"),
        N::DropdbStmt(_) => unmodeled("DROP DATABASE"),
        N::CreateTableSpaceStmt(_) => unmodeled("CREATE TABLESPACE"),
        N::DropTableSpaceStmt(_) => unmodeled("DROP TABLESPACE"),
        N::AlterTableSpaceOptionsStmt(_) => unmodeled("ALTER TABLESPACE"),
        N::AlterTableMoveAllStmt(_) => unmodeled("ALTER TABLE ALL IN TABLESPACE"),
        N::CreateExtensionStmt(_) => unmodeled("CREATE EXTENSION"),
        N::AlterExtensionStmt(_) | N::AlterExtensionContentsStmt(_) => unmodeled("ALTER EXTENSION"),
        N::CreateFdwStmt(_) => unmodeled("CREATE FOREIGN DATA WRAPPER"),
        N::AlterFdwStmt(_) => unmodeled("ALTER FOREIGN DATA WRAPPER"),
        N::CreateForeignServerStmt(_) => unmodeled("CREATE SERVER"),
        N::AlterForeignServerStmt(_) => unmodeled("ALTER SERVER"),
        N::CreateUserMappingStmt(_) => unmodeled("CREATE USER MAPPING"),
        N::AlterUserMappingStmt(_) => unmodeled("ALTER USER MAPPING"),
        N::DropUserMappingStmt(_) => unmodeled("DROP USER MAPPING"),
        N::CreateAmStmt(_) => unmodeled("CREATE ACCESS METHOD"),
        N::CreateEventTrigStmt(_) => unmodeled("CREATE EVENT TRIGGER"),
        N::AlterEventTrigStmt(_) => unmodeled("ALTER EVENT TRIGGER"),
        N::CreatePlangStmt(_) => unmodeled("CREATE LANGUAGE"),
        N::CreateOpClassStmt(_) => unmodeled("CREATE OPERATOR CLASS"),
        N::CreateOpFamilyStmt(_) => unmodeled("CREATE OPERATOR FAMILY"),
        N::AlterOpFamilyStmt(_) => unmodeled("ALTER OPERATOR FAMILY"),
        N::CreateConversionStmt(_) => unmodeled("CREATE CONVERSION"),
        N::CreateCastStmt(_) => unmodeled("CREATE CAST"),
        N::CreateTransformStmt(_) => unmodeled("CREATE TRANSFORM"),
        N::DropOwnedStmt(_) => unmodeled("DROP OWNED"),
        N::ReassignOwnedStmt(_) => unmodeled("REASSIGN OWNED"),
        N::AlterTsdictionaryStmt(_) => unmodeled("ALTER TEXT SEARCH DICTIONARY"),
        N::AlterTsconfigurationStmt(_) => unmodeled("ALTER TEXT SEARCH CONFIGURATION"),
        N::CreatePublicationStmt(_) => unmodeled("CREATE PUBLICATION"),
        N::AlterPublicationStmt(_) => unmodeled("ALTER PUBLICATION"),
        N::CreateSubscriptionStmt(_) => unmodeled("CREATE SUBSCRIPTION"),
        N::AlterSubscriptionStmt(_) => unmodeled("ALTER SUBSCRIPTION"),
        N::DropSubscriptionStmt(_) => unmodeled("DROP SUBSCRIPTION"),
        // PL/pgSQL-only and post-analysis nodes: never produced for plain SQL.
        N::ReturnStmt(_) => modeled("RETURN"),
        N::PlassignStmt(_) => unmodeled("PL/pgSQL assignment"),
        N::SetOperationStmt(_) => unmodeled("SET OPERATION"),
        N::Query(_) => unmodeled("QUERY"),
        N::RawStmt(_) => unmodeled("RAW STATEMENT"),
        _ => None,
    }
}
