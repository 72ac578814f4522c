//! Counters for operators: what pgward is doing, cheap enough to bump on the
//! hot path (relaxed atomics; per-label maps only on rarer events such as
//! refusals). Rendered in Prometheus text format by [`crate::admin`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::audit::AuditDecision;

/// Upper bounds (microseconds) of the statement latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 1_000_000, 10_000_000,
];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections open now (startup included).
    pub client_connections: AtomicI64,
    /// Sessions relayed now (each holds one server connection).
    pub server_connections: AtomicI64,
    pub connections_accepted: AtomicU64,
    /// Connections refused, by reason (`max_client_connections`,
    /// `class_limit`, `startup_timeout`, `tls_handshake`, `startup`, ...).
    pub connections_refused: DashMap<&'static str, AtomicU64>,
    pub tls_handshake_failures: AtomicU64,
    /// Statements by class, then by decision (indexed by `AuditDecision as usize`).
    pub statements: DashMap<String, [AtomicU64; 3]>,
    /// Refusals by rule id.
    pub denials_by_rule: DashMap<String, AtomicU64>,
    /// Statement latency histogram: counts per bucket of [`LATENCY_BUCKETS_US`],
    /// plus one overflow bucket.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    pub latency_sum_us: AtomicU64,
    pub latency_count: AtomicU64,
    pub policy_reloads_ok: AtomicU64,
    pub policy_reloads_failed: AtomicU64,
    pub idle_timeouts: AtomicU64,
    /// Sessions open now, per identity class (also enforces class limits).
    pub sessions_by_class: DashMap<String, AtomicI64>,
}

impl Metrics {
    pub fn refused(&self, reason: &'static str) {
        bump(&self.connections_refused, reason);
    }

    /// Records one statement's decision and (for executed ones) its latency.
    pub fn statement(
        &self,
        class: &str,
        decision: AuditDecision,
        rule: Option<&str>,
        latency_us: u64,
    ) {
        let index = decision as usize;
        // Looked up by &str: counting a statement allocates nothing once its
        // class has been seen.
        match self.statements.get(class) {
            Some(counts) => {
                counts[index].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.statements.entry(class.to_string()).or_default()[index]
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if decision == AuditDecision::Deny
            && let Some(rule) = rule
        {
            bump(&self.denials_by_rule, rule.to_string());
        }
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| latency_us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(latency_us, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>, key: K) {
    map.entry(key)
        .or_insert_with(|| AtomicU64::new(0))
        .fetch_add(1, Ordering::Relaxed);
}

/// Holds one unit of a gauge while alive.
pub struct GaugeGuard<'a>(&'a AtomicI64);

impl<'a> GaugeGuard<'a> {
    pub fn new(gauge: &'a AtomicI64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One session counted against its class's `max_connections`; gives the
/// unit back when dropped. (It holds no map guard: a DashMap reference kept
/// across awaits would lock its shard.)
pub struct ClassSlot {
    ctx: std::sync::Arc<crate::context::ProxyContext>,
    class: String,
}

impl ClassSlot {
    /// `None` when the class already has `limit` sessions.
    pub fn take(
        ctx: &std::sync::Arc<crate::context::ProxyContext>,
        class: &str,
        limit: Option<usize>,
    ) -> Option<ClassSlot> {
        let now = ctx
            .metrics
            .sessions_by_class
            .entry(class.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let slot = ClassSlot {
            ctx: ctx.clone(),
            class: class.to_string(),
        };
        if limit.is_some_and(|l| usize::try_from(now).unwrap_or(0) > l) {
            return None; // dropping `slot` gives the unit back
        }
        Some(slot)
    }
}

impl Drop for ClassSlot {
    fn drop(&mut self) {
        if let Some(counter) = self.ctx.metrics.sessions_by_class.get(&self.class) {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
