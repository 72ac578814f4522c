//! A bounded cache of inspection results, keyed by statement text.
//!
//! Parsing is the expensive part of judging a statement (microseconds, versus
//! well under one for the decision), and applications repeat the same texts.
//! Only the inspection is cached: it depends on the text alone. Decisions
//! depend on identity class, search_path and policy version, and are made
//! afresh every time, so no decision can leak from one session or identity to
//! another, and a policy reload takes effect on the next statement.

use std::sync::Arc;

use dashmap::DashMap;

use super::{InspectError, StatementInfo, inspect};

/// Result of inspecting one text, shared by every session that sends it.
pub type Inspection = Arc<Result<Vec<StatementInfo>, InspectError>>;

pub struct InspectCache {
    entries: DashMap<Box<str>, Inspection>,
    capacity: usize,
}

impl InspectCache {
    pub fn new(capacity: usize) -> Self {
        InspectCache {
            entries: DashMap::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// The inspection of `sql`, parsing it on a miss.
    pub fn get(&self, sql: &str) -> Inspection {
        if let Some(hit) = self.entries.get(sql) {
            return hit.clone();
        }
        let result = Arc::new(inspect(sql));
        if self.capacity > 0 {
            if self.entries.len() >= self.capacity {
                // Crude but bounded: a workload with more distinct texts than
                // the capacity (literals inlined into SQL) starts over rather
                // than growing without limit or paying for LRU bookkeeping on
                // every hit.
                self.entries.clear();
            }
            self.entries.insert(sql.into(), result.clone());
        }
        result
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity() {
        let cache = InspectCache::new(10);
        for i in 0..25 {
            let _ = cache.get(&format!("SELECT {i}"));
            assert!(cache.len() <= 10);
        }
    }

    #[test]
    fn hit_returns_the_same_inspection() {
        let cache = InspectCache::new(10);
        let a = cache.get("DELETE FROM ops.job_queue");
        let b = cache.get("DELETE FROM ops.job_queue");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
