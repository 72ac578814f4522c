//! Clients send the same statement over and over (an ORM's query, the
//! extended protocol's Parse of the unnamed statement before every
//! execution). Judging it again gives the same decision as long as nothing
//! it was decided from has changed, so a session remembers its last allowed
//! statement's draft and reuses it.
//!
//! What a decision depends on: the policy snapshot, the identity (fixed for
//! the session; its class comes from the policy), the statement's
//! inspection, and the search_path it is resolved with. The memo is keyed on
//! all of them by identity, not by value: the same `Arc` of the cached
//! inspection (texts of one shape share it; their literals cannot change the
//! inspection, see `inspect::shape`), the same `Arc` of the policy (a reload
//! installs a new one), and the path tracker's generation (bumped whenever
//! the path may have changed). Only allowed, single, stateless statements
//! are remembered; anything else is judged afresh, as is everything in
//! another session.

use std::sync::Arc;
use std::time::Instant;

use super::notes::Draft;
use crate::audit::Protocol;
use crate::inspect::cache::Inspection;
use crate::policy::Policy;

pub struct LastAllowed {
    inspection: Inspection,
    policy: Arc<Policy>,
    generation: u64,
    draft: Draft,
}

impl LastAllowed {
    pub fn new(inspection: Inspection, policy: Arc<Policy>, generation: u64, draft: Draft) -> Self {
        LastAllowed {
            inspection,
            policy,
            generation,
            draft,
        }
    }

    /// The remembered draft for this statement `text`, if it was judged from
    /// exactly these inputs.
    pub fn reuse(
        &self,
        inspection: &Inspection,
        policy: &Arc<Policy>,
        generation: u64,
        protocol: Protocol,
        text: &str,
    ) -> Option<Draft> {
        if !(Arc::ptr_eq(&self.inspection, inspection)
            && Arc::ptr_eq(&self.policy, policy)
            && self.generation == generation)
        {
            return None;
        }
        let mut draft = self.draft.clone();
        let text = text.trim();
        if &*draft.record.statement_text != text {
            // Another text of the same shape: its own literals are recorded.
            draft.record.statement_text = text.into();
        }
        draft.record.protocol = protocol;
        draft.received = Instant::now();
        Some(draft)
    }
}
