//! Anti-rollback memory: the highest sequence number seen per GUID and per name, bounded.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::record::RecordError;

/// Highest sequence seen per key; at most `capacity` keys (the oldest-inserted is forgotten).
#[derive(Debug)]
pub(crate) struct SeenSeqs<K> {
    highest: HashMap<K, u64>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> SeenSeqs<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        SeenSeqs {
            highest: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<u64> {
        self.highest.get(key).copied()
    }

    /// Accepts `seq` if it is not lower than the highest seen for `key`, and remembers it.
    pub(crate) fn observe(&mut self, key: &K, seq: u64) -> Result<(), RecordError> {
        match self.highest.get_mut(key) {
            Some(seen) if seq < *seen => Err(RecordError::Rollback {
                seen: *seen,
                got: seq,
            }),
            Some(seen) => {
                *seen = seq;
                Ok(())
            }
            None => {
                if self.highest.len() >= self.capacity
                    && let Some(old) = self.order.pop_front()
                {
                    self.highest.remove(&old);
                }
                self.highest.insert(key.clone(), seq);
                self.order.push_back(key.clone());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_is_refused_and_memory_is_bounded() {
        let mut s = SeenSeqs::new(2);
        s.observe(&1, 10).unwrap();
        s.observe(&1, 10).unwrap();
        s.observe(&1, 11).unwrap();
        assert_eq!(
            s.observe(&1, 9),
            Err(RecordError::Rollback { seen: 11, got: 9 })
        );
        s.observe(&2, 5).unwrap();
        s.observe(&3, 5).unwrap();
        assert_eq!(s.get(&1), None);
        assert_eq!(s.get(&2), Some(5));
        assert_eq!(s.highest.len(), 2);
    }
}
