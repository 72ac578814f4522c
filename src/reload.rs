//! Policy hot reload: on SIGHUP, or when policy.yaml changes on disk, the
//! file is loaded and validated in full, then swapped in atomically. An
//! invalid file is rejected with its error logged and the old policy stays in
//! force, so a typo can never leave pgward unprotected or half-configured.
//!
//! Only the policy (mode, identities, protected, functions) is reloaded:
//! listen address, upstream, TLS and limits take effect at restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::audit::PolicyReloadRecord;
use crate::config::Config;
use crate::context::ProxyContext;
use crate::policy::Policy;

/// How often the file's modification time is checked.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches for reload triggers until `shutdown`.
pub async fn watch(path: PathBuf, ctx: Arc<ProxyContext>, shutdown: CancellationToken) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGHUP handler, reload on SIGHUP disabled: {e}");
            return;
        }
    };
    let mut last_seen = modified(&path);
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received, reloading {}", path.display());
                last_seen = modified(&path);
                let result = reload(&path, &ctx);
                audit_reload(&ctx, &path, "SIGHUP", result).await;
            }
            _ = tick.tick() => {
                let now = modified(&path);
                if now != last_seen {
                    last_seen = now;
                    tracing::info!("{} changed, reloading", path.display());
                    let result = reload(&path, &ctx);
                    audit_reload(&ctx, &path, "file change", result).await;
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads, validates and installs the policy; the error if it was rejected.
pub fn reload(path: &Path, ctx: &ProxyContext) -> Result<(), String> {
    match Config::load(path) {
        Ok(config) => {
            ctx.policy.store(Arc::new(Policy::from_config(&config)));
            ctx.metrics
                .policy_reloads_ok
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("policy reloaded from {}", path.display());
            Ok(())
        }
        Err(e) => {
            ctx.metrics
                .policy_reloads_failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("policy reload rejected, the previous policy stays in force: {e}");
            Err(e.to_string())
        }
    }
}

/// Records a reload attempt, with the hash of the file when it took effect.
async fn audit_reload(ctx: &ProxyContext, path: &Path, source: &str, result: Result<(), String>) {
    use sha2::{Digest, Sha256};
    let policy_sha256 = match &result {
        Ok(()) => std::fs::read(path)
            .ok()
            .map(|b| hex::encode(Sha256::digest(b))),
        Err(_) => None,
    };
    let record = PolicyReloadRecord {
        ok: result.is_ok(),
        error: result.err(),
        source: Some(source.to_string()),
        policy_sha256,
    };
    if let Err(e) = ctx.audit.record(record).await {
        tracing::error!("policy reload not audited: {e}");
    }
}
