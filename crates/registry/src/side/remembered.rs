//! What a process learned about registries and keeps for its later copies: facts that only
//! save requests when true, and cost nothing but a request when they stop being true.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

/// A process-wide set of keys, bounded: past `max` nothing more is remembered (a process
/// talks to a handful of hosts and repositories; the bound guards memory only).
pub(crate) struct Remembered {
    keys: Mutex<BTreeSet<String>>,
    max: usize,
}

impl Remembered {
    pub(crate) const fn new(max: usize) -> Self {
        Self {
            keys: Mutex::new(BTreeSet::new()),
            max,
        }
    }

    pub(crate) fn insert(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() < self.max && !keys.contains(key) {
            keys.insert(key.to_owned());
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_up_to_the_bound() {
        let remembered = Remembered::new(2);
        remembered.insert("a");
        remembered.insert("a");
        remembered.insert("b");
        remembered.insert("c");
        assert!(remembered.contains("a") && remembered.contains("b"));
        assert!(!remembered.contains("c"));
    }
}
