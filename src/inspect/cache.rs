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

use super::shape::{self, Shape, ShapeState};
use super::{InspectError, StatementInfo, inspect};

/// Result of inspecting one text, shared by every session that sends it.
pub type Inspection = Arc<Result<Vec<StatementInfo>, InspectError>>;

pub struct InspectCache {
    /// By exact text.
    exact: DashMap<Box<str>, Inspection>,
    /// By [`Shape::key`]: texts that differ only in integer literals.
    shapes: DashMap<Box<str>, ShapeEntry>,
    capacity: usize,
}

/// Invariant inspections keep statement locations as offsets in the key.
type ShapeEntry = ShapeState<Inspection>;

impl InspectCache {
    pub fn new(capacity: usize) -> Self {
        InspectCache {
            exact: DashMap::with_capacity(capacity.min(4096)),
            shapes: DashMap::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// The inspection of `sql`, parsing it on a miss.
    pub fn get(&self, sql: &str) -> Inspection {
        if let Some(hit) = self.exact.get(sql) {
            return hit.clone();
        }
        if self.capacity > 0
            && let Some(shape) = Shape::of(sql)
            && let Some(found) = self.by_shape(sql, &shape)
        {
            return found;
        }
        let result = Arc::new(inspect(sql));
        bounded_insert(&self.exact, self.capacity, sql, result.clone());
        result
    }

    /// The inspection of `sql` through its shape, proving the shape on its
    /// second sight; `None` when this text must be inspected on its own.
    fn by_shape(&self, sql: &str, shape: &Shape) -> Option<Inspection> {
        // (The map's read guard ends with this statement: the inserts below
        // need the shard's write lock.)
        let seen_once = match self.shapes.get(shape.key.as_str()).as_deref() {
            Some(ShapeState::Invariant(keyed)) => return for_text(keyed, shape),
            Some(ShapeState::Varies) => return None,
            Some(ShapeState::SeenOnce) => true,
            None => false,
        };
        if !seen_once {
            bounded_insert(
                &self.shapes,
                self.capacity,
                &shape.key,
                ShapeState::SeenOnce,
            );
            return None;
        }
        // Second sight: inspect the text and its probe (every literal
        // changed); identical results prove the literals' values do not matter.
        let inspected = inspect(sql);
        let keyed = match &inspected {
            Ok(infos) if inspect(&shape::probe(sql, shape)).as_ref() == Ok(infos) => {
                relocated(infos, |at| shape.to_key_offset(at)).map(|k| Arc::new(Ok(k)))
            }
            _ => None,
        };
        match keyed {
            Some(keyed) => {
                let found = for_text(&keyed, shape);
                bounded_insert(
                    &self.shapes,
                    self.capacity,
                    &shape.key,
                    ShapeState::Invariant(keyed),
                );
                found
            }
            None => {
                bounded_insert(&self.shapes, self.capacity, &shape.key, ShapeState::Varies);
                let result = Arc::new(inspected);
                bounded_insert(&self.exact, self.capacity, sql, result.clone());
                Some(result)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.shapes.is_empty()
    }
}

/// A shape's inspection (`keyed`: locations in the key) for one of its texts.
fn for_text(keyed: &Inspection, shape: &Shape) -> Option<Inspection> {
    let Ok(infos) = keyed.as_ref() else {
        return None;
    };
    // Usually every statement starts before the first literal (one
    // statement: at 0), and the shared result is this text's too.
    if infos
        .iter()
        .all(|i| shape.from_key_offset(i.location) == i.location)
    {
        return Some(keyed.clone());
    }
    relocated(infos, |at| Some(shape.from_key_offset(at))).map(|r| Arc::new(Ok(r)))
}

/// `infos` with every statement location mapped by `map` (`None` if any
/// location cannot be mapped).
fn relocated(
    infos: &[StatementInfo],
    map: impl Fn(usize) -> Option<usize>,
) -> Option<Vec<StatementInfo>> {
    infos
        .iter()
        .map(|info| {
            let mut info = info.clone();
            info.location = map(info.location)?;
            Some(info)
        })
        .collect()
}

fn bounded_insert<V>(map: &DashMap<Box<str>, V>, capacity: usize, key: &str, value: V) {
    if capacity == 0 {
        return;
    }
    if map.len() >= capacity {
        // Crude but bounded: a workload with more distinct texts than the
        // capacity starts over rather than growing without limit or paying
        // for LRU bookkeeping on every hit.
        map.clear();
    }
    map.insert(key.into(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity() {
        let cache = InspectCache::new(10);
        for i in 0..25 {
            let _ = cache.get(&format!("SELECT {i}.5"));
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

    #[test]
    fn texts_differing_in_integer_literals_share_one_proven_inspection() {
        let cache = InspectCache::new(10);
        let a = cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;");
        let b = cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 7;");
        let c = cache.get("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;");
        assert_eq!(a, b);
        assert!(
            Arc::ptr_eq(&b, &c),
            "proven at the second text, shared from then on"
        );
        assert_eq!(
            cache.exact.len(),
            1,
            "only the first text is cached by itself"
        );
    }

    #[test]
    fn a_shape_hit_is_relocated_to_the_text() {
        let cache = InspectCache::new(10);
        let first = cache.get("SELECT 1; DELETE FROM ops.job_queue WHERE id = 2");
        let _ = cache.get("SELECT 3; DELETE FROM ops.job_queue WHERE id = 4");
        let text = "SELECT 123456; DELETE FROM ops.job_queue WHERE id = 99";
        let hit = cache.get(text);
        assert_eq!(*hit, inspect(text));
        let second_at = |i: &Inspection| i.as_ref().as_ref().unwrap()[1].location;
        assert_eq!(second_at(&hit), second_at(&first) + 5);
    }

    #[test]
    fn values_that_matter_keep_texts_apart() {
        let cache = InspectCache::new(10);
        for text in [
            "SET search_path = 1",
            "SET search_path = 2",
            "SELEC 1",
            "SELEC 2",
        ] {
            assert_eq!(*cache.get(text), inspect(text), "{text}");
        }
    }

    /// Every statement of the enforcement corpus, and a variant with other
    /// integer literals seen after it, gets exactly what a fresh parse gives.
    #[test]
    fn shape_hits_equal_fresh_inspections_over_the_corpus() {
        let corpus = include_str!("../../tests/corpus/worker.txt");
        let mut statements = Vec::new();
        let mut current: Option<String> = None;
        for line in corpus.lines() {
            if line.starts_with("===") {
                statements.extend(current.take());
                current = Some(String::new());
            } else if let Some(stmt) = current.as_mut()
                && !line.starts_with('#')
                && !line.starts_with('@')
            {
                stmt.push_str(line);
                stmt.push('\n');
            }
        }
        statements.extend(current);
        let cache = InspectCache::new(100_000);
        let mut shaped = 0;
        for sql in &statements {
            assert_eq!(*cache.get(sql), inspect(sql), "{sql}");
            let Some(shape) = Shape::of(sql) else {
                continue;
            };
            shaped += 1;
            // Longer and shorter literals: every location after them moves.
            let mut variant = String::new();
            let mut at = 0;
            for (n, lit) in shape.literals.iter().enumerate() {
                variant.push_str(&sql[at..lit.start]);
                variant.push_str(if n % 2 == 0 { "98765" } else { "4" });
                at = lit.end;
            }
            variant.push_str(&sql[at..]);
            assert_eq!(*cache.get(&variant), inspect(&variant), "{variant}");
        }
        assert!(
            shaped > 20,
            "the corpus has texts with integer literals ({shaped})"
        );
    }
}
