//! The sharded table of entries, one per key that is held, waited for, or
//! recently used.
//!
//! Shards are a power of two, chosen by the top bits of the key's hash, each
//! in its own cache line. A shard is a chained hash table: lookups walk the
//! chain lock-free under a `crossbeam-epoch` guard; inserts, sweeps and
//! resizes take the shard's mutex. A lookup may miss an entry while a resize
//! rewires chains, so a miss is confirmed under the mutex before inserting.
//!
//! Reclamation: a sweep (on insert, when a shard has grown past its budget,
//! or on `LockManager::shrink`) kills each idle entry with a CAS of its word
//! from 0 (idle) to DEAD, unlinks it and defers its destruction to the epoch.
//! A dead entry can never be granted (the fast paths only CAS from 0 or from a
//! held state), and the key's new entry is inserted only after the dead one is
//! unlinked, under the same mutex: reclamation cannot let two owners in.
//!
//! Fencing tokens survive reclamation through `token_floor`: every shard
//! remembers the highest token any entry it retired had granted, and new
//! entries continue above it.

use std::hash::BuildHasher;

use crossbeam_epoch::{self as epoch, Guard, Owned, Shared};
use crossbeam_utils::CachePadded;

use crate::sync::{Mutex, Ordering};

use super::word::{DEAD, Entry};

/// Buckets a shard starts with.
const BUCKETS_INITIAL: usize = 16;
/// A shard grows its bucket array when it holds more entries than this many per bucket.
const LOAD_FACTOR_MAX: usize = 2;

const _: () = assert!(BUCKETS_INITIAL.is_power_of_two());

/// Keys are hashed with a per-manager random seed, so that nobody can choose
/// keys that all land in one chain. Loom needs the same buckets every run.
#[cfg(not(loom))]
type KeyHasher = foldhash::fast::RandomState;
#[cfg(loom)]
type KeyHasher = foldhash::fast::FixedState;

pub(crate) struct Table {
    shards: Box<[CachePadded<Shard>]>,
    /// `hash >> shard_shift` is the shard index.
    shard_shift: u32,
    hasher: KeyHasher,
    /// Idle entries a shard may keep before an insert sweeps it.
    idle_max: usize,
}

struct Shard {
    buckets: epoch::Atomic<Buckets>,
    state: Mutex<ShardState>,
}

struct Buckets {
    heads: Box<[epoch::Atomic<Entry>]>,
}

struct ShardState {
    /// Linked entries.
    len: usize,
    /// Sweep on the insert that brings `len` to this.
    sweep_at: usize,
    /// At least every token granted by an entry this shard retired.
    token_floor: u64,
    /// Grants made by retired entries.
    grants_retired: u64,
}

/// Whether `find_or_insert` found the key or inserted it.
pub(crate) enum Found<'g> {
    Existing(&'g Entry),
    Inserted(&'g Entry),
}

impl Buckets {
    fn new(count: usize) -> Self {
        Self { heads: (0..count).map(|_| epoch::Atomic::null()).collect() }
    }

    fn head(&self, hash: u64) -> &epoch::Atomic<Entry> {
        &self.heads[hash as usize & (self.heads.len() - 1)]
    }
}

impl Table {
    /// A table of `shards` shards (a power of two).
    pub(crate) fn new(shards: usize, idle_max: usize) -> Self {
        debug_assert!(shards.is_power_of_two());
        let shards = (0..shards)
            .map(|_| {
                CachePadded::new(Shard {
                    buckets: epoch::Atomic::new(Buckets::new(BUCKETS_INITIAL)),
                    state: Mutex::new(ShardState {
                        len: 0,
                        sweep_at: idle_max.max(1),
                        token_floor: 0,
                        grants_retired: 0,
                    }),
                })
            })
            .collect::<Box<[_]>>();
        let shard_shift = 64 - shards.len().trailing_zeros();
        Self { shards, shard_shift, hasher: KeyHasher::default(), idle_max }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        // `checked_shr` covers the single-shard table, where the shift is 64.
        &self.shards[hash.checked_shr(self.shard_shift).unwrap_or(0) as usize]
    }

    /// The entry for `key`, if the chain shows one. May miss an entry during a
    /// concurrent resize; only a miss under the shard mutex is definitive.
    #[inline]
    pub(crate) fn find<'g>(&self, key: &str, hash: u64, guard: &'g Guard) -> Option<&'g Entry> {
        let buckets = self.shard(hash).buckets.load(Ordering::Acquire, guard);
        // SAFETY: bucket arrays are replaced only under the shard mutex and
        // destroyed through the epoch, after `guard` was pinned at the latest.
        let buckets = unsafe { buckets.deref() };
        Self::walk(buckets.head(hash), key, hash, guard)
    }

    #[inline]
    fn walk<'g>(head: &epoch::Atomic<Entry>, key: &str, hash: u64, guard: &'g Guard) -> Option<&'g Entry> {
        let mut current = head.load(Ordering::Acquire, guard);
        // SAFETY: entries are unlinked under the shard mutex and destroyed
        // through the epoch, so any entry reachable after `guard` was pinned
        // outlives it.
        while let Some(entry) = unsafe { current.as_ref() } {
            if entry.hash == hash && entry.key.as_bytes() == key.as_bytes() {
                return Some(entry);
            }
            current = entry.next.load(Ordering::Acquire, guard);
        }
        None
    }

    /// The entry for `key`, inserting `make(token_floor)` if there is none.
    /// The new entry is linked already granted, so no sweep can take it first.
    pub(crate) fn find_or_insert<'g>(
        &self,
        key: &str,
        hash: u64,
        guard: &'g Guard,
        make: impl FnOnce(u64) -> Entry,
    ) -> Found<'g> {
        let shard = self.shard(hash);
        let mut state = shard.state.lock();
        if state.len + 1 >= state.sweep_at {
            self.sweep(shard, &mut state, guard);
        }
        // SAFETY: as in `find`; under the mutex the array is the current one.
        let buckets = unsafe { shard.buckets.load(Ordering::Acquire, guard).deref() };
        if let Some(entry) = Self::walk(buckets.head(hash), key, hash, guard) {
            return Found::Existing(entry);
        }
        let entry = Owned::new(make(state.token_floor));
        let head = buckets.head(hash);
        entry.next.store(head.load(Ordering::Relaxed, guard), Ordering::Relaxed);
        let entry = entry.into_shared(guard);
        head.store(entry, Ordering::Release);
        state.len += 1;
        if state.len > buckets.heads.len() * LOAD_FACTOR_MAX {
            Self::grow(shard, buckets, guard);
        }
        // SAFETY: just linked; unlinking needs the mutex we hold, and
        // destruction the epoch `guard` pins.
        Found::Inserted(unsafe { entry.deref() })
    }

    /// The token floor of `hash`'s shard: above every token its retired entries
    /// granted. Read under the mutex, with a definitive lookup of `key`.
    pub(crate) fn absent_floor(&self, key: &str, hash: u64) -> Option<u64> {
        let shard = self.shard(hash);
        let state = shard.state.lock();
        let guard = epoch::pin();
        // SAFETY: as in `find`.
        let buckets = unsafe { shard.buckets.load(Ordering::Acquire, &guard).deref() };
        Self::walk(buckets.head(hash), key, hash, &guard).is_none().then_some(state.token_floor)
    }

    /// Unlinks and retires every idle entry of `shard`. Caller holds its mutex.
    fn sweep(&self, shard: &Shard, state: &mut ShardState, guard: &Guard) {
        // SAFETY: as in `find`; under the mutex the array is the current one.
        let buckets = unsafe { shard.buckets.load(Ordering::Acquire, guard).deref() };
        for head in buckets.heads.iter() {
            let mut link = head;
            let mut current = link.load(Ordering::Acquire, guard);
            // SAFETY: linked entries are alive while we hold the mutex.
            while let Some(entry) = unsafe { current.as_ref() } {
                let next = entry.next.load(Ordering::Acquire, guard);
                // Acquire: the last release's token is final and visible.
                if entry.word.compare_exchange(0, DEAD, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    link.store(next, Ordering::Release);
                    let token = entry.token.load(Ordering::Relaxed);
                    state.token_floor = state.token_floor.max(token);
                    state.grants_retired += token - entry.token_initial;
                    state.len -= 1;
                    // SAFETY: unlinked above, so no new reference can be made;
                    // readers pinned before this still see valid memory until
                    // the epoch passes.
                    unsafe { guard.defer_destroy(current) };
                } else {
                    link = &entry.next;
                }
                current = next;
            }
        }
        state.sweep_at = state.len + self.idle_max.max(state.len).max(1);
    }

    /// Doubles the bucket array, rewiring the chains. Concurrent readers may
    /// miss entries meanwhile, never see freed memory or loop: moved entries
    /// only point at moved entries, which form acyclic chains.
    fn grow(shard: &Shard, old: &Buckets, guard: &Guard) {
        let new = Buckets::new(old.heads.len() * 2);
        for head in old.heads.iter() {
            let mut current = head.load(Ordering::Acquire, guard);
            // SAFETY: linked entries are alive while we hold the mutex.
            while let Some(entry) = unsafe { current.as_ref() } {
                let next = entry.next.load(Ordering::Acquire, guard);
                let new_head = new.head(entry.hash);
                entry.next.store(new_head.load(Ordering::Relaxed, guard), Ordering::Release);
                new_head.store(current, Ordering::Release);
                current = next;
            }
        }
        let old = shard.buckets.swap(Owned::new(new), Ordering::AcqRel, guard);
        // SAFETY: the old array is no longer reachable from the shard; readers
        // pinned before the swap keep it alive through the epoch. Dropping a
        // bucket array does not drop the entries it points to.
        unsafe { guard.defer_destroy(old) };
    }

    /// Retires every idle entry now, in every shard.
    pub(crate) fn shrink(&self) {
        let guard = epoch::pin();
        for shard in self.shards.iter() {
            let mut state = shard.state.lock();
            self.sweep(shard, &mut state, &guard);
        }
        guard.flush();
    }

    /// Calls `f` for every linked entry, shard by shard under each mutex, and
    /// returns (entries, grants made by retired entries).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Entry)) -> (u64, u64) {
        let guard = epoch::pin();
        let (mut entries, mut retired) = (0, 0);
        for shard in self.shards.iter() {
            let state = shard.state.lock();
            entries += state.len as u64;
            retired += state.grants_retired;
            // SAFETY: as in `find`.
            let buckets = unsafe { shard.buckets.load(Ordering::Acquire, &guard).deref() };
            for head in buckets.heads.iter() {
                let mut current = head.load(Ordering::Acquire, &guard);
                // SAFETY: linked entries are alive while we hold the mutex.
                while let Some(entry) = unsafe { current.as_ref() } {
                    f(entry);
                    current = entry.next.load(Ordering::Acquire, &guard);
                }
            }
        }
        (entries, retired)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no guard, lookup or grant can reach the table
        // (grants borrow the manager that owns it), so nothing is concurrent.
        let guard = unsafe { epoch::unprotected() };
        for shard in self.shards.iter() {
            let buckets = shard.buckets.swap(Shared::null(), Ordering::Relaxed, guard);
            // SAFETY: no concurrent access (above); every bucket array and
            // entry is owned by exactly one link, so each is freed once.
            unsafe {
                let Some(array) = buckets.as_ref() else { continue };
                for head in array.heads.iter() {
                    let mut current = head.load(Ordering::Relaxed, guard);
                    while !current.is_null() {
                        let next = current.deref().next.load(Ordering::Relaxed, guard);
                        drop(current.into_owned());
                        current = next;
                    }
                }
                drop(buckets.into_owned());
            }
        }
    }
}
