//! Where a session's tenant comes from: the sources its identity class
//! lists, tried in order, checked against each other and against the
//! class's allowed values. Decided once, at startup.

use crate::config::tenant::{ClassTenant, TenantSource, valid_tenant};
use crate::protocol::reply::PgError;
use crate::protocol::startup::StartupMessage;
use crate::startup::options;

/// What a verified client certificate says about the tenant.
#[derive(Debug, Clone, Default)]
pub struct CertificateTenant {
    /// Organisational units of the subject.
    pub ous: Vec<String>,
    /// Values of `tenant:<name>` URIs in the subjectAltName.
    pub san_tenants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error(
        "pgward: {identity} (class {class}) must name its tenant: connect with options '-c {setting}=<tenant>' or a client certificate that carries it"
    )]
    Missing {
        identity: String,
        class: String,
        setting: String,
    },
    #[error("pgward: invalid tenant {0:?}: use 1-63 characters of A-Z a-z 0-9 _ - .")]
    Invalid(String),
    #[error("pgward: tenant {tenant:?} is not allowed for class {class}")]
    NotAllowed { tenant: String, class: String },
    #[error(
        "pgward: conflicting tenants {0:?} and {1:?} (certificate and startup option must agree)"
    )]
    Conflict(String, String),
}

impl TenantError {
    /// How the client learns of it: FATAL invalid_authorization_specification.
    pub fn to_pg_error(&self) -> PgError {
        PgError::fatal("28000", self.to_string())
    }
}

/// Resolves the tenant of a session whose class has a tenant spec, and takes
/// the tenant setting out of the startup `options` (pgward sets it per
/// transaction; it must not also become a session default on the server).
pub fn resolve(
    spec: &ClassTenant,
    setting: &str,
    identity: &str,
    class: &str,
    startup: &mut StartupMessage,
    certificate: Option<&CertificateTenant>,
) -> Result<Option<String>, TenantError> {
    let from_options = take_from_options(startup, setting);
    let mut candidates: Vec<String> = Vec::new();
    for source in &spec.sources {
        let values: Vec<String> = match source {
            TenantSource::StartupOption => from_options.clone(),
            TenantSource::CertificateOu => certificate.map(|c| c.ous.clone()).unwrap_or_default(),
            TenantSource::CertificateSanUri => certificate
                .map(|c| c.san_tenants.clone())
                .unwrap_or_default(),
            TenantSource::Fixed => spec.fixed.iter().cloned().collect(),
        };
        candidates.extend(values);
    }
    // Values given but not used as a source still must not disagree.
    candidates.extend(from_options);
    let Some(tenant) = candidates.first().cloned() else {
        if spec.required {
            return Err(TenantError::Missing {
                identity: identity.to_string(),
                class: class.to_string(),
                setting: setting.to_string(),
            });
        }
        return Ok(None);
    };
    if let Some(other) = candidates.iter().find(|c| **c != tenant) {
        return Err(TenantError::Conflict(tenant, other.clone()));
    }
    if !valid_tenant(&tenant) {
        return Err(TenantError::Invalid(tenant));
    }
    if !spec.allowed.is_empty() && !spec.allowed.contains(&tenant) {
        return Err(TenantError::NotAllowed {
            tenant,
            class: class.to_string(),
        });
    }
    Ok(Some(tenant))
}

/// Takes the tenant setting out of the startup packet: from `options`, and
/// as a parameter of its own (which PostgreSQL would also apply).
fn take_from_options(startup: &mut StartupMessage, setting: &str) -> Vec<String> {
    let mut values = Vec::new();
    if let Some(pos) = startup.params.iter().position(|(k, _)| k == "options") {
        let (found, rest) = options::take_setting(&startup.params[pos].1, setting);
        values = found;
        match rest {
            Some(rest) => startup.params[pos].1 = rest,
            None => {
                startup.params.remove(pos);
            }
        }
    }
    startup.params.retain(|(k, v)| {
        if k.eq_ignore_ascii_case(setting) {
            values.push(v.clone());
            false
        } else {
            true
        }
    });
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sources: &[TenantSource], allowed: &[&str]) -> ClassTenant {
        ClassTenant {
            sources: sources.to_vec(),
            required: true,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            fixed: None,
        }
    }

    fn startup(options: Option<&str>) -> StartupMessage {
        let mut params = vec![("user".to_string(), "dragonfly_app".to_string())];
        if let Some(o) = options {
            params.push(("options".to_string(), o.to_string()));
        }
        StartupMessage { params }
    }

    fn run(
        spec: &ClassTenant,
        s: &mut StartupMessage,
        cert: Option<&CertificateTenant>,
    ) -> Result<Option<String>, TenantError> {
        resolve(
            spec,
            "app.current_tenant",
            "dragonfly_app",
            "worker",
            s,
            cert,
        )
    }

    #[test]
    fn startup_option_is_taken_and_consumed() {
        let mut s = startup(Some("-c app.current_tenant=acme -c statement_timeout=5"));
        let t = run(&spec(&[TenantSource::StartupOption], &[]), &mut s, None).unwrap();
        assert_eq!(t.as_deref(), Some("acme"));
        assert_eq!(s.get("options"), Some("-c statement_timeout=5"));
        let mut s = startup(Some("-c app.current_tenant=acme"));
        run(&spec(&[TenantSource::StartupOption], &[]), &mut s, None).unwrap();
        assert_eq!(s.get("options"), None);
    }

    #[test]
    fn missing_invalid_disallowed_and_conflicting_tenants_are_refused() {
        let opt = spec(&[TenantSource::StartupOption], &["acme", "globex"]);
        assert!(matches!(
            run(&opt, &mut startup(None), None),
            Err(TenantError::Missing { .. })
        ));
        assert!(matches!(
            run(&opt, &mut startup(Some("-c app.current_tenant=x'y")), None),
            Err(TenantError::Conflict(..) | TenantError::Invalid(_))
        ));
        assert!(matches!(
            run(
                &opt,
                &mut startup(Some("-c app.current_tenant=initech")),
                None
            ),
            Err(TenantError::NotAllowed { .. })
        ));
        let cert = CertificateTenant {
            ous: vec!["acme".into()],
            san_tenants: vec![],
        };
        let both = spec(
            &[TenantSource::CertificateOu, TenantSource::StartupOption],
            &[],
        );
        assert!(matches!(
            run(
                &both,
                &mut startup(Some("-c app.current_tenant=globex")),
                Some(&cert)
            ),
            Err(TenantError::Conflict(..))
        ));
        assert_eq!(
            run(
                &both,
                &mut startup(Some("-c app.current_tenant=acme")),
                Some(&cert)
            )
            .unwrap()
            .as_deref(),
            Some("acme")
        );
        let err = run(&opt, &mut startup(None), None)
            .unwrap_err()
            .to_pg_error();
        assert_eq!(err.sqlstate, "28000");
        assert!(err.message.contains("-c app.current_tenant=<tenant>"));
    }

    #[test]
    fn fixed_tenant_needs_nothing_from_the_client() {
        let mut fixed = spec(&[TenantSource::Fixed], &[]);
        fixed.fixed = Some("acme".into());
        assert_eq!(
            run(&fixed, &mut startup(None), None).unwrap().as_deref(),
            Some("acme")
        );
    }
}
