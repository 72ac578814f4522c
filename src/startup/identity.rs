//! Who a session is: the startup user, and the verified client certificate
//! when one was presented. The certificate, when it names an identity,
//! takes precedence for classification and in every message and log.

use crate::policy::{ClassId, Policy};

use super::client_cert::ClientCertificate;

#[derive(Debug, Clone)]
pub struct Identity {
    /// The `user` of the startup packet, as the client sent it.
    pub user: String,
    pub certificate: Option<ClientCertificate>,
    /// The certificate's identity field (per `identities.certificate_identity`).
    pub certificate_name: Option<String>,
}

impl Identity {
    pub fn new(user: String, certificate: Option<ClientCertificate>, policy: &Policy) -> Self {
        let certificate_name = certificate
            .as_ref()
            .and_then(|c| c.identity(policy.certificate_identity()))
            .map(str::to_string);
        Identity {
            user,
            certificate,
            certificate_name,
        }
    }

    /// The name refusals and logs use.
    pub fn name(&self) -> &str {
        self.certificate_name.as_deref().unwrap_or(&self.user)
    }

    pub fn class(&self, policy: &Policy) -> ClassId {
        policy.class_for(&self.user, self.certificate_name.as_deref())
    }
}
