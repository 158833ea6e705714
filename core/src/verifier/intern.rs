//! One shared copy of equal values: what keeps the index small when thousands of keys are
//! stamped from one template, or differ in one grant of several.
//!
//! Values are found by a hash of their content and confirmed by comparing them, so the table
//! holds a hash and a weak pointer per value and no second copy. Weak pointers let a value go
//! when the last key using it does; the table forgets such values whenever it has doubled.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, Weak};

/// Fewest entries before the table looks for values nobody uses any more.
const FIRST_PURGE: usize = 64;

/// A table of shared values of type `T`.
pub struct Interner<T> {
    table: Mutex<Table<T>>,
    hasher: RandomState,
}

struct Table<T> {
    /// Content hash → the value. Two live values with one hash (a 64-bit collision) keep the
    /// first in the table; the second is simply not shared.
    shared: HashMap<u64, Weak<T>>,
    /// Size at which dead entries are dropped next.
    purge_at: usize,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            table: Mutex::new(Table {
                shared: HashMap::new(),
                purge_at: FIRST_PURGE,
            }),
            hasher: RandomState::new(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The shared copy of `value`: an earlier equal value still in use, else `value`, now shared.
    pub fn share(&self, value: Arc<T>) -> Arc<T> {
        let hash = self.hasher.hash_one(&*value);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.shared.len() >= table.purge_at {
            table.shared.retain(|_, value| value.strong_count() > 0);
            table.purge_at = (table.shared.len() * 2).max(FIRST_PURGE);
        }
        let slot = table.shared.entry(hash).or_default();
        match slot.upgrade() {
            Some(earlier) if earlier == value => earlier,
            Some(_) => value,
            None => {
                *slot = Arc::downgrade(&value);
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy_while_in_use() {
        let interner = Interner::default();
        let first = interner.share(Arc::new(String::from("content.read")));
        let second = interner.share(Arc::new(String::from("content.read")));
        assert!(Arc::ptr_eq(&first, &second));
        let other = interner.share(Arc::new(String::from("content.update")));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(*other, "content.update");

        // Once nobody holds it, the next equal value becomes the shared copy.
        drop((first, second));
        let fresh = Arc::new(String::from("content.read"));
        assert!(Arc::ptr_eq(&interner.share(fresh.clone()), &fresh));
    }

    #[test]
    fn forgets_values_nobody_uses() {
        let interner = Interner::default();
        let kept: Vec<Arc<u32>> = (0..10).map(|i| interner.share(Arc::new(i))).collect();
        for i in 10..1_000 {
            drop(interner.share(Arc::new(i)));
        }
        let size = interner.table.lock().unwrap().shared.len();
        assert!(size < 2 * FIRST_PURGE + kept.len(), "{size} entries");
        for (i, value) in kept.iter().enumerate() {
            assert!(Arc::ptr_eq(value, &interner.share(Arc::new(i as u32))));
        }
    }
}
