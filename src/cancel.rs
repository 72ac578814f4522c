//! Cancel keys. Clients get a key issued by pgward, never the server's: a
//! client must only be able to cancel its own session, and the server's key
//! (pid + secret) stays inside pgward. A CancelRequest arriving on a new
//! connection is looked up here and forwarded with the real key.

use std::sync::Arc;

use dashmap::DashMap;

/// Where a cancel for one session must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKey {
    pub pid: i32,
    pub secret: i32,
}

/// Live sessions' cancel keys, shared by all connections.
#[derive(Debug, Default, Clone)]
pub struct CancelRegistry {
    keys: Arc<DashMap<i32, (i32, BackendKey)>>,
}

impl CancelRegistry {
    /// Issues a fresh client-facing key for `backend`. The returned guard
    /// removes it when the session ends.
    pub fn register(&self, backend: BackendKey) -> CancelKeyGuard {
        loop {
            // Positive pids, as PostgreSQL's are: some clients print them.
            let pid = rand::random::<i32>() & i32::MAX;
            let secret = rand::random::<i32>();
            if let dashmap::Entry::Vacant(slot) = self.keys.entry(pid) {
                slot.insert((secret, backend));
                return CancelKeyGuard {
                    registry: self.clone(),
                    issued: BackendKey { pid, secret },
                };
            }
        }
    }

    /// The server key for a client-presented key, if it matches a live session.
    /// The secret is compared too: a guessed pid alone cancels nothing.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<BackendKey> {
        let entry = self.keys.get(&pid)?;
        let (expected, backend) = *entry;
        (expected == secret).then_some(backend)
    }
}

/// The key pgward issued to one client; unregisters itself on drop.
#[derive(Debug)]
pub struct CancelKeyGuard {
    registry: CancelRegistry,
    pub issued: BackendKey,
}

impl Drop for CancelKeyGuard {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.issued.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_own_backend_only() {
        let reg = CancelRegistry::default();
        let a = reg.register(BackendKey { pid: 1, secret: 11 });
        let b = reg.register(BackendKey { pid: 2, secret: 22 });
        assert_eq!(reg.lookup(a.issued.pid, a.issued.secret).unwrap().pid, 1);
        assert_eq!(reg.lookup(b.issued.pid, b.issued.secret).unwrap().pid, 2);
        assert_eq!(
            reg.lookup(a.issued.pid, a.issued.secret.wrapping_add(1)),
            None
        );
        let (pid, secret) = (a.issued.pid, a.issued.secret);
        drop(a);
        assert_eq!(reg.lookup(pid, secret), None);
    }
}
