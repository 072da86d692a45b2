//! A concurrent hash map split into independently locked shards.
//!
//! Session tables are read on every relayed frame from many worker threads and written
//! only when sessions come and go; sharding keeps readers of different sessions from
//! contending on one lock. Closures run under the shard lock, so they must not block.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::RwLock;

const SHARDS: usize = 64;

pub struct ShardedMap<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    /// `key` may be any borrowed form of `K` (`&str` for a `String` key: no copy made to
    /// look one up).
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V>> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// Runs `f` on the value under a read lock.
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        f(guard.get(key))
    }

    /// Runs `f` on the value for `key` under the write lock, inserting `default()` first if
    /// there is none (`f` is told whether it did).
    pub fn with_mut_or_insert<R>(&self, key: K, default: impl FnOnce() -> V, f: impl FnOnce(&mut V, bool) -> R) -> R {
        let mut guard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        let mut inserted = false;
        let v = guard.entry(key).or_insert_with(|| {
            inserted = true;
            default()
        });
        f(v, inserted)
    }

    /// Inserts, returning the previous value.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.shard(&key).write().unwrap_or_else(|p| p.into_inner()).insert(key, value)
    }

    /// Removes the value if `pred` holds for it; returns it.
    pub fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut guard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if guard.get(key).is_some_and(pred) { guard.remove(key) } else { None }
    }

    /// Removes the value and runs `f` on it while the shard is still locked, so that no
    /// other thread can act on `key` in between.
    pub fn remove_then<R>(&self, key: &K, f: impl FnOnce(Option<V>) -> R) -> R {
        let mut guard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        f(guard.remove(key))
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner()).remove(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.with(key, |v| v.is_some())
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every entry, shard by shard (not a consistent snapshot).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for shard in self.shards.iter() {
            for (k, v) in shard.read().unwrap_or_else(|p| p.into_inner()).iter() {
                f(k, v);
            }
        }
    }

    /// Removes every entry for which `f` returns false.
    pub fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).retain(|k, v| f(k, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_operations() {
        let m = ShardedMap::new();
        assert!(m.insert(1u32, "a").is_none());
        assert_eq!(m.insert(1, "b"), Some("a"));
        assert!(m.with(&1, |v| v == Some(&"b")));
        assert!(m.remove_if(&1, |v| *v == "a").is_none());
        assert_eq!(m.remove_if(&1, |v| *v == "b"), Some("b"));
        for i in 0..1000 {
            m.insert(i, "x");
        }
        assert_eq!(m.len(), 1000);
        m.retain(|k, _| k % 2 == 0);
        assert_eq!(m.len(), 500);
    }
}
