//! What every connection shares: configuration, TLS setup, the upstream, and
//! the cancel-key registry.

use std::sync::Arc;

use arc_swap::ArcSwap;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsAcceptor;

use crate::audit::Auditor;
use crate::cancel::CancelRegistry;
use crate::config::{Config, Limits};
use crate::inspect::cache::InspectCache;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::startup::tls::{self, TlsSetupError};
use crate::upstream::{Upstream, UpstreamTlsSetup};

pub struct ProxyContext {
    pub limits: Limits,
    pub tls: Option<TlsAcceptor>,
    pub upstream: Upstream,
    pub cancels: CancelRegistry,
    /// The policy in force; replaced whole on reload, read lock-free per statement.
    pub policy: ArcSwap<Policy>,
    pub inspections: InspectCache,
    /// Where every statement and connection event is recorded.
    pub audit: Auditor,
    pub metrics: Metrics,
}

/// Distinct statement texts whose inspection is kept.
const INSPECT_CACHE_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("server.tls: {0}")]
    ClientTls(TlsSetupError),
    #[error("server.upstream_tls: {0}")]
    UpstreamTls(TlsSetupError),
    #[error("server.upstream_tls.server_name: invalid name {0:?}")]
    ServerName(String),
}

impl ProxyContext {
    pub fn from_config(config: &Config, audit: Auditor) -> Result<Arc<ProxyContext>, ContextError> {
        let tls = match &config.server.tls {
            Some(files) => Some(TlsAcceptor::from(
                tls::server_config(files).map_err(ContextError::ClientTls)?,
            )),
            None => None,
        };
        let upstream_tls = match &config.server.upstream_tls {
            Some(t) => {
                let name = t.server_name.clone().unwrap_or_else(|| {
                    let addr = &config.server.upstream;
                    addr.rsplit_once(':')
                        .map_or(addr.as_str(), |(h, _)| h)
                        .to_string()
                });
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| ContextError::ServerName(name))?;
                Some(UpstreamTlsSetup {
                    config: tls::upstream_config(t).map_err(ContextError::UpstreamTls)?,
                    server_name,
                })
            }
            None => None,
        };
        Ok(Arc::new(ProxyContext {
            limits: config.limits.clone(),
            tls,
            upstream: Upstream {
                addr: config.server.upstream.clone(),
                tls: upstream_tls,
                connect_timeout: config.limits.upstream_connect_timeout(),
            },
            cancels: CancelRegistry::default(),
            policy: ArcSwap::from_pointee(Policy::from_config(config)),
            inspections: InspectCache::new(INSPECT_CACHE_ENTRIES),
            audit,
            metrics: Metrics::default(),
        }))
    }
}
