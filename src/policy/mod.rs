//! Decisions: is this identity allowed to run this statement?
//!
//! [`Policy::from_config`] compiles the `identities:`, `protected:` and
//! `functions:` sections of policy.yaml into hash lookups; [`Policy::decide`]
//! judges one [`StatementInfo`] (as produced by `crate::inspect`) for one
//! identity, given the session's search_path.
//!
//! Semantics, in order of the checks:
//! * Unrestricted classes: always [`Verdict::Allow`] (the session still audits).
//! * Anything [`Opaque`] (DO blocks, dynamic SQL, unmodelled statements, an
//!   `EXECUTE` the session could not resolve): refused — fail closed.
//! * Each access: a qualified name is checked against its schema. An
//!   unqualified name is checked against EVERY schema of the known search_path
//!   (`$user` = the identity; pg_catalog and pg_temp implicitly) because which
//!   one PostgreSQL picks depends on what exists; if any candidate is a
//!   protected object and the action is not allowed, it is refused. With an
//!   unknown search_path, it is refused if any rule could match it at all.
//!   Schema-level objects (name `"*"`, e.g. `DROP SCHEMA ops`) match schema
//!   rules for that schema and table rules for tables in it.
//! * Functions: for a class with an approved list, a call qualified into a
//!   protected schema (one named in some rule's `schemas:`) must be approved by
//!   exact `schema.name`. Unqualified and `pg_catalog` calls are treated as
//!   built-ins and allowed (they cannot be resolved statically without the
//!   catalog; PostgreSQL's EXECUTE grants remain the second line of defence).
//! * `PREPARE name AS <stmt>`: the inner statement is judged too, so a
//!   forbidden statement is refused when prepared (and again when executed).
//! * search_path and setting changes are not judged here.
//!
//! Mode: rule `mode` > class `mode` > global `mode`; `monitor` turns a refusal
//! into [`Verdict::MonitorWouldDeny`]. An enforced refusal wins over a
//! monitored one when a statement has both.
//!
//! Names are compared exactly (case-sensitively): the inspector folds
//! unquoted identifiers as PostgreSQL does, and `"OPS"` is not `ops`.

use std::collections::{HashMap, HashSet};

use crate::config::tenant::ClassTenant;
use crate::config::{CertificateIdentity, Config, Mode, UpstreamLogin, access::split_qualified};
use crate::inspect::{Action, ObjectName, Opaque, StatementInfo};

#[cfg(test)]
mod tests;

/// Rule id quoted when a statement is refused because it cannot be inspected.
pub const OPAQUE_RULE: &str = "pgward.opaque";

/// Rule id quoted when an identity whose tenant pgward sets tries to change it.
pub const TENANT_RULE: &str = "pgward.tenant";

/// Rule id quoted when a statement would change how pgward must read the
/// session's later statements.
pub const SESSION_RULE: &str = "pgward.session-integrity";

/// Settings that change how the server reads SQL text. pgward parses as UTF-8
/// with standard_conforming_strings on; were a restricted client to change
/// these, the server could see statements pgward never saw (a backslash
/// inside a string literal, a multi-byte character swallowing a quote).
const LEXICAL_SETTINGS: &[&str] = &[
    "standard_conforming_strings",
    "client_encoding",
    "backslash_quote",
];

/// An identity class, an index into the policy's classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(pub usize);

/// The session's search_path, as far as pgward could follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchPath {
    /// Schemas in order, as PostgreSQL folds them; may contain `"$user"`.
    Known(Vec<String>),
    /// Changed in a way pgward could not follow.
    Unknown,
}

/// The outcome of judging one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse the statement.
    Deny,
    /// Would be refused, but the applicable mode is `monitor`: run it, report it.
    MonitorWouldDeny,
}

/// One access as pgward resolved it, for audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAccess {
    pub action: Action,
    /// `None`: unqualified and not resolvable to a single schema.
    pub schema: Option<String>,
    pub name: String,
}

/// A verdict with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Id of the rule that denied (or would deny); `None` when allowed.
    pub rule: Option<String>,
    /// Human-readable; for a refusal, names object, action, identity, class, rule.
    pub reason: String,
    /// How to do it properly, sent to the client with a refusal.
    pub hint: Option<String>,
    pub accesses: Vec<ResolvedAccess>,
}

impl Decision {
    /// True only for [`Verdict::Deny`]: the statement must not run.
    pub fn is_refused(&self) -> bool {
        self.verdict == Verdict::Deny
    }
}

#[derive(Debug)]
struct Class {
    name: String,
    restricted: bool,
    /// Class override, else the global mode.
    mode: Mode,
    /// `Some` when the class has an approved function list: schema → names.
    approved: Option<HashMap<String, HashSet<String>>>,
    approved_mode: Mode,
    approved_rule: String,
    approved_hint: String,
    /// Where the class's tenant comes from; `Some`: pgward sets it, and the
    /// class may not touch it.
    tenant: Option<ClassTenant>,
    require_client_cert: bool,
    upstream: Option<UpstreamLogin>,
    max_connections: Option<usize>,
}

#[derive(Debug)]
struct Rule {
    id: String,
    mode: Option<Mode>,
    /// Allowed actions per class, as bit masks (see [`bit`]), indexed by ClassId.
    allow: Vec<u8>,
    hint: Option<String>,
}

fn bit(a: Action) -> u8 {
    match a {
        Action::Read => 1,
        Action::Write => 2,
        Action::Ddl => 4,
    }
}

fn action_str(a: Action) -> &'static str {
    match a {
        Action::Read => "read",
        Action::Write => "write",
        Action::Ddl => "ddl",
    }
}

/// The compiled policy.
#[derive(Debug)]
pub struct Policy {
    classes: Vec<Class>,
    /// The run-time setting carrying the tenant (lower case).
    tenant_setting: String,
    /// Certificate identity → class (`cert_subjects`).
    by_certificate: HashMap<String, ClassId>,
    certificate_identity: CertificateIdentity,
    by_user: HashMap<String, ClassId>,
    default_class: ClassId,
    rules: Vec<Rule>,
    /// schema → rules protecting the whole schema.
    schema_rules: HashMap<String, Vec<usize>>,
    /// schema → table → rules protecting that table.
    table_rules: HashMap<String, HashMap<String, Vec<usize>>>,
    /// table name (any schema) → rules; for unknown search_paths.
    rules_by_table_name: HashMap<String, Vec<usize>>,
    /// Rules with a `schemas:` list; for unknown search_paths.
    any_schema_rules: Vec<usize>,
}

impl Policy {
    /// Compiles a validated [`Config`].
    pub fn from_config(config: &Config) -> Policy {
        let global = config.mode;
        let mut ids: HashMap<&str, ClassId> = HashMap::new();
        let mut classes = Vec::new();
        let mut by_user = HashMap::new();
        let mut by_certificate = HashMap::new();
        for (i, (name, c)) in config.identities.classes.iter().enumerate() {
            ids.insert(name, ClassId(i));
            for u in &c.users {
                by_user.insert(u.clone(), ClassId(i));
            }
            for subject in &c.cert_subjects {
                by_certificate.insert(subject.clone(), ClassId(i));
            }
            let mode = c.mode.unwrap_or(global);
            let funcs = config.functions.get(name);
            let approved = funcs.map(|f| {
                let mut m: HashMap<String, HashSet<String>> = HashMap::new();
                for q in &f.approved {
                    if let Some((s, n)) = split_qualified(q) {
                        m.entry(s.to_owned()).or_default().insert(n.to_owned());
                    }
                }
                m
            });
            classes.push(Class {
                name: name.clone(),
                restricted: c.restricted,
                tenant: c.tenant.clone(),
                require_client_cert: c.require_client_cert,
                max_connections: c.max_connections,
                upstream: c.upstream.clone(),
                mode,
                approved,
                approved_mode: funcs.and_then(|f| f.mode).unwrap_or(mode),
                approved_rule: format!("functions.{name}.approved"),
                approved_hint: match funcs {
                    Some(f) if !f.approved.is_empty() => format!(
                        "class {name} may call these functions in protected schemas: {}",
                        f.approved.join(", ")
                    ),
                    _ => format!("class {name} may call no functions in protected schemas"),
                },
            });
        }
        // Validation guarantees default_class exists; fall back to a restricted
        // class rather than panicking if handed an unvalidated config.
        let default_class = ids
            .get(config.identities.default_class.as_str())
            .copied()
            .or_else(|| classes.iter().position(|c| c.restricted).map(ClassId))
            .unwrap_or(ClassId(0));

        let mut rules = Vec::new();
        let mut schema_rules: HashMap<String, Vec<usize>> = HashMap::new();
        let mut table_rules: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        let mut rules_by_table_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_schema_rules = Vec::new();
        for (ri, r) in config.protected.iter().enumerate() {
            let mut allow = vec![0u8; classes.len()];
            for (cname, actions) in &r.allow {
                if let Some(c) = ids.get(cname.as_str()) {
                    for a in actions {
                        allow[c.0] |= bit((*a).into());
                    }
                }
            }
            rules.push(Rule {
                id: r.id.clone(),
                mode: r.mode,
                allow,
                hint: r.hint.clone(),
            });
            for s in &r.schemas {
                schema_rules.entry(s.clone()).or_default().push(ri);
            }
            if !r.schemas.is_empty() {
                any_schema_rules.push(ri);
            }
            for t in &r.tables {
                if let Some((s, n)) = split_qualified(t) {
                    table_rules
                        .entry(s.to_owned())
                        .or_default()
                        .entry(n.to_owned())
                        .or_default()
                        .push(ri);
                    rules_by_table_name
                        .entry(n.to_owned())
                        .or_default()
                        .push(ri);
                }
            }
        }
        Policy {
            classes,
            tenant_setting: config.tenant.setting.clone(),
            by_certificate,
            certificate_identity: config.identities.certificate_identity,
            by_user,
            default_class,
            rules,
            schema_rules,
            table_rules,
            rules_by_table_name,
            any_schema_rules,
        }
    }

    /// The class of a startup user name; the default class when unlisted.
    pub fn class_for_user(&self, user: &str) -> ClassId {
        self.by_user
            .get(user)
            .copied()
            .unwrap_or(self.default_class)
    }

    pub fn class_name(&self, c: ClassId) -> &str {
        &self.classes[c.0].name
    }

    pub fn is_restricted(&self, c: ClassId) -> bool {
        self.classes[c.0].restricted
    }

    /// The class of a connection: its certificate identity when one is listed
    /// under some class's `cert_subjects`, else its startup user.
    pub fn class_for(&self, user: &str, certificate: Option<&str>) -> ClassId {
        certificate
            .and_then(|c| self.by_certificate.get(c).copied())
            .unwrap_or_else(|| self.class_for_user(user))
    }

    /// Which certificate field names an identity.
    pub fn certificate_identity(&self) -> CertificateIdentity {
        self.certificate_identity
    }

    /// Sessions the class may hold at once, when limited.
    pub fn max_connections(&self, c: ClassId) -> Option<usize> {
        self.classes[c.0].max_connections
    }

    pub fn requires_client_cert(&self, c: ClassId) -> bool {
        self.classes[c.0].require_client_cert
    }

    /// The role pgward logs in as for certificate-identified members of `c`.
    pub fn upstream_login(&self, c: ClassId) -> Option<&UpstreamLogin> {
        self.classes[c.0].upstream.as_ref()
    }

    /// Where the class's tenant comes from, when pgward sets one.
    pub fn tenant_spec(&self, c: ClassId) -> Option<&ClassTenant> {
        self.classes[c.0].tenant.as_ref()
    }

    /// The run-time setting that carries the tenant, e.g. `app.current_tenant`.
    pub fn tenant_setting(&self) -> &str {
        &self.tenant_setting
    }

    /// Looks a class up by name.
    pub fn class_by_name(&self, name: &str) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name == name)
            .map(ClassId)
    }

    /// Judges one statement run by `identity` (of class `class`) with the
    /// session's `search_path`.
    pub fn decide(
        &self,
        class: ClassId,
        identity: &str,
        stmt: &StatementInfo,
        search_path: &SearchPath,
    ) -> Decision {
        let c = &self.classes[class.0];
        if let Some(what) = self.tenant_tampering(c, stmt) {
            let verdict = match c.mode {
                Mode::Enforce => Verdict::Deny,
                Mode::Monitor => Verdict::MonitorWouldDeny,
            };
            return Decision {
                verdict,
                rule: Some(TENANT_RULE.to_owned()),
                reason: format!(
                    "pgward: {what} is refused for {identity} (class {}) by rule {TENANT_RULE}: pgward sets {} for this identity",
                    c.name, self.tenant_setting
                ),
                hint: Some(format!(
                    "the tenant comes from the connection (certificate or startup option), not from SQL; {} is set LOCAL in every transaction",
                    self.tenant_setting
                )),
                accesses: Vec::new(),
            };
        }
        let accesses = stmt
            .accesses
            .iter()
            .map(|a| self.resolve(a.action, &a.object, identity, search_path))
            .collect();
        if !c.restricted {
            return Decision {
                verdict: Verdict::Allow,
                rule: None,
                reason: format!("unrestricted class {}", c.name),
                hint: None,
                accesses,
            };
        }
        let mut j = Judge {
            policy: self,
            class,
            c,
            identity,
            search_path,
            deny: None,
            monitor: None,
        };
        j.statement(stmt, "");
        let (verdict, f) = match (j.deny, j.monitor) {
            (Some(f), _) => (Verdict::Deny, f),
            (None, Some(f)) => (Verdict::MonitorWouldDeny, f),
            (None, None) => {
                return Decision {
                    verdict: Verdict::Allow,
                    rule: None,
                    reason: "allowed".to_owned(),
                    hint: None,
                    accesses,
                };
            }
        };
        Decision {
            verdict,
            rule: Some(f.rule),
            reason: f.reason,
            hint: f.hint,
            accesses,
        }
    }

    fn resolve(
        &self,
        action: Action,
        object: &ObjectName,
        identity: &str,
        search_path: &SearchPath,
    ) -> ResolvedAccess {
        let schema = match (&object.schema, search_path) {
            (Some(s), _) => Some(s.clone()),
            (None, SearchPath::Known(path)) if path.len() == 1 => {
                Some(resolve_user(&path[0], identity).to_owned())
            }
            (None, _) => None,
        };
        ResolvedAccess {
            action,
            schema,
            name: object.name.clone(),
        }
    }

    /// Rules protecting `schema.name` (`name == "*"`: the schema itself, which
    /// also contains every protected table in it).
    fn matching_rules<'a>(&'a self, schema: &str, name: &str) -> impl Iterator<Item = usize> + 'a {
        let whole = self.schema_rules.get(schema).into_iter().flatten().copied();
        let tables = self.table_rules.get(schema);
        let named = if name == "*" {
            None
        } else {
            tables.and_then(|t| t.get(name))
        };
        let all_tables = if name == "*" { tables } else { None };
        whole.chain(named.into_iter().flatten().copied()).chain(
            all_tables
                .into_iter()
                .flat_map(|t| t.values().flatten().copied()),
        )
    }

    /// Rules an unqualified `name` could fall under in some schema.
    fn rules_for_any_schema<'a>(&'a self, name: &str) -> impl Iterator<Item = usize> + 'a {
        let named = if name == "*" {
            None
        } else {
            self.rules_by_table_name.get(name)
        };
        let all = if name == "*" {
            Some(self.rules_by_table_name.values().flatten().copied())
        } else {
            None
        };
        self.any_schema_rules
            .iter()
            .copied()
            .chain(named.into_iter().flatten().copied())
            .chain(all.into_iter().flatten())
    }
}

fn resolve_user<'a>(schema: &'a str, identity: &'a str) -> &'a str {
    if schema == "$user" { identity } else { schema }
}

/// A refusal (enforced or monitored) with its explanation.
struct Finding {
    rule: String,
    reason: String,
    hint: Option<String>,
}

/// Client encodings whose multi-byte characters can end in an ASCII byte
/// such as `'` or `\`: the server would split text differently from pgward,
/// which reads it as UTF-8. (PostgreSQL supports them only as client encodings.)
const UNSAFE_CLIENT_ENCODINGS: &[&str] = &[
    "SJIS",
    "SHIFTJIS",
    "SHIFTJIS2004",
    "MSKANJI",
    "WIN932",
    "WINDOWS932",
    "BIG5",
    "WIN950",
    "WINDOWS950",
    "GBK",
    "WIN936",
    "WINDOWS936",
    "CP936",
    "UHC",
    "WIN949",
    "WINDOWS949",
    "GB18030",
    "JOHAB",
];

impl Policy {
    /// Why the settings a startup packet asks for are refused for class `c`,
    /// if they are: the same session-integrity and tenant rules as for SQL,
    /// applied before the session exists.
    pub fn judge_startup(&self, c: ClassId, settings: &[(String, String)]) -> Option<String> {
        let class = &self.classes[c.0];
        for (name, value) in settings {
            let refused = match name.as_str() {
                _ if !class.restricted => false,
                "standard_conforming_strings" => !value.eq_ignore_ascii_case("on"),
                "backslash_quote" => true,
                "client_encoding" => {
                    let v: String = value
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .collect::<String>()
                        .to_ascii_uppercase();
                    UNSAFE_CLIENT_ENCODINGS.contains(&v.as_str())
                }
                "role" | "session_authorization" => class.tenant.is_some(),
                _ => false,
            };
            if refused {
                return Some(format!(
                    "pgward: the startup setting {name}={value} is refused for class {} by rule {SESSION_RULE}: pgward would read this session's SQL differently from PostgreSQL",
                    class.name
                ));
            }
        }
        None
    }

    /// What in `stmt` would change or clear the tenant pgward sets for class `c`.
    fn tenant_tampering(&self, c: &Class, stmt: &StatementInfo) -> Option<String> {
        c.tenant.as_ref()?;
        for name in &stmt.settings_changed {
            if name.eq_ignore_ascii_case(&self.tenant_setting) {
                return Some(format!("changing {name}"));
            }
            if name == "*" {
                return Some(format!("{} (it resets every setting)", stmt.kind));
            }
            if c.restricted && (name == "role" || name == "session_authorization") {
                return Some(format!(
                    "changing {name} (SET ROLE / SET SESSION AUTHORIZATION)"
                ));
            }
        }
        None
    }
}

/// What in `stmt` would undermine pgward's view of the session, if anything.
fn session_integrity_violation(stmt: &StatementInfo) -> Option<String> {
    if stmt.persists_settings {
        return Some(
            "ALTER ROLE/DATABASE/SYSTEM ... SET (it changes later sessions' settings, which pgward cannot follow)"
                .to_owned(),
        );
    }
    if let Some(name) = stmt
        .settings_changed
        .iter()
        .find(|s| LEXICAL_SETTINGS.contains(&s.as_str()))
    {
        return Some(format!(
            "changing {name} (pgward reads SQL as UTF-8 with standard_conforming_strings on)"
        ));
    }
    // "*" with an unknown search_path is set_config() of a name only known at
    // run time, or pg_settings written or wrapped in a view (RESET ALL and
    // DISCARD ALL reset the path to a known value).
    if stmt.settings_changed.iter().any(|s| s == "*")
        && stmt.search_path == Some(crate::inspect::SearchPathChange::Unknown)
    {
        return Some(
            "changing settings named only at run time (set_config() of a computed name, or pg_settings)"
                .to_owned(),
        );
    }
    None
}

/// Judging state for one statement: the first enforced and the first
/// monitored refusal found.
struct Judge<'a> {
    policy: &'a Policy,
    class: ClassId,
    c: &'a Class,
    identity: &'a str,
    search_path: &'a SearchPath,
    deny: Option<Finding>,
    monitor: Option<Finding>,
}

impl Judge<'_> {
    fn statement(&mut self, stmt: &StatementInfo, context: &str) {
        for o in &stmt.opaque {
            if self.deny.is_some() {
                return;
            }
            let what = match o {
                Opaque::CodeBlock(s) => format!("code block ({s})"),
                Opaque::DynamicSql(s) => format!("dynamic SQL ({s})"),
                Opaque::UnknownStatement(s) => format!("statement {s}"),
                Opaque::ExecutePrepared(name) => {
                    format!("EXECUTE {name} (cannot see what prepared statement {name} does)")
                }
            };
            let (identity, c) = (self.identity, self.c);
            self.record(c.mode, || Finding {
                rule: OPAQUE_RULE.to_owned(),
                reason: String::new(),
                hint: Some(
                    "pgward must be able to inspect every statement from this identity; \
                     use plain SQL or an approved function"
                        .to_owned(),
                ),
            }, |verb| {
                format!(
                    "pgward: {context}{what} {verb} for {identity} (class {}) by rule {OPAQUE_RULE}: \
                     it cannot be inspected",
                    c.name
                )
            });
        }
        if let Some(what) = session_integrity_violation(stmt)
            && self.deny.is_none()
        {
            let (identity, c) = (self.identity, self.c);
            self.record(
                c.mode,
                || Finding {
                    rule: SESSION_RULE.to_owned(),
                    reason: String::new(),
                    hint: Some("leave these settings at their defaults".to_owned()),
                },
                |verb| {
                    format!(
                        "pgward: {context}{what} {verb} for {identity} (class {}) by rule {SESSION_RULE}",
                        c.name
                    )
                },
            );
        }
        for a in &stmt.accesses {
            if self.deny.is_some() {
                return;
            }
            self.access(a.action, &a.object, context);
        }
        for f in &stmt.functions {
            if self.deny.is_some() {
                return;
            }
            self.function(f, context);
        }
        if let Some((name, inner)) = &stmt.prepares
            && self.deny.is_none()
        {
            let ctx = format!("{context}PREPARE {name}: ");
            self.statement(inner, &ctx);
        }
    }

    /// Records a refusal under `mode`, building it only when it will be kept.
    fn record(
        &mut self,
        mode: Mode,
        finding: impl FnOnce() -> Finding,
        reason: impl FnOnce(&str) -> String,
    ) {
        let slot = match mode {
            Mode::Enforce => &mut self.deny,
            Mode::Monitor => &mut self.monitor,
        };
        if slot.is_none() {
            let verb = match mode {
                Mode::Enforce => "denied",
                Mode::Monitor => "would be denied (monitor mode)",
            };
            let mut f = finding();
            f.reason = reason(verb);
            *slot = Some(f);
        }
    }

    /// The most severe rule among `rules` that forbids `action` to the class:
    /// an enforced one if any, else the first monitored one.
    fn violation(
        &self,
        action: Action,
        rules: impl Iterator<Item = usize>,
    ) -> Option<(usize, Mode)> {
        let mut found = None;
        for ri in rules {
            let r = &self.policy.rules[ri];
            if r.allow[self.class.0] & bit(action) != 0 {
                continue;
            }
            let mode = r.mode.unwrap_or(self.c.mode);
            if mode == Mode::Enforce {
                return Some((ri, mode));
            }
            found.get_or_insert((ri, mode));
        }
        found
    }

    fn refuse_access(&mut self, ri: usize, mode: Mode, action: Action, object: String) {
        let (policy, identity, c) = (self.policy, self.identity, self.c);
        let r = &policy.rules[ri];
        let class = &c.name;
        self.record(
            mode,
            || Finding {
                rule: r.id.clone(),
                reason: String::new(),
                hint: r.hint.clone(),
            },
            |verb| {
                format!(
                    "pgward: {} on {object} {verb} for {identity} (class {class}) by rule {}",
                    action_str(action),
                    r.id
                )
            },
        );
    }

    fn access(&mut self, action: Action, object: &ObjectName, context: &str) {
        let name = object.name.as_str();
        match (&object.schema, self.search_path) {
            (Some(schema), _) => {
                if let Some((ri, mode)) =
                    self.violation(action, self.policy.matching_rules(schema, name))
                {
                    let obj = format!("{context}{}", display_object(schema, name));
                    self.refuse_access(ri, mode, action, obj);
                }
            }
            (None, SearchPath::Known(path)) => {
                let explicit = path.iter().map(|s| resolve_user(s, self.identity));
                let implicit = ["pg_catalog", "pg_temp"]
                    .into_iter()
                    .filter(|i| !path.iter().any(|s| s == i));
                let mut worst: Option<(usize, Mode, &str)> = None;
                for schema in explicit.chain(implicit) {
                    if let Some((ri, mode)) =
                        self.violation(action, self.policy.matching_rules(schema, name))
                    {
                        if worst.is_none()
                            || (mode == Mode::Enforce
                                && worst.is_some_and(|w| w.1 != Mode::Enforce))
                        {
                            worst = Some((ri, mode, schema));
                        }
                        if mode == Mode::Enforce {
                            break;
                        }
                    }
                }
                if let Some((ri, mode, schema)) = worst {
                    let obj = format!(
                        "{context}{} (unqualified; search_path may resolve it to {})",
                        display_unqualified(name),
                        display_object(schema, name)
                    );
                    self.refuse_access(ri, mode, action, obj);
                }
            }
            (None, SearchPath::Unknown) => {
                if let Some((ri, mode)) =
                    self.violation(action, self.policy.rules_for_any_schema(name))
                {
                    let obj = format!(
                        "{context}{} (unqualified, and the session's search_path is unknown, \
                         so it may resolve to a protected object)",
                        display_unqualified(name)
                    );
                    self.refuse_access(ri, mode, action, obj);
                }
            }
        }
    }

    fn function(&mut self, f: &ObjectName, context: &str) {
        let Some(approved) = &self.c.approved else {
            return;
        };
        // Unqualified: a built-in as far as pgward can tell (see module docs).
        let Some(schema) = &f.schema else { return };
        if schema == "pg_catalog" || !self.policy.schema_rules.contains_key(schema.as_str()) {
            return;
        }
        if approved
            .get(schema.as_str())
            .is_some_and(|names| names.contains(&f.name))
        {
            return;
        }
        let (identity, c) = (self.identity, self.c);
        self.record(
            c.approved_mode,
            || Finding {
                rule: c.approved_rule.clone(),
                reason: String::new(),
                hint: Some(c.approved_hint.clone()),
            },
            |verb| {
                format!(
                    "pgward: {context}call of {schema}.{}() {verb} for {identity} (class {}) by rule {}: \
                     not an approved function",
                    f.name, c.name, c.approved_rule
                )
            },
        );
    }
}

fn display_object(schema: &str, name: &str) -> String {
    if name == "*" {
        format!("schema {schema}")
    } else {
        format!("{schema}.{name}")
    }
}

fn display_unqualified(name: &str) -> String {
    if name == "*" {
        "unqualified schema-level object".to_owned()
    } else {
        name.to_owned()
    }
}
