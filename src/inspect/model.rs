//! What inspection learns about one SQL statement: the vocabulary shared by
//! `inspect` (which produces it) and `policy` (which judges it).

/// The kind of access a statement makes to a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// SELECT, COPY TO, references in subqueries, locks without writes.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY FROM, nextval/setval.
    Write,
    /// CREATE/ALTER/DROP/GRANT/REVOKE/COMMENT, triggers, rules, policies,
    /// ownership; the relation SELECT INTO / CREATE TABLE AS creates; the
    /// tables under a new view or foreign key.
    Ddl,
}

/// A relation name exactly as Postgres folded it (unquoted names lower-cased,
/// quoted ones verbatim, `U&"..."` escapes decoded). `schema` is `None` when the
/// statement left it unqualified: the session's search_path decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub schema: Option<String>,
    pub name: String,
}

/// One access of one relation (table, view, sequence, ...) or schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub action: Action,
    pub object: ObjectName,
}

/// What a statement does to the session's `search_path`, which pgward tracks to
/// resolve unqualified names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchPathChange {
    /// `SET [SESSION|LOCAL] search_path = a, b` (schemas as Postgres folds them).
    Set { schemas: Vec<String>, local: bool },
    /// `RESET search_path`, `SET search_path TO DEFAULT`.
    Reset { local: bool },
    /// Changed in a way pgward cannot follow (e.g. `set_config('search_path', ...)`
    /// with a non-constant value, `RESET ALL`, `DISCARD ALL`): from now on the path is unknown.
    Unknown,
}

/// Transaction control, needed to track search_path rollback and tenant injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnControl {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    RollbackToSavepoint,
    ReleaseSavepoint,
    Prepare,
    Other,
}

/// Why a statement cannot be fully understood. A restricted identity is refused
/// whenever any of these is present (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opaque {
    /// A DO block, CREATE FUNCTION/PROCEDURE body, or other code pgward cannot see into.
    CodeBlock(String),
    /// Dynamic SQL (e.g. EXECUTE of a string, `dblink`, `query_to_xml`).
    DynamicSql(String),
    /// A statement kind the inspector does not model.
    UnknownStatement(String),
    /// `EXECUTE name` of an SQL-level prepared statement (resolved by the session,
    /// which remembers what `PREPARE name AS ...` contained).
    ExecutePrepared(String),
}

/// Everything inspection learned about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementInfo {
    /// Short statement kind for audit and metrics, e.g. "INSERT", "CREATE TABLE", "COPY FROM".
    pub kind: String,
    /// Every relation the statement touches, with the strongest action on each.
    pub accesses: Vec<Access>,
    /// Functions called anywhere in the statement (folded names).
    pub functions: Vec<ObjectName>,
    pub search_path: Option<SearchPathChange>,
    pub txn: Option<TxnControl>,
    /// `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN`: a new transaction block
    /// begins as the old one ends.
    pub txn_chain: bool,
    /// `PREPARE name AS <inner>`: the name and the inspection of the inner statement.
    pub prepares: Option<(String, Box<StatementInfo>)>,
    /// `DEALLOCATE name` (`None` = ALL).
    pub deallocates: Option<Option<String>>,
    /// Run-time settings the statement changes or reads by name through SET/RESET/set_config
    /// (folded names, e.g. "app.current_tenant"); `"*"` for RESET ALL / DISCARD ALL.
    pub settings_changed: Vec<String>,
    /// Byte offset in the inspected text where this statement begins (just
    /// after the previous statement's semicolon), as PostgreSQL reports it.
    pub location: usize,
    /// The statement refuses to run inside a transaction block (VACUUM,
    /// CREATE DATABASE, CREATE INDEX CONCURRENTLY, ...): nothing may be put in
    /// front of it in the same transaction.
    pub outside_transaction: bool,
    /// `ALTER ROLE/DATABASE/SYSTEM ... SET`: changes the defaults of future
    /// sessions, which pgward cannot follow from inside them.
    pub persists_settings: bool,
    pub opaque: Vec<Opaque>,
}
