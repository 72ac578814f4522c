//! `pgward doctor`: connects to the upstream PostgreSQL as an administrator
//! and reports the database's security posture against policy.yaml, in the
//! spirit of the seeds' `tools.security_audit` / `tools.doctor`.
//!
//! pgward refuses direct writes on the wire; the database must still hold the
//! line on its own (defence in depth) and must implement the tenant isolation
//! pgward's tenant injection relies on. The checks, all read-only catalog
//! inspection of the database named in the admin URL:
//!
//! | check | object | rule |
//! |---|---|---|
//! | `protected-object` | schema / table | a protected schema or listed table that does not exist, or a listed relation that is not a table, is a WARN |
//! | `rls-enabled` | every table (`r`, `p`) listed under `protected[].tables` or in `protected[].schemas` | `relrowsecurity`, else FAIL |
//! | `rls-forced` | those tables with a column named `tenant_id`, when some class has a `tenant:` | `relforcerowsecurity`, else FAIL (the owner would bypass the tenant policies) |
//! | `tenant-policy` | same tables | some RLS policy's USING or WITH CHECK mentions `'<tenant.setting>'` (a text check of the catalog's expression), else FAIL; and every PERMISSIVE policy applying to a worker role (directly, through membership, or PUBLIC) mentions it in each expression it has, else FAIL naming the policy |
//! | `worker-role` | each worker role: the `users` (and `upstream.user`) of restricted classes | missing from the cluster: WARN |
//! | `worker-superuser` | worker role | superuser, or member of a superuser role: FAIL |
//! | `worker-bypassrls` | worker role | BYPASSRLS, or member of a BYPASSRLS role (SET ROLE escapes RLS): FAIL |
//! | `worker-ownership` | worker role | owns (or is a member of the owner of) a protected relation or schema: FAIL |
//! | `worker-grants` | worker role | INSERT/UPDATE (table or any column), DELETE, TRUNCATE or TRIGGER on a protected table/view, UPDATE on a protected sequence, or CREATE on a protected schema (`has_*_privilege`, so PUBLIC and inherited grants count): FAIL |
//! | `function-approved` | each `functions.<class>.approved` name, per overload | missing: WARN; exists: PASS saying SECURITY DEFINER or INVOKER; owned by (a role containing) a worker role: FAIL |
//! | `function-search-path` | each SECURITY DEFINER overload | no `search_path` in `proconfig`: FAIL; a schema of it where a worker role may CREATE: FAIL; `pg_temp` not listed last: WARN |
//!
//! Exit codes: 0 no FAIL, 1 some FAIL, 2 usage/configuration/connection
//! error. `--json` prints `{ "findings": [...], "summary": {...} }`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::EXIT_CONFIG;
use crate::config::Config;

/// Exit code when at least one check failed.
pub const EXIT_FINDINGS: i32 = 1;

/// Environment variable read when `--admin-url` is not given.
pub const ADMIN_URL_ENV: &str = "PGWARD_ADMIN_URL";

/// The column whose presence marks a table as tenant-scoped.
pub const TENANT_COLUMN: &str = "tenant_id";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Configuration file.
    #[arg(long, default_value = "policy.yaml")]
    pub config: PathBuf,
    /// Administrator connection to the upstream database to inspect
    /// (postgres://USER:PASSWORD@HOST:PORT/DB or key=value form; no TLS).
    /// Default: the PGWARD_ADMIN_URL environment variable.
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Warn,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub object: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub warn: usize,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    pub fn new(findings: Vec<Finding>) -> Report {
        let mut summary = Summary::default();
        for f in &findings {
            match f.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Warn => summary.warn += 1,
            }
        }
        Report { findings, summary }
    }

    pub fn exit_code(&self) -> i32 {
        if self.summary.fail > 0 {
            EXIT_FINDINGS
        } else {
            0
        }
    }
}

// ---------------------------------------------------------------------------
// What the policy asks for
// ---------------------------------------------------------------------------

/// The part of policy.yaml the checks are about.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `protected[].schemas`, sorted, deduplicated.
    pub schemas: Vec<String>,
    /// `protected[].tables` as (schema, table), sorted, deduplicated.
    pub tables: Vec<(String, String)>,
    /// Startup users (and `upstream.user`s) of restricted classes.
    pub workers: Vec<String>,
    /// Approved functions of every class, as (schema, function).
    pub functions: Vec<(String, String)>,
    /// `tenant.setting`.
    pub tenant_setting: String,
    /// Classes with a `tenant:` spec.
    pub tenant_classes: Vec<String>,
}

impl Plan {
    pub fn from_config(config: &Config) -> Plan {
        let mut plan = Plan {
            tenant_setting: config.tenant.setting.clone(),
            ..Plan::default()
        };
        for rule in &config.protected {
            plan.schemas.extend(rule.schemas.iter().cloned());
            plan.tables
                .extend(rule.tables.iter().filter_map(|t| split_qualified(t)));
        }
        for (name, class) in &config.identities.classes {
            if class.restricted {
                plan.workers.extend(class.users.iter().cloned());
                if let Some(up) = &class.upstream {
                    plan.workers.push(up.user.clone());
                }
            }
            if class.tenant.is_some() {
                plan.tenant_classes.push(name.clone());
            }
        }
        for list in config.functions.values() {
            plan.functions
                .extend(list.approved.iter().filter_map(|f| split_qualified(f)));
        }
        for v in [&mut plan.schemas, &mut plan.workers] {
            v.sort();
            v.dedup();
        }
        for v in [&mut plan.tables, &mut plan.functions] {
            v.sort();
            v.dedup();
        }
        plan
    }
}

fn split_qualified(s: &str) -> Option<(String, String)> {
    let (a, b) = s.split_once('.')?;
    Some((a.to_owned(), b.to_owned()))
}

// ---------------------------------------------------------------------------
// What the database has
// ---------------------------------------------------------------------------

/// A relation in protected scope.
#[derive(Debug, Clone, Default)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`.
    pub kind: char,
    pub owner: String,
    pub rls: bool,
    pub force: bool,
    /// Has a column named [`TENANT_COLUMN`].
    pub tenant_column: bool,
}

impl Relation {
    pub fn is_table(&self) -> bool {
        matches!(self.kind, 'r' | 'p')
    }
    fn display(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// A protected schema that exists.
#[derive(Debug, Clone, Default)]
pub struct SchemaFact {
    pub name: String,
    pub owner: String,
}

/// A worker role as the cluster has it.
#[derive(Debug, Clone, Default)]
pub struct RoleFact {
    pub name: String,
    pub exists: bool,
    pub can_login: bool,
    pub superuser: bool,
    pub bypassrls: bool,
    /// Superuser / BYPASSRLS roles it is a member of: (role, "SUPERUSER" | "BYPASSRLS").
    pub privileged_memberships: Vec<(String, &'static str)>,
    /// Protected objects it owns or is a member of the owner of: (object, owner).
    pub owns: Vec<(String, String)>,
    /// Write privileges on protected relations: (relation, privileges).
    pub grants: Vec<(String, Vec<String>)>,
    /// Protected schemas it may CREATE in.
    pub schema_create: Vec<String>,
}

/// One overload of an approved function.
#[derive(Debug, Clone, Default)]
pub struct FunctionFact {
    pub schema: String,
    pub name: String,
    /// Argument types, e.g. `text, jsonb`.
    pub args: String,
    pub security_definer: bool,
    /// `proconfig` entries, `name=value`.
    pub config: Vec<String>,
    pub owner: String,
    /// Worker roles that are (members of) the owner.
    pub worker_owners: Vec<String>,
}

impl FunctionFact {
    fn display(&self) -> String {
        format!("{}({})", qualified(&self.schema, &self.name), self.args)
    }
    /// The pinned search_path's schemas, if it is pinned.
    pub fn search_path(&self) -> Option<Vec<String>> {
        self.config.iter().find_map(|c| {
            let (k, v) = c.split_once('=')?;
            k.eq_ignore_ascii_case("search_path")
                .then(|| parse_search_path(v))
        })
    }
}

/// An RLS policy on a protected tenant table.
#[derive(Debug, Clone, Default)]
pub struct PolicyFact {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub permissive: bool,
    /// SELECT, INSERT, UPDATE, DELETE or ALL.
    pub command: String,
    pub roles: Vec<String>,
    /// Applies to some worker role (directly, via membership or PUBLIC).
    pub applies_to_worker: bool,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub relations: Vec<Relation>,
    pub schemas: Vec<SchemaFact>,
    pub roles: Vec<RoleFact>,
    pub functions: Vec<FunctionFact>,
    pub policies: Vec<PolicyFact>,
    /// (schema, worker role) for schemas named in a pinned search_path where
    /// that worker role has CREATE.
    pub path_schema_create: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------
// The checks (pure: facts in, findings out)
// ---------------------------------------------------------------------------

fn finding(check: &'static str, object: String, status: Status, detail: String) -> Finding {
    Finding {
        check,
        object,
        status,
        detail,
    }
}

/// Judges `facts` against `plan`.
pub fn evaluate(plan: &Plan, facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    check_scope(plan, facts, &mut out);
    check_rls(plan, facts, &mut out);
    check_tenant(plan, facts, &mut out);
    for role in &facts.roles {
        check_role(role, &mut out);
    }
    check_functions(plan, facts, &mut out);
    out
}

fn kind_name(kind: char) -> &'static str {
    match kind {
        'r' => "table",
        'p' => "partitioned table",
        'v' => "view",
        'm' => "materialized view",
        'f' => "foreign table",
        'S' => "sequence",
        _ => "relation",
    }
}

fn check_scope(plan: &Plan, facts: &Facts, out: &mut Vec<Finding>) {
    const CHECK: &str = "protected-object";
    for schema in &plan.schemas {
        match facts.schemas.iter().find(|s| &s.name == schema) {
            Some(s) => {
                let tables = facts
                    .relations
                    .iter()
                    .filter(|r| &r.schema == schema && r.is_table())
                    .count();
                out.push(finding(
                    CHECK,
                    format!("schema {}", quote_ident(schema)),
                    Status::Pass,
                    format!(
                        "protected schema exists (owner {}, {tables} tables)",
                        s.owner
                    ),
                ));
            }
            None => out.push(finding(
                CHECK,
                format!("schema {}", quote_ident(schema)),
                Status::Warn,
                "protected in policy.yaml but absent from this database: nothing to check".into(),
            )),
        }
    }
    for (schema, table) in &plan.tables {
        let object = qualified(schema, table);
        match facts
            .relations
            .iter()
            .find(|r| &r.schema == schema && &r.name == table)
        {
            None => out.push(finding(
                CHECK,
                object,
                Status::Warn,
                "protected in policy.yaml but absent from this database: nothing to check".into(),
            )),
            Some(r) if !r.is_table() => out.push(finding(
                CHECK,
                object,
                Status::Warn,
                format!(
                    "is a {}, not a table: row-level security does not apply to it",
                    kind_name(r.kind)
                ),
            )),
            Some(_) => {}
        }
    }
}

fn check_rls(plan: &Plan, facts: &Facts, out: &mut Vec<Finding>) {
    let tenant = !plan.tenant_classes.is_empty();
    for r in facts.relations.iter().filter(|r| r.is_table()) {
        let object = r.display();
        if r.rls {
            out.push(finding(
                "rls-enabled",
                object.clone(),
                Status::Pass,
                "row-level security enabled".into(),
            ));
        } else {
            out.push(finding(
                "rls-enabled",
                object.clone(),
                Status::Fail,
                format!(
                    "row-level security is DISABLED: every role with SELECT reads every row; \
                     fix: ALTER TABLE {object} ENABLE ROW LEVEL SECURITY"
                ),
            ));
        }
        if tenant && r.tenant_column {
            if r.force {
                out.push(finding(
                    "rls-forced",
                    object,
                    Status::Pass,
                    format!("has {TENANT_COLUMN}; row-level security FORCED (binds the owner too)"),
                ));
            } else {
                out.push(finding(
                    "rls-forced",
                    object.clone(),
                    Status::Fail,
                    format!(
                        "has {TENANT_COLUMN} but row-level security is not FORCED: its owner ({}) \
                         and SECURITY DEFINER functions owned by it ignore the tenant policies; \
                         fix: ALTER TABLE {object} FORCE ROW LEVEL SECURITY",
                        r.owner
                    ),
                ));
            }
        }
    }
}

/// Whether a policy expression reads the tenant setting: the setting's name
/// as a string literal in the deparsed expression (`current_setting('app.current_tenant'::text, true)`).
pub fn mentions_setting(expr: &str, setting: &str) -> bool {
    expr.to_ascii_lowercase()
        .contains(&format!("'{}'", setting.to_ascii_lowercase()))
}

fn check_tenant(plan: &Plan, facts: &Facts, out: &mut Vec<Finding>) {
    const CHECK: &str = "tenant-policy";
    let setting = &plan.tenant_setting;
    if plan.tenant_classes.is_empty() {
        out.push(finding(
            CHECK,
            "policy.yaml".into(),
            Status::Pass,
            "no identity class has a tenant: FORCE and tenant-policy checks do not apply".into(),
        ));
        return;
    }
    let tenant_tables: Vec<&Relation> = facts
        .relations
        .iter()
        .filter(|r| r.is_table() && r.tenant_column)
        .collect();
    if tenant_tables.is_empty() {
        out.push(finding(
            CHECK,
            "policy.yaml".into(),
            Status::Warn,
            format!(
                "class(es) {} inject {setting}, but no protected table has a {TENANT_COLUMN} \
                 column: no row-level security here isolates tenants",
                plan.tenant_classes.join(", ")
            ),
        ));
        return;
    }
    for t in tenant_tables {
        let object = t.display();
        let policies: Vec<&PolicyFact> = facts
            .policies
            .iter()
            .filter(|p| p.schema == t.schema && p.table == t.name)
            .collect();
        let readers: Vec<&str> = policies
            .iter()
            .filter(|p| {
                [&p.using, &p.with_check]
                    .into_iter()
                    .flatten()
                    .any(|e| mentions_setting(e, setting))
            })
            .map(|p| p.name.as_str())
            .collect();
        let mut failed = false;
        if readers.is_empty() {
            failed = true;
            out.push(finding(
                CHECK,
                object.clone(),
                Status::Fail,
                format!(
                    "no row-level security policy reads {setting}: the injected tenant does not \
                     isolate this table"
                ),
            ));
        }
        for p in policies
            .iter()
            .filter(|p| p.permissive && p.applies_to_worker)
        {
            let mut missing = Vec::new();
            if let Some(e) = &p.using
                && !mentions_setting(e, setting)
            {
                missing.push(format!("USING ({e})"));
            }
            if let Some(e) = &p.with_check
                && !mentions_setting(e, setting)
            {
                missing.push(format!("WITH CHECK ({e})"));
            }
            if p.using.is_none() && p.with_check.is_none() {
                missing.push("no expression".into());
            }
            if !missing.is_empty() {
                failed = true;
                out.push(finding(
                    CHECK,
                    format!("{object} policy {}", quote_ident(&p.name)),
                    Status::Fail,
                    format!(
                        "permissive {} policy for {} does not read {setting}: {} \
                         reaches other tenants' rows",
                        p.command,
                        p.roles.join(", "),
                        missing.join(", ")
                    ),
                ));
            }
        }
        if !failed {
            out.push(finding(
                CHECK,
                object,
                Status::Pass,
                format!("policies read {setting}: {}", readers.join(", ")),
            ));
        }
    }
}

fn check_role(role: &RoleFact, out: &mut Vec<Finding>) {
    let name = &role.name;
    if !role.exists {
        out.push(finding(
            "worker-role",
            name.clone(),
            Status::Warn,
            "listed in a restricted class but no such role exists in this cluster: nothing to check"
                .into(),
        ));
        return;
    }
    out.push(finding(
        "worker-role",
        name.clone(),
        Status::Pass,
        format!(
            "role exists ({})",
            if role.can_login { "LOGIN" } else { "NOLOGIN" }
        ),
    ));
    if role.superuser {
        out.push(finding(
            "worker-superuser",
            name.clone(),
            Status::Fail,
            format!(
                "is a SUPERUSER: row-level security and every grant are moot; \
                 fix: ALTER ROLE {} NOSUPERUSER",
                quote_ident(name)
            ),
        ));
        // Everything below would only repeat that a superuser may do anything.
        return;
    }
    let mut super_ok = true;
    let mut bypass_ok = true;
    for (via, attr) in &role.privileged_memberships {
        let check = if *attr == "SUPERUSER" {
            super_ok = false;
            "worker-superuser"
        } else {
            bypass_ok = false;
            "worker-bypassrls"
        };
        out.push(finding(
            check,
            name.clone(),
            Status::Fail,
            format!(
                "member of {via}, which has {attr}: SET ROLE {via} escapes row-level security; \
                 fix: REVOKE {} FROM {}",
                quote_ident(via),
                quote_ident(name)
            ),
        ));
    }
    if super_ok {
        out.push(finding(
            "worker-superuser",
            name.clone(),
            Status::Pass,
            "not a superuser, nor a member of one".into(),
        ));
    }
    if role.bypassrls {
        bypass_ok = false;
        out.push(finding(
            "worker-bypassrls",
            name.clone(),
            Status::Fail,
            format!(
                "has BYPASSRLS: row-level security (tenant isolation) does not apply to it; \
                 fix: ALTER ROLE {} NOBYPASSRLS",
                quote_ident(name)
            ),
        ));
    }
    if bypass_ok {
        out.push(finding(
            "worker-bypassrls",
            name.clone(),
            Status::Pass,
            "no BYPASSRLS, nor membership in a BYPASSRLS role".into(),
        ));
    }
    if role.owns.is_empty() {
        out.push(finding(
            "worker-ownership",
            name.clone(),
            Status::Pass,
            "owns no protected table, schema or other relation".into(),
        ));
    }
    for (object, owner) in &role.owns {
        let how = if owner == name {
            "owns".to_string()
        } else {
            format!("is a member of {owner}, which owns")
        };
        out.push(finding(
            "worker-ownership",
            object.clone(),
            Status::Fail,
            format!(
                "{name} {how} it: an owner may disable or drop row-level security and \
                 grant itself anything; fix: ALTER ... OWNER TO an administrator"
            ),
        ));
    }
    if role.grants.is_empty() && role.schema_create.is_empty() {
        out.push(finding(
            "worker-grants",
            name.clone(),
            Status::Pass,
            "no direct INSERT/UPDATE/DELETE/TRUNCATE/TRIGGER on protected relations, \
             no CREATE on protected schemas"
                .into(),
        ));
    }
    for (object, privileges) in &role.grants {
        let list = privileges.join(", ");
        out.push(finding(
            "worker-grants",
            object.clone(),
            Status::Fail,
            format!(
                "{name} holds {list} (grant drift: writes must go through the approved \
                 functions); fix: REVOKE {list} ON {object} FROM {}",
                quote_ident(name)
            ),
        ));
    }
    for schema in &role.schema_create {
        let object = quote_ident(schema);
        out.push(finding(
            "worker-grants",
            format!("schema {object}"),
            Status::Fail,
            format!(
                "{name} holds CREATE on the protected schema (it can add objects that shadow or \
                 trigger on protected ones); fix: REVOKE CREATE ON SCHEMA {object} FROM {}",
                quote_ident(name)
            ),
        ));
    }
}

fn check_functions(plan: &Plan, facts: &Facts, out: &mut Vec<Finding>) {
    for (schema, name) in &plan.functions {
        let overloads: Vec<&FunctionFact> = facts
            .functions
            .iter()
            .filter(|f| &f.schema == schema && &f.name == name)
            .collect();
        if overloads.is_empty() {
            out.push(finding(
                "function-approved",
                qualified(schema, name),
                Status::Warn,
                "approved in policy.yaml but absent from this database: calls fail; whoever \
                 can create it there decides what the approved name does"
                    .into(),
            ));
            continue;
        }
        for f in overloads {
            check_function(f, facts, out);
        }
    }
}

fn check_function(f: &FunctionFact, facts: &Facts, out: &mut Vec<Finding>) {
    let object = f.display();
    if f.worker_owners.is_empty() {
        let kind = if f.security_definer {
            "SECURITY DEFINER: runs with its owner's privileges"
        } else {
            "SECURITY INVOKER: runs with the caller's privileges"
        };
        out.push(finding(
            "function-approved",
            object.clone(),
            Status::Pass,
            format!("{kind} (owner {})", f.owner),
        ));
    } else {
        out.push(finding(
            "function-approved",
            object.clone(),
            Status::Fail,
            format!(
                "owned by {}, and worker role(s) {} can therefore redefine an approved entry \
                 point; fix: ALTER FUNCTION {object} OWNER TO an administrator",
                f.owner,
                f.worker_owners.join(", ")
            ),
        ));
    }
    if !f.security_definer {
        return;
    }
    let Some(path) = f.search_path() else {
        out.push(finding(
            "function-search-path",
            object.clone(),
            Status::Fail,
            format!(
                "SECURITY DEFINER without a pinned search_path: the caller's search_path decides \
                 what its unqualified names mean; fix: ALTER FUNCTION {object} SET search_path = \
                 public, pg_temp"
            ),
        ));
        return;
    };
    let shown = path.join(", ");
    let mut ok = true;
    for schema in &path {
        for (s, role) in &facts.path_schema_create {
            if s == schema {
                ok = false;
                out.push(finding(
                    "function-search-path",
                    object.clone(),
                    Status::Fail,
                    format!(
                        "search_path = {shown}, but {role} may CREATE in {schema}: it can plant \
                         objects this SECURITY DEFINER function resolves; fix: REVOKE CREATE ON \
                         SCHEMA {} FROM {}",
                        quote_ident(schema),
                        quote_ident(role)
                    ),
                ));
            }
        }
    }
    if path.last().map(String::as_str) != Some("pg_temp") {
        ok = false;
        out.push(finding(
            "function-search-path",
            object.clone(),
            Status::Warn,
            format!(
                "search_path = {shown} does not end with pg_temp: temporary objects are \
                 searched first; write SET search_path = {}, pg_temp",
                if path.is_empty() {
                    "pg_catalog".to_string()
                } else {
                    path.iter()
                        .filter(|s| s.as_str() != "pg_temp")
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        ));
    }
    if ok {
        out.push(finding(
            "function-search-path",
            object,
            Status::Pass,
            format!("SECURITY DEFINER with pinned search_path = {shown}"),
        ));
    }
}

/// The schemas of a `search_path` value as `proconfig` stores it
/// (`public, pg_temp`, `"$user", public`, `""`).
pub fn parse_search_path(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| {
            let s = s.trim();
            match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(inner) => inner.replace("\"\"", "\""),
                None => s.to_ascii_lowercase(),
            }
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// An identifier as SQL needs it written.
pub fn quote_ident(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

// ---------------------------------------------------------------------------
// Reading the catalogs
// ---------------------------------------------------------------------------

const Q_RELATIONS: &str = "
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text,
       pg_catalog.pg_get_userbyid(c.relowner)::text,
       c.relrowsecurity, c.relforcerowsecurity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = $4
                  AND a.attnum > 0 AND NOT a.attisdropped)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND (n.nspname = ANY ($1::text[])
        OR EXISTS (SELECT 1 FROM unnest($2::text[], $3::text[]) AS t(s, r)
                    WHERE t.s = n.nspname AND t.r = c.relname))
 ORDER BY 2, 3";

const Q_SCHEMAS: &str = "
SELECT n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = ANY ($1::text[])";

const Q_ROLE: &str = "
SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls
  FROM pg_catalog.pg_roles r WHERE r.rolname = $1::text";

const Q_ROLE_MEMBERSHIPS: &str = "
SELECT r.rolname::text, r.rolsuper
  FROM pg_catalog.pg_roles r
 WHERE (r.rolsuper OR r.rolbypassrls)
   AND r.rolname <> $1::text
   AND pg_catalog.pg_has_role($1::text::name, r.oid, 'MEMBER')
 ORDER BY 1";

const Q_ROLE_OWNS: &str = "
SELECT n.nspname::text || '.' || c.relname::text, c.relkind::text,
       pg_catalog.pg_get_userbyid(c.relowner)::text, n.nspname::text, c.relname::text
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY ($2::oid[])
   AND pg_catalog.pg_has_role($1::text::name, c.relowner, 'MEMBER')
UNION ALL
SELECT n.nspname::text, 'schema', pg_catalog.pg_get_userbyid(n.nspowner)::text,
       n.nspname::text, NULL
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = ANY ($3::text[])
   AND pg_catalog.pg_has_role($1::text::name, n.nspowner, 'MEMBER')
 ORDER BY 4, 5 NULLS FIRST";

const Q_ROLE_GRANTS: &str = "
SELECT n.nspname::text, c.relname::text,
       CASE WHEN c.relkind = 'S' THEN
            CASE WHEN pg_catalog.has_table_privilege($1::text::name, c.oid, 'UPDATE')
                 THEN ARRAY['UPDATE'] ELSE ARRAY[]::text[] END
       ELSE array_remove(ARRAY[
            CASE WHEN pg_catalog.has_any_column_privilege($1::text::name, c.oid, 'INSERT') THEN 'INSERT' END,
            CASE WHEN pg_catalog.has_any_column_privilege($1::text::name, c.oid, 'UPDATE') THEN 'UPDATE' END,
            CASE WHEN pg_catalog.has_table_privilege($1::text::name, c.oid, 'DELETE') THEN 'DELETE' END,
            CASE WHEN pg_catalog.has_table_privilege($1::text::name, c.oid, 'TRUNCATE') THEN 'TRUNCATE' END,
            CASE WHEN pg_catalog.has_table_privilege($1::text::name, c.oid, 'TRIGGER') THEN 'TRIGGER' END
       ], NULL) END
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY ($2::oid[])
 ORDER BY 1, 2";

const Q_ROLE_SCHEMA_CREATE: &str = "
SELECT n.nspname::text
  FROM pg_catalog.pg_namespace n
 WHERE n.nspname = ANY ($2::text[])
   AND pg_catalog.has_schema_privilege($1::text::name, n.oid, 'CREATE')
 ORDER BY 1";

const Q_FUNCTIONS: &str = "
SELECT n.nspname::text, p.proname::text, pg_catalog.oidvectortypes(p.proargtypes),
       p.prosecdef, coalesce(p.proconfig, ARRAY[]::text[]),
       pg_catalog.pg_get_userbyid(p.proowner)::text,
       ARRAY(SELECT w FROM unnest($3::text[]) AS w
              WHERE pg_catalog.pg_has_role(w::name, p.proowner, 'MEMBER') ORDER BY 1)
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS t(s, f)
                WHERE t.s = n.nspname AND t.f = p.proname)
 ORDER BY 1, 2, 3";

const Q_POLICIES: &str = "
SELECT n.nspname::text, c.relname::text, pol.polname::text, pol.polpermissive,
       CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                       WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r)::text END
               FROM unnest(pol.polroles) AS r),
       EXISTS (SELECT 1 FROM unnest(pol.polroles) AS r
                WHERE r = 0 OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS w
                                        WHERE pg_catalog.pg_has_role(w::name, r, 'MEMBER'))),
       pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
       pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid)
  FROM pg_catalog.pg_policy pol
  JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE pol.polrelid = ANY ($1::oid[])
 ORDER BY 1, 2, 3";

const Q_PATH_SCHEMA_CREATE: &str = "
SELECT n.nspname::text, w
  FROM pg_catalog.pg_namespace n, unnest($2::text[]) AS w
 WHERE n.nspname = ANY ($1::text[])
   AND pg_catalog.has_schema_privilege(w::name, n.oid, 'CREATE')
 ORDER BY 1, 2";

/// Reads everything [`evaluate`] needs, read-only.
pub async fn gather(
    client: &tokio_postgres::Client,
    plan: &Plan,
) -> Result<Facts, tokio_postgres::Error> {
    let mut facts = Facts::default();
    let (table_schemas, table_names): (Vec<String>, Vec<String>) =
        plan.tables.iter().cloned().unzip();
    for row in client
        .query(
            Q_RELATIONS,
            &[&plan.schemas, &table_schemas, &table_names, &TENANT_COLUMN],
        )
        .await?
    {
        let kind: String = row.get(3);
        facts.relations.push(Relation {
            oid: row.get(0),
            schema: row.get(1),
            name: row.get(2),
            kind: kind.chars().next().unwrap_or('?'),
            owner: row.get(4),
            rls: row.get(5),
            force: row.get(6),
            tenant_column: row.get(7),
        });
    }
    for row in client.query(Q_SCHEMAS, &[&plan.schemas]).await? {
        facts.schemas.push(SchemaFact {
            name: row.get(0),
            owner: row.get(1),
        });
    }
    let oids: Vec<u32> = facts.relations.iter().map(|r| r.oid).collect();
    let mut existing = Vec::new();
    for worker in &plan.workers {
        let mut role = RoleFact {
            name: worker.clone(),
            ..RoleFact::default()
        };
        if let Some(row) = client.query_opt(Q_ROLE, &[worker]).await? {
            role.exists = true;
            role.can_login = row.get(0);
            role.superuser = row.get(1);
            role.bypassrls = row.get(2);
            existing.push(worker.clone());
        }
        if role.exists && !role.superuser {
            for row in client.query(Q_ROLE_MEMBERSHIPS, &[worker]).await? {
                let is_super: bool = row.get(1);
                let attr = if is_super { "SUPERUSER" } else { "BYPASSRLS" };
                role.privileged_memberships.push((row.get(0), attr));
            }
            for row in client
                .query(Q_ROLE_OWNS, &[worker, &oids, &plan.schemas])
                .await?
            {
                let kind: String = row.get(1);
                let schema: String = row.get(3);
                let object = match row.get::<_, Option<String>>(4) {
                    Some(name) => format!(
                        "{} {}",
                        kind_name(kind.chars().next().unwrap_or('?')),
                        qualified(&schema, &name)
                    ),
                    None => format!("schema {}", quote_ident(&schema)),
                };
                role.owns.push((object, row.get(2)));
            }
            for row in client.query(Q_ROLE_GRANTS, &[worker, &oids]).await? {
                let privileges: Vec<String> = row.get(2);
                if !privileges.is_empty() {
                    let schema: String = row.get(0);
                    let name: String = row.get(1);
                    role.grants.push((qualified(&schema, &name), privileges));
                }
            }
            for row in client
                .query(Q_ROLE_SCHEMA_CREATE, &[worker, &plan.schemas])
                .await?
            {
                role.schema_create.push(row.get(0));
            }
        }
        facts.roles.push(role);
    }
    let (fn_schemas, fn_names): (Vec<String>, Vec<String>) = plan.functions.iter().cloned().unzip();
    for row in client
        .query(Q_FUNCTIONS, &[&fn_schemas, &fn_names, &existing])
        .await?
    {
        facts.functions.push(FunctionFact {
            schema: row.get(0),
            name: row.get(1),
            args: row.get(2),
            security_definer: row.get(3),
            config: row.get(4),
            owner: row.get(5),
            worker_owners: row.get(6),
        });
    }
    let tenant_oids: Vec<u32> = facts
        .relations
        .iter()
        .filter(|r| r.is_table() && r.tenant_column)
        .map(|r| r.oid)
        .collect();
    for row in client.query(Q_POLICIES, &[&tenant_oids, &existing]).await? {
        facts.policies.push(PolicyFact {
            schema: row.get(0),
            table: row.get(1),
            name: row.get(2),
            permissive: row.get(3),
            command: row.get(4),
            roles: row.get(5),
            applies_to_worker: row.get(6),
            using: row.get(7),
            with_check: row.get(8),
        });
    }
    let mut path_schemas: Vec<String> = facts
        .functions
        .iter()
        .filter(|f| f.security_definer)
        .filter_map(FunctionFact::search_path)
        .flatten()
        .filter(|s| s != "pg_temp" && s != "$user")
        .collect();
    path_schemas.sort();
    path_schemas.dedup();
    // Superuser workers are reported as such; every schema would repeat it.
    let non_super: Vec<String> = facts
        .roles
        .iter()
        .filter(|r| r.exists && !r.superuser)
        .map(|r| r.name.clone())
        .collect();
    for row in client
        .query(Q_PATH_SCHEMA_CREATE, &[&path_schemas, &non_super])
        .await?
    {
        facts.path_schema_create.push((row.get(0), row.get(1)));
    }
    Ok(facts)
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

pub fn run(args: DoctorArgs) -> i32 {
    match doctor(&args) {
        Ok((report, target)) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("pgward doctor: cannot write JSON: {e}");
                        return EXIT_CONFIG;
                    }
                }
            } else {
                println!("pgward doctor: {} against {target}", args.config.display());
                print_human(&report);
            }
            report.exit_code()
        }
        Err(message) => {
            eprintln!("pgward doctor: {message}");
            EXIT_CONFIG
        }
    }
}

/// The report, and what was inspected (`user@host:port/db, PostgreSQL N`).
fn doctor(args: &DoctorArgs) -> Result<(Report, String), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let url = match &args.admin_url {
        Some(u) => u.clone(),
        None => std::env::var(ADMIN_URL_ENV).map_err(|_| {
            format!(
                "no admin connection: pass --admin-url postgres://USER:PASSWORD@HOST:PORT/DB \
                 or set {ADMIN_URL_ENV}"
            )
        })?,
    };
    let mut pg = tokio_postgres::Config::from_str(&url).map_err(|e| {
        format!("invalid admin URL: {e} (expected postgres://USER:PASSWORD@HOST:PORT/DB)")
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("pgward-doctor");
    }
    let target = describe_target(&pg);
    let plan = Plan::from_config(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let (facts, version) = runtime.block_on(async {
        let (client, connection) = pg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to {target}: {}", describe_error(&e)))?;
        let conn = tokio::spawn(connection);
        // Catalog inspection only; make sure of it.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(|e| format!("{target}: {}", describe_error(&e)))?;
        let query_error = |e: tokio_postgres::Error| {
            format!("catalog query on {target} failed: {}", describe_error(&e))
        };
        let result = async {
            let version: String = client
                .query_one("SHOW server_version", &[])
                .await
                .map_err(query_error)?
                .get(0);
            let facts = gather(&client, &plan).await.map_err(query_error)?;
            Ok::<_, String>((facts, version))
        }
        .await;
        drop(client);
        let _ = conn.await;
        result
    })?;
    Ok((
        Report::new(evaluate(&plan, &facts)),
        format!("{target} (PostgreSQL {version})"),
    ))
}

/// `user@host:port/db`, never the password.
fn describe_target(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        pg.get_user().unwrap_or("?"),
        pg.get_dbname().or(pg.get_user()).unwrap_or("?")
    )
}

fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} [{}]", db.severity(), db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn print_human(report: &Report) {
    let width = report
        .findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(0);
    for f in &report.findings {
        println!(
            "{}  {:width$}  {}: {}",
            f.status.label(),
            f.check,
            f.object,
            f.detail
        );
    }
    let s = report.summary;
    println!(
        "{} pass, {} fail, {} warn: {}",
        s.pass,
        s.fail,
        s.warn,
        if s.fail > 0 {
            "the database does not hold the line the policy draws"
        } else {
            "no failed check"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            schemas: vec!["ops".into()],
            tables: vec![("public".into(), "judgments".into())],
            workers: vec!["w".into()],
            functions: vec![("ops".into(), "f".into()), ("ops".into(), "gone".into())],
            tenant_setting: "app.current_tenant".into(),
            tenant_classes: vec!["worker".into()],
        }
    }

    fn table(schema: &str, name: &str, tenant: bool) -> Relation {
        Relation {
            oid: 1,
            schema: schema.into(),
            name: name.into(),
            kind: 'r',
            owner: "postgres".into(),
            rls: true,
            force: true,
            tenant_column: tenant,
        }
    }

    fn good() -> Facts {
        Facts {
            relations: vec![
                table("ops", "job_queue", false),
                table("public", "judgments", true),
            ],
            schemas: vec![SchemaFact {
                name: "ops".into(),
                owner: "postgres".into(),
            }],
            roles: vec![RoleFact {
                name: "w".into(),
                exists: true,
                can_login: true,
                ..RoleFact::default()
            }],
            functions: vec![FunctionFact {
                schema: "ops".into(),
                name: "f".into(),
                args: "text".into(),
                security_definer: true,
                config: vec!["search_path=public, pg_temp".into()],
                owner: "postgres".into(),
                worker_owners: vec![],
            }],
            policies: vec![PolicyFact {
                schema: "public".into(),
                table: "judgments".into(),
                name: "tenant_isolation".into(),
                permissive: true,
                command: "SELECT".into(),
                roles: vec!["w".into()],
                applies_to_worker: true,
                using: Some(
                    "(tenant_id = current_setting('app.current_tenant'::text, true))".into(),
                ),
                with_check: None,
            }],
            path_schema_create: vec![],
        }
    }

    fn fails(findings: &[Finding]) -> Vec<(&'static str, &str)> {
        findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| (f.check, f.object.as_str()))
            .collect()
    }

    #[test]
    fn a_sound_database_passes_with_a_warning_for_the_missing_function() {
        let findings = evaluate(&plan(), &good());
        assert!(fails(&findings).is_empty(), "{findings:#?}");
        let report = Report::new(findings);
        assert_eq!(report.summary.warn, 1, "{:#?}", report.findings);
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn each_drift_is_a_failure() {
        let mut facts = good();
        facts.relations[1].force = false;
        facts.relations[0].rls = false;
        facts.roles[0].bypassrls = true;
        facts.roles[0].grants = vec![("ops.job_queue".into(), vec!["INSERT".into()])];
        facts.roles[0].schema_create = vec!["ops".into()];
        facts.roles[0].owns = vec![("table ops.job_queue".into(), "w".into())];
        facts.functions[0].config.clear();
        facts.policies.push(PolicyFact {
            name: "open".into(),
            using: Some("true".into()),
            ..facts.policies[0].clone()
        });
        let findings = evaluate(&plan(), &facts);
        let f = fails(&findings);
        for expected in [
            ("rls-enabled", "ops.job_queue"),
            ("rls-forced", "public.judgments"),
            ("worker-bypassrls", "w"),
            ("worker-grants", "ops.job_queue"),
            ("worker-grants", "schema ops"),
            ("worker-ownership", "table ops.job_queue"),
            ("function-search-path", "ops.f(text)"),
            ("tenant-policy", "public.judgments policy open"),
        ] {
            assert!(f.contains(&expected), "{expected:?} not in {f:#?}");
        }
        assert_eq!(Report::new(findings).exit_code(), EXIT_FINDINGS);
    }

    #[test]
    fn superusers_and_privileged_memberships_fail() {
        let mut facts = good();
        facts.roles[0].privileged_memberships = vec![("service_role".into(), "BYPASSRLS")];
        let f = evaluate(&plan(), &facts);
        assert!(fails(&f).contains(&("worker-bypassrls", "w")));
        facts.roles[0].superuser = true;
        let f = evaluate(&plan(), &facts);
        assert!(fails(&f).contains(&("worker-superuser", "w")));
    }

    #[test]
    fn tenant_policy_needs_a_reader() {
        let mut facts = good();
        facts.policies.clear();
        let f = evaluate(&plan(), &facts);
        assert!(fails(&f).contains(&("tenant-policy", "public.judgments")));
        // Without a tenant class neither FORCE nor the policy matter.
        let mut p = plan();
        p.tenant_classes.clear();
        facts.relations[1].force = false;
        assert!(fails(&evaluate(&p, &facts)).is_empty());
    }

    #[test]
    fn writable_schemas_in_the_pinned_path_fail_and_pg_temp_goes_last() {
        let mut facts = good();
        facts.path_schema_create = vec![("public".into(), "w".into())];
        assert!(
            fails(&evaluate(&plan(), &facts)).contains(&("function-search-path", "ops.f(text)"))
        );
        let mut facts = good();
        facts.functions[0].config = vec!["search_path=pg_temp, public".into()];
        let f = evaluate(&plan(), &facts);
        assert!(fails(&f).is_empty());
        assert!(
            f.iter()
                .any(|x| x.check == "function-search-path" && x.status == Status::Warn)
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            parse_search_path("\"$user\", Public, pg_temp"),
            ["$user", "public", "pg_temp"]
        );
        assert!(parse_search_path("\"\"").is_empty());
        assert!(mentions_setting(
            "(tenant_id = current_setting('App.Current_Tenant'::text, true))",
            "app.current_tenant"
        ));
        assert!(!mentions_setting(
            "current_setting('app.current_tenant_x')",
            "app.current_tenant"
        ));
        assert_eq!(quote_ident("ops"), "ops");
        assert_eq!(quote_ident("Ops"), "\"Ops\"");
    }
}
