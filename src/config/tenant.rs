//! Tenant settings: which run-time setting carries the tenant (global
//! `tenant:` section) and, per identity class (`identities.classes.X.tenant`),
//! where the tenant comes from and which values are acceptable.

use serde::Deserialize;

use super::access::{Problem, problem};
use super::locate::{Target, YamlPath};

/// `tenant:` — global.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// The custom setting pgward sets LOCAL in every transaction, and that the
    /// row-level security policies read with `current_setting(...)`.
    #[serde(default = "default_setting")]
    pub setting: String,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            setting: default_setting(),
        }
    }
}

fn default_setting() -> String {
    "app.current_tenant".to_owned()
}

/// Where a class's tenant may come from, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSource {
    /// The startup parameter `options` carrying `-c <setting>=<tenant>`
    /// (how libpq, psycopg and JDBC clients send it).
    StartupOption,
    /// The organisational unit (OU) of the verified client certificate.
    CertificateOu,
    /// A `tenant:<name>` URI in the client certificate's subjectAltName.
    CertificateSanUri,
    /// The class's `fixed:` value.
    Fixed,
}

/// `identities.classes.X.tenant`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassTenant {
    /// Tried in order; the first that yields a value wins. Sources that
    /// disagree with each other (a certificate says acme, the startup option
    /// globex) are a refusal, not a choice.
    pub sources: Vec<TenantSource>,
    /// Refuse the connection when no source yields a tenant. Default: true.
    #[serde(default = "yes")]
    pub required: bool,
    /// Acceptable tenants (exact). Empty: any value of the strict character set.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Value for the `fixed` source.
    #[serde(default)]
    pub fixed: Option<String>,
}

fn yes() -> bool {
    true
}

/// The only characters a tenant may contain: they need no quoting anywhere,
/// so no tenant string can change the meaning of the SQL pgward builds with it.
pub fn valid_tenant(t: &str) -> bool {
    (1..=63).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Setting names as PostgreSQL accepts custom ones: `prefix.name`, letters,
/// digits, underscores (compared lower-cased, as PostgreSQL folds them).
fn valid_setting(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    s.contains('.') && parts.all(ok_part) && s == s.to_ascii_lowercase()
}

pub fn validate_settings(t: &TenantSettings) -> Result<(), Problem> {
    if valid_setting(&t.setting) {
        return Ok(());
    }
    Err(problem(
        YamlPath::root().key("tenant").key("setting"),
        Target::Value,
        format!(
            "{:?} is not a custom setting name: use lower-case `prefix.name`, e.g. app.current_tenant",
            t.setting
        ),
    ))
}

pub fn validate_class(at: YamlPath, t: &ClassTenant) -> Result<(), Problem> {
    if t.sources.is_empty() {
        return Err(problem(
            at.key("sources"),
            Target::Value,
            "give at least one tenant source".into(),
        ));
    }
    for (i, v) in t.allowed.iter().enumerate() {
        if !valid_tenant(v) {
            return Err(problem(
                at.key("allowed").index(i),
                Target::Value,
                format!("{v:?} is not a valid tenant: 1-63 characters of A-Z a-z 0-9 _ - ."),
            ));
        }
    }
    match (&t.fixed, t.sources.contains(&TenantSource::Fixed)) {
        (Some(f), _) if !valid_tenant(f) => Err(problem(
            at.key("fixed"),
            Target::Value,
            format!("{f:?} is not a valid tenant: 1-63 characters of A-Z a-z 0-9 _ - ."),
        )),
        (None, true) => Err(problem(
            at.key("sources"),
            Target::Value,
            "source `fixed` needs a `fixed:` value".into(),
        )),
        (Some(_), false) => Err(problem(
            at.key("fixed"),
            Target::Key,
            "`fixed:` is set but `fixed` is not among the sources".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_charset_is_strict() {
        for ok in ["acme", "globex-2", "a.b_c", "X"] {
            assert!(valid_tenant(ok), "{ok}");
        }
        for bad in ["", "ac'me", "a b", "ä", "a;b", &"x".repeat(64)] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn setting_names_are_custom_and_lower_case() {
        assert!(valid_setting("app.current_tenant"));
        assert!(!valid_setting("search_path"));
        assert!(!valid_setting("App.Tenant"));
        assert!(!valid_setting("app.ten'ant"));
    }
}
