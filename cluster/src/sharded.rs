//! A concurrent hash map split into independently locked shards.
//!
//! Session tables are read on every relayed frame from many worker threads and written
//! only when sessions come and go; sharding keeps readers of different sessions from
//! contending on one lock. Closures run under the shard lock, so they must not block.
//!
//! A key is hashed once per call: the same 64-bit hash picks the shard (from bits that
//! the table inside the shard does not use) and the slot within it. With a `HashMap` per
//! shard every lookup hashed its key twice with SipHash, about 2% of a relayed frame's
//! CPU (docs/benchmarks.md, "Where a relayed frame's CPU goes"). The hasher is foldhash,
//! seeded per map at random; the keys are session ids that a peer cannot choose freely
//! (a device or VES must authenticate as one), so flooding one slot needs accounts.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::RwLock;

use hashbrown::DefaultHashBuilder;
use hashbrown::hash_table::{Entry, HashTable};

const SHARDS: usize = 64;

/// The shard comes from bits 48..54 of the hash: a shard's table takes its slots from the
/// low bits (as many as it has slots, far fewer than 48) and its tags from the top seven,
/// so every key of a shard still spreads over the shard's whole table.
const SHARD_SHIFT: u32 = 48;

/// One shard: its entries, under its own lock.
type Shard<K, V> = RwLock<HashTable<(K, V)>>;

pub struct ShardedMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: DefaultHashBuilder,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The key's hash and its shard. `key` may be any borrowed form of `K` (`&str` for a
    /// `String` key: no copy made to look one up); `Borrow` promises that it hashes alike.
    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &Shard<K, V>) {
        let hash = self.hasher.hash_one(key);
        // Masked to SHARDS - 1 first: the value is below 64 on every target.
        let shard = ((hash >> SHARD_SHIFT) & (SHARDS as u64 - 1)) as usize;
        (hash, &self.shards[shard])
    }

    /// The hash of a stored entry, for the table when it grows.
    fn rehash(&self) -> impl Fn(&(K, V)) -> u64 + '_ {
        |(k, _)| self.hasher.hash_one(k)
    }

    /// Runs `f` on the value under a read lock.
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let guard = shard.read().unwrap_or_else(|p| p.into_inner());
        f(guard.find(hash, |(k, _)| k.borrow() == key).map(|(_, v)| v))
    }

    /// Runs `f` on the value (if any) under the write lock.
    pub fn with_mut<R>(&self, key: &K, f: impl FnOnce(Option<&mut V>) -> R) -> R {
        let (hash, shard) = self.locate(key);
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        f(guard.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v))
    }

    /// Runs `f` on the value for `key` under the write lock, inserting `default()` first if
    /// there is none (`f` is told whether it did).
    pub fn with_mut_or_insert<R>(&self, key: K, default: impl FnOnce() -> V, f: impl FnOnce(&mut V, bool) -> R) -> R {
        let (hash, shard) = self.locate(&key);
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        match guard.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(mut e) => f(&mut e.get_mut().1, false),
            Entry::Vacant(e) => f(&mut e.insert((key, default())).into_mut().1, true),
        }
    }

    /// Inserts, returning the previous value.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let (hash, shard) = self.locate(&key);
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        match guard.entry(hash, |(k, _)| *k == key, self.rehash()) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((key, value));
                None
            }
        }
    }

    /// Removes the value if `pred` holds for it; returns it.
    pub fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        match guard.find_entry(hash, |(k, _)| k.borrow() == key) {
            Ok(e) if pred(&e.get().1) => Some(e.remove().0.1),
            _ => None,
        }
    }

    /// Removes the value and runs `f` on it while the shard is still locked, so that no
    /// other thread can act on `key` in between.
    pub fn remove_then<R>(&self, key: &K, f: impl FnOnce(Option<V>) -> R) -> R {
        let (hash, shard) = self.locate(key);
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        let removed = guard.find_entry(hash, |(k, _)| k == key).ok().map(|e| e.remove().0.1);
        f(removed)
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        self.remove_then(key, |v| v)
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
            shard.write().unwrap_or_else(|p| p.into_inner()).retain(|(k, v)| f(k, v));
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
        assert!(m.contains_key(&998) && !m.contains_key(&999));
        assert_eq!(m.remove(&998), Some("x"));
        assert_eq!(m.remove(&998), None);
        assert_eq!(m.remove_then(&996, |v| v.map(|v| v.len())), Some(1));
        assert_eq!(m.len(), 498);
    }

    #[test]
    fn insert_if_absent_and_update_in_place() {
        let m = ShardedMap::new();
        for (expected, inserted_now) in [(11, true), (21, false)] {
            let seen = m.with_mut_or_insert(
                7u64,
                || 1,
                |v, inserted| {
                    *v += 10;
                    (*v, inserted)
                },
            );
            assert_eq!(seen, (expected, inserted_now));
        }
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn looks_up_string_keys_by_str() {
        let m = ShardedMap::new();
        for i in 0..200 {
            m.insert(format!("ves-{i}"), i);
        }
        for i in 0..200 {
            assert_eq!(m.with(format!("ves-{i}").as_str(), |v| v.copied()), Some(i));
        }
        assert!(m.with("ves-200", |v| v.is_none()));
        assert_eq!(m.remove_if("ves-5", |v| *v == 5), Some(5));
        assert!(m.remove_if("ves-6", |v| *v == 5).is_none());
        assert_eq!(m.len(), 199);
    }

    /// Threads that insert, update and remove their own keys while reading each other's
    /// leave exactly what each of them left: no entry lost or duplicated by a shard's
    /// table growing or shrinking under another thread's lookups.
    #[test]
    fn concurrent_writers_and_readers_agree() {
        let m = std::sync::Arc::new(ShardedMap::new());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mine = (0..5_000u64).map(|i| t * 1_000_000 + i);
                    for k in mine.clone() {
                        m.insert(k, 0u64);
                        m.with_mut_or_insert(
                            k,
                            || 99,
                            |v, inserted| {
                                assert!(!inserted, "{k} was just inserted");
                                *v += 1;
                            },
                        );
                        // Another thread's key: there or not, never a wrong value.
                        let other = ((t + 1) % 4) * 1_000_000 + k % 5_000;
                        m.with(&other, |v| assert!(v.is_none_or(|v| *v <= 1)));
                    }
                    for k in mine.filter(|k| k % 2 == 1) {
                        assert_eq!(m.remove_if(&k, |v| *v == 1), Some(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panicked");
        }
        assert_eq!(m.len(), 4 * 2_500);
        for t in 0..4u64 {
            for i in 0..5_000u64 {
                assert_eq!(m.contains_key(&(t * 1_000_000 + i)), i % 2 == 0);
            }
        }
    }

    /// The shard and the slot come from one hash: if the shard's bits were constant (or the
    /// same bits the tables take their slots from) the keys would pile into few shards.
    #[test]
    fn keys_spread_over_every_shard() {
        let m = ShardedMap::new();
        let n = SHARDS * 1000;
        for i in 0..n as u64 {
            m.insert(i, ());
        }
        let sizes: Vec<usize> = m.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).collect();
        // 1 000 expected per shard; a fair hash puts each within a few dozen of it.
        assert!(sizes.iter().all(|&len| (700..1300).contains(&len)), "{sizes:?}");
        // Growth rehashed every entry into its right place.
        assert!((0..n as u64).all(|i| m.contains_key(&i)));
    }
}
