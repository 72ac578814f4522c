//! What a verified client certificate says: the names pgward can take an
//! identity from, the tenant fields, and a fingerprint for the audit trail.
//! rustls has already verified the chain against `server.tls.client_ca`.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::CertificateIdentity;
use crate::tenant::source::CertificateTenant;

/// URI scheme of a subjectAltName that names the tenant: `tenant:acme`.
const TENANT_URI_PREFIX: &str = "tenant:";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject as a whole, e.g. `CN=dragonfly_app, OU=acme`.
    pub subject: String,
    pub common_name: Option<String>,
    pub organizational_units: Vec<String>,
    pub dns_names: Vec<String>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

impl ClientCertificate {
    /// Reads the end-entity certificate; `None` if it cannot be parsed (it
    /// was verified, so this does not happen with a sane CA).
    pub fn from_der(der: &[u8]) -> Option<ClientCertificate> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let text =
            |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok().map(str::to_string);
        let mut out = ClientCertificate {
            subject: subject.to_string(),
            common_name: subject.iter_common_name().find_map(text),
            organizational_units: subject
                .iter_organizational_unit()
                .filter_map(text)
                .collect(),
            fingerprint: hex::encode(Sha256::digest(der)),
            ..Default::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                    GeneralName::URI(u) => out.uris.push(u.to_string()),
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// The identity this certificate names, per `identities.certificate_identity`.
    pub fn identity(&self, kind: CertificateIdentity) -> Option<&str> {
        match kind {
            CertificateIdentity::CommonName => self.common_name.as_deref(),
            CertificateIdentity::SanDns => self.dns_names.first().map(String::as_str),
            CertificateIdentity::SanEmail => self.emails.first().map(String::as_str),
        }
    }

    /// The tenant fields, for `tenant::source`.
    pub fn tenant(&self) -> CertificateTenant {
        CertificateTenant {
            ous: self.organizational_units.clone(),
            san_tenants: self
                .uris
                .iter()
                .filter_map(|u| u.strip_prefix(TENANT_URI_PREFIX))
                .map(str::to_string)
                .collect(),
        }
    }
}
