//! The access-control sections of policy.yaml: `mode:`, `identities:`,
//! `protected:` and `functions:`. Deserialized as written, then [`validate`]d;
//! `crate::policy` compiles them into fast lookups.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::locate::{Target, YamlPath};

/// `enforce` refuses what the policy denies; `monitor` lets it through and
/// only reports (logs/audits) that it would have been denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

/// An action named in `allow:` lists. Mirrors `crate::inspect::Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Read,
    Write,
    Ddl,
}

impl From<ActionName> for crate::inspect::Action {
    fn from(a: ActionName) -> Self {
        match a {
            ActionName::Read => crate::inspect::Action::Read,
            ActionName::Write => crate::inspect::Action::Write,
            ActionName::Ddl => crate::inspect::Action::Ddl,
        }
    }
}

/// `identities:` — who is who.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitiesConfig {
    /// Class of every identity that no class lists.
    pub default_class: String,
    /// Which part of a verified client certificate is the identity.
    #[serde(default)]
    pub certificate_identity: CertificateIdentity,
    /// Class name → class. Names are what `allow:` and `functions:` refer to.
    #[serde(deserialize_with = "unique_map")]
    pub classes: BTreeMap<String, ClassConfig>,
}

impl Default for IdentitiesConfig {
    /// No `identities:` section: everyone is in one restricted class, `default`.
    fn default() -> Self {
        let mut classes = BTreeMap::new();
        classes.insert(
            "default".to_owned(),
            ClassConfig {
                restricted: true,
                users: Vec::new(),
                cert_subjects: Vec::new(),
                mode: None,
                tenant: None,
                require_client_cert: false,
                upstream: None,
                max_connections: None,
            },
        );
        IdentitiesConfig {
            default_class: "default".to_owned(),
            certificate_identity: CertificateIdentity::default(),
            classes,
        }
    }
}

/// One identity class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Restricted classes are checked against `protected:` and `functions:`;
    /// unrestricted ones may do anything (still audited). Default: true.
    #[serde(default = "yes")]
    pub restricted: bool,
    /// PostgreSQL user names from the startup message, matched exactly.
    #[serde(default)]
    pub users: Vec<String>,
    /// Client certificate subjects (reserved for certificate-based identity).
    #[serde(default)]
    pub cert_subjects: Vec<String>,
    /// Overrides the global `mode:` for this class.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Where this class's tenant comes from; absent: pgward sets no tenant.
    #[serde(default)]
    pub tenant: Option<super::tenant::ClassTenant>,
    /// Sessions of this class open at once; more are refused (53300).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Refuse members of this class that present no verified client
    /// certificate (needs `server.tls.client_ca`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Credentials pgward uses to log in to PostgreSQL itself for members
    /// identified by certificate (they then send no password).
    #[serde(default)]
    pub upstream: Option<UpstreamLogin>,
}

/// Which certificate field names the identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateIdentity {
    /// The subject's common name (CN).
    #[default]
    CommonName,
    /// The first DNS name in the subjectAltName.
    SanDns,
    /// The first e-mail address in the subjectAltName.
    SanEmail,
}

/// `identities.classes.X.upstream`: the PostgreSQL role pgward logs in as.
/// The password is never written in policy.yaml: it comes from an
/// environment variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLogin {
    pub user: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
}

impl UpstreamLogin {
    /// Reads the password now (at each login, so a rotated secret is picked up).
    pub fn password(&self) -> Result<String, String> {
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set"));
        }
        if let Some(path) = &self.password_file {
            return std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        Err("no password_env or password_file".into())
    }
}

fn yes() -> bool {
    true
}

/// One entry of `protected:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedRule {
    /// Unique rule id, quoted in refusals and audit records.
    pub id: String,
    /// Whole schemas protected by this rule (every object in them).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Individual tables, `schema.table`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Overrides class and global `mode:` for refusals by this rule.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Class name → actions that class may perform on the protected objects.
    /// Restricted classes not listed may do nothing to them.
    #[serde(default, deserialize_with = "unique_map")]
    pub allow: BTreeMap<String, Vec<ActionName>>,
    /// Sent to the client with a refusal: how to do it properly.
    #[serde(default)]
    pub hint: Option<String>,
}

/// One class's entry under `functions:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionsConfig {
    /// `schema.function` names this class may call in protected schemas.
    pub approved: Vec<String>,
    /// Overrides class and global `mode:` for function refusals.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// A problem found after deserialization: where (path, key or value) and what.
#[derive(Debug)]
pub struct Problem {
    pub path: YamlPath,
    pub target: Target,
    pub message: String,
}

pub(super) fn problem(path: YamlPath, target: Target, message: String) -> Problem {
    Problem {
        path,
        target,
        message,
    }
}

/// Splits `schema.name`; both parts non-empty, exactly one dot.
pub fn split_qualified(s: &str) -> Option<(&str, &str)> {
    let (schema, name) = s.split_once('.')?;
    if schema.is_empty() || name.is_empty() || name.contains('.') {
        return None;
    }
    Some((schema, name))
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.trim() != s {
        return Err(format!("{what} {s:?} has leading or trailing spaces"));
    }
    Ok(())
}

/// Cross-field checks on the access sections; the first problem found.
pub fn validate(
    identities: &IdentitiesConfig,
    protected: &[ProtectedRule],
    functions: &BTreeMap<String, FunctionsConfig>,
) -> Result<(), Problem> {
    let root = YamlPath::root();
    let ids = root.key("identities");
    let classes = ids.key("classes");

    if identities.classes.is_empty() {
        return Err(problem(
            classes,
            Target::Key,
            "at least one identity class is required".into(),
        ));
    }
    for (name, class) in &identities.classes {
        check_name("class name", name).map_err(|m| problem(classes.key(name), Target::Key, m))?;
        if let Some(t) = &class.tenant {
            super::tenant::validate_class(classes.key(name).key("tenant"), t)?;
        }
        if let Some(u) = &class.upstream
            && u.password_env.is_some() == u.password_file.is_some()
        {
            return Err(problem(
                classes.key(name).key("upstream"),
                Target::Key,
                "give exactly one of password_env and password_file (never the password itself)"
                    .into(),
            ));
        }
    }
    if !identities.classes.contains_key(&identities.default_class) {
        return Err(problem(
            ids.key("default_class"),
            Target::Value,
            format!(
                "default_class {:?} is not a class under identities.classes (known: {})",
                identities.default_class,
                known(identities)
            ),
        ));
    }

    // Every user and certificate subject in at most one class.
    let mut users: HashMap<&str, &str> = HashMap::new();
    let mut subjects: HashMap<&str, &str> = HashMap::new();
    for (cname, class) in &identities.classes {
        for (field, list, seen) in [
            ("users", &class.users, &mut users),
            ("cert_subjects", &class.cert_subjects, &mut subjects),
        ] {
            for (i, u) in list.iter().enumerate() {
                let at = classes.key(cname).key(field).index(i);
                check_name("user name", u).map_err(|m| problem(at.clone(), Target::Value, m))?;
                if let Some(prev) = seen.insert(u, cname) {
                    let msg = if prev == cname {
                        format!("{u:?} is listed twice in class {cname:?}")
                    } else {
                        format!(
                            "{u:?} is already in class {prev:?}; an identity belongs to one class"
                        )
                    };
                    return Err(problem(at, Target::Value, msg));
                }
            }
        }
    }

    let prot = root.key("protected");
    let mut rule_ids: HashMap<&str, usize> = HashMap::new();
    for (i, rule) in protected.iter().enumerate() {
        let at = prot.index(i);
        check_name("rule id", &rule.id).map_err(|m| problem(at.key("id"), Target::Value, m))?;
        if let Some(prev) = rule_ids.insert(&rule.id, i) {
            return Err(problem(
                at.key("id"),
                Target::Value,
                format!(
                    "duplicate rule id {:?} (also protected[{prev}].id)",
                    rule.id
                ),
            ));
        }
        if rule.schemas.is_empty() && rule.tables.is_empty() {
            return Err(problem(
                at,
                Target::Value,
                format!(
                    "rule {:?} protects nothing: give `schemas:` and/or `tables:`",
                    rule.id
                ),
            ));
        }
        for (j, s) in rule.schemas.iter().enumerate() {
            let p = at.key("schemas").index(j);
            check_name("schema name", s).map_err(|m| problem(p.clone(), Target::Value, m))?;
            if s.contains('.') {
                return Err(problem(
                    p,
                    Target::Value,
                    format!("{s:?} is not a schema name (no dots); list tables under `tables:`"),
                ));
            }
            if s == "*" {
                return Err(problem(
                    p,
                    Target::Value,
                    "\"*\" is not a schema name".into(),
                ));
            }
        }
        for (j, t) in rule.tables.iter().enumerate() {
            let p = at.key("tables").index(j);
            match split_qualified(t) {
                Some((s, n))
                    if check_name("", s).is_ok() && check_name("", n).is_ok() && n != "*" => {}
                _ => {
                    return Err(problem(
                        p,
                        Target::Value,
                        format!("{t:?} is not a `schema.table` name"),
                    ));
                }
            }
        }
        for cname in rule.allow.keys() {
            if !identities.classes.contains_key(cname) {
                return Err(problem(
                    at.key("allow").key(cname),
                    Target::Key,
                    format!(
                        "unknown identity class {cname:?} (known: {})",
                        known(identities)
                    ),
                ));
            }
        }
    }

    let funcs = root.key("functions");
    for (cname, f) in functions {
        if !identities.classes.contains_key(cname) {
            return Err(problem(
                funcs.key(cname),
                Target::Key,
                format!(
                    "unknown identity class {cname:?} (known: {})",
                    known(identities)
                ),
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (j, name) in f.approved.iter().enumerate() {
            let p = funcs.key(cname).key("approved").index(j);
            if split_qualified(name).is_none() || name.trim() != name {
                return Err(problem(
                    p,
                    Target::Value,
                    format!("{name:?} is not a `schema.function` name"),
                ));
            }
            if let Some(prev) = seen.insert(name, j) {
                return Err(problem(
                    p,
                    Target::Value,
                    format!("{name:?} is listed twice (also approved[{prev}])"),
                ));
            }
        }
    }
    Ok(())
}

fn known(identities: &IdentitiesConfig) -> String {
    identities
        .classes
        .keys()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deserializes a mapping into a `BTreeMap`, refusing duplicate keys (YAML
/// allows them to silently override each other; in a security policy that
/// hides mistakes).
pub fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueMap<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMap<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = map.next_key_seed(NewKey(&out))? {
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    /// Reads a key and fails while still reading it (so the error carries
    /// the key's own line and column) if it was seen before.
    struct NewKey<'a, V>(&'a BTreeMap<String, V>);
    impl<'de, V> de::DeserializeSeed<'de> for NewKey<'_, V> {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de, V> Visitor<'de> for NewKey<'_, V> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E: de::Error>(self, k: &str) -> Result<String, E> {
            if self.0.contains_key(k) {
                return Err(E::custom(format_args!("duplicate key {k:?}")));
            }
            Ok(k.to_owned())
        }
    }
    d.deserialize_map(UniqueMap(PhantomData))
}
